"""The Dockerfile's promises that no Docker engine is needed to check (hadolint runs in `make lint`).

Dependencies before code in each image, a numeric non-root user owning the data and cache
directories, health checks, and a .dockerignore that keeps secrets and data out but lets in
everything the Dockerfile copies.
"""

from __future__ import annotations

import fnmatch
import re

import pytest

from tests.helpers import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
IGNORED = [
    line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
]


def instructions() -> list[tuple[str, str, str]]:
    """(stage, instruction, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out, stage = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stage = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
        out.append((stage, word.upper(), rest))
    return out


def stage(name: str) -> list[tuple[str, str]]:
    """Instructions of one stage, its FROM base's included (one level, as the Dockerfile uses it)."""
    own = [(i, a) for s, i, a in instructions() if s == name]
    base = own[0][1].split()[0]
    return [(i, a) for s, i, a in instructions() if s == base and i != "FROM"] + own[1:]


@pytest.mark.parametrize("target", ["api", "worker"])
def test_dependencies_are_installed_before_any_code_is_copied(target: str) -> None:
    steps = stage(target)
    deps = next(n for n, (i, a) in enumerate(steps) if i == "RUN" and "--requirement" in a and "--constraint" in a)
    code = next(n for n, (i, a) in enumerate(steps) if i == "RUN" and "from=wheel" in a)
    assert deps < code
    copies = [a for i, a in steps[:deps] if i == "COPY"]
    assert all(not re.search(r"\b(app|worker|contract|diffusion_client)\b", c) for c in copies), copies
    assert f"extra_requirements.py {target}" in steps[deps][1]


@pytest.mark.parametrize("target", ["api", "worker"])
def test_a_numeric_non_root_user_owns_the_data_and_caches(target: str) -> None:
    steps = stage(target)
    (user,) = [a for i, a in steps if i == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit() and uid != "0"
    made = next(a for i, a in steps if i == "RUN" and "install -d" in a)
    assert f"-o {uid} -g {uid}" in made
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in steps if i == "ENV")))
    owned = set(made.split(f"-g {uid}")[1].split())
    assert env["DIFFUSION_STORAGE_URL"] in owned
    if target == "worker":
        assert {env["HF_HOME"], env["TORCHINDUCTOR_CACHE_DIR"], env["XDG_CACHE_HOME"]} <= owned
        assert env["TRITON_CACHE_DIR"].startswith(env["TORCHINDUCTOR_CACHE_DIR"] + "/")


@pytest.mark.parametrize("target", ["api", "worker"])
def test_each_image_has_its_health_check(target: str) -> None:
    (check,) = [a for i, a in stage(target) if i == "HEALTHCHECK"]
    assert check.endswith(f'CMD ["python", "/srv/deploy/healthcheck.py", "{target}"]')
    assert any(i == "COPY" and "deploy/healthcheck.py" in a for i, a in stage(target))


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves `path` (or a folder above it) out of the build context (last match wins)."""
    verdict = False
    parts = path.split("/")
    for pattern in IGNORED:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pattern) or fnmatch.fnmatch(prefix, pattern.removeprefix("**/")):
                verdict = not negate
    return verdict


def test_dockerignore_keeps_secrets_data_and_tests_out() -> None:
    for path in (".env", "deploy/.env", "training/data/x.png", "var/images/a.png", "tests/conftest.py", "docs/a.md"):
        assert ignored(path), path


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    sources = []
    for _, instruction, args in instructions():
        if instruction == "COPY" and "--from" not in args:
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source), f"{source} is copied but .dockerignore leaves it out"
