"""Each extra installs what its package imports: every third-party import is a declared dependency.

Imports are read with `ast` from every module of every packaged folder (function-level ones too,
not those under `if TYPE_CHECKING:`), and mapped to the distribution that installs the module from
the installed distributions' file lists (PIL -> pillow, opentelemetry.sdk -> opentelemetry-sdk).
A new import fails here until its distribution is installed and declared in the right extra.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
# Which extra installs each packaged folder. contract/ is imported by both processes: its extra
# is part of api and worker, which the flattening below checks rather than trusts.
EXTRA_OF = {"app": "api", "worker": "worker", "contract": "contract", "diffusion_client": "client"}
# Folders of this repository that are not third-party even though they are importable.
FIRST_PARTY = {"app", "worker", "contract", "diffusion_client", "training", "tests", "benchmarks", "scripts"}
# Declared but never imported: each needs a reason, or it should not be installed.
RUNTIME_ONLY = {
    "accelerate": "diffusers loads weights through it when present (low_cpu_mem_usage)",
    "safetensors": "the weight format diffusers reads (imported by diffusers, not by us)",
}


def _script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("extra_requirements", ROOT / "scripts" / "extra_requirements.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


EXTRA_REQUIREMENTS = _script()


def declared(extra: str) -> set[str]:
    """Distribution names an install of `.[extra]` asks for, the project's own extras expanded."""
    return {canonicalize_name(Requirement(r).name) for r in EXTRA_REQUIREMENTS.requirements(extra)}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of import nodes inside `if TYPE_CHECKING:` blocks (never executed)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports_of(folder: str) -> dict[str, list[str]]:
    """Third-party module names imported under `folder` -> where (file:line), candidates most specific first."""
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from opentelemetry import trace` may name a submodule of a namespace package.
                names = [f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*"] or [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
                    continue
                found[name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@cache
def module_owners() -> dict[str, frozenset[str]]:
    """Dotted module (and every parent package) -> distributions whose files install it."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if len(parts) == 0 or parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info", ".data")):
                continue
            if file.suffix not in (".py", ".so", ".pyd", ".pyi"):
                continue
            stem = parts[-1].split(".")[0]
            dotted = [*parts[:-1]] + ([] if stem == "__init__" else [stem])
            for i in range(1, len(dotted) + 1):
                owners[".".join(dotted[:i])].add(name)
    return {k: frozenset(v) for k, v in owners.items()}


def owners_of(module: str) -> frozenset[str]:
    """Distributions providing `module`: the most specific dotted prefix that any distribution installs."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        found = module_owners().get(".".join(parts[:i]))
        if found:
            return found
    return frozenset()


def missing_from(folder: str, extra: str) -> list[str]:
    """Imports under `folder` that `.[extra]` would not install."""
    have = declared(extra)
    problems = []
    for module, where in sorted(imports_of(folder).items()):
        owners = owners_of(module)
        if not owners:
            problems.append(f"{module} ({where[0]}): no installed distribution provides it")
        elif not owners & have:
            problems.append(f"{module} ({where[0]}): provided by {sorted(owners)}, not in the {extra!r} extra")
    return problems


def test_every_packaged_folder_has_an_extra() -> None:
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == set(EXTRA_OF)


@pytest.mark.parametrize(("folder", "extra"), sorted(EXTRA_OF.items()))
def test_every_import_is_declared_in_the_extra(folder: str, extra: str) -> None:
    assert not missing_from(folder, extra), "\n".join(missing_from(folder, extra))


@pytest.mark.parametrize("process", ["api", "worker"])
def test_contract_imports_are_installed_by_both_processes(process: str) -> None:
    assert not missing_from("contract", process), "\n".join(missing_from("contract", process))


def test_the_client_pulls_no_redis_rq_or_torch() -> None:
    """Closure of the client extra over the installed distributions' own requirements."""
    todo, seen = [*declared("client")], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in importlib.metadata.requires(name) or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    assert not seen & {"redis", "rq", "torch", "fastapi", "pydantic-settings"}, sorted(seen)


def test_every_declared_dependency_is_imported_or_explained() -> None:
    imported = {owner for folder in EXTRA_OF for module in imports_of(folder) for owner in owners_of(module)}
    for extra in {*EXTRA_OF.values()}:
        unused = declared(extra) - imported - set(RUNTIME_ONLY)
        assert not unused, f"{extra}: declared, never imported and not in RUNTIME_ONLY: {sorted(unused)}"


def test_the_scan_sees_function_level_and_namespace_imports(tmp_path: Path) -> None:
    """The mapping the checks rely on: PIL is pillow's, a submodule import resolves to its owner."""
    assert "pillow" in owners_of("PIL.Image")
    assert "pydantic-settings" in owners_of("pydantic_settings")
    assert "huggingface-hub" in owners_of("huggingface_hub")
    worker_imports = imports_of("worker")
    assert "torch" in worker_imports  # imported inside functions too
    assert owners_of("no_such_module_anywhere") == frozenset()


def test_extra_requirements_expands_the_projects_own_extras() -> None:
    api = EXTRA_REQUIREMENTS.requirements("api")
    assert not any(canonicalize_name(Requirement(r).name) == PROJECT for r in api)
    assert set(EXTRA_REQUIREMENTS.requirements("contract")) <= set(api)
    with pytest.raises(SystemExit):
        EXTRA_REQUIREMENTS.requirements("no-such-extra")


CONSTRAINTS = ROOT / "constraints.txt"


def pins() -> dict[str, str]:
    """constraints.txt as {distribution: version}."""
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line!r}"
            out[canonicalize_name(name)] = version
    return out


def test_every_dependency_is_pinned_and_the_pin_satisfies_it() -> None:
    pinned = pins()
    for extra in PYPROJECT["project"]["optional-dependencies"]:
        for raw in EXTRA_REQUIREMENTS.requirements(extra):
            requirement = Requirement(raw)
            name = canonicalize_name(requirement.name)
            assert name in pinned, (
                f"{name} ({extra}) has no pin in constraints.txt: install it, then `make constraints`"
            )
            assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name], raw)


def test_torch_has_one_version_everywhere() -> None:
    """Only constraints.txt names a torch version; the Makefile and the Dockerfile read it from there."""
    assert re.fullmatch(r"\d+\.\d+\.\d+", pins()["torch"]), "pin torch without a local label (+cpu)"
    for path in ("Makefile", "Dockerfile", "docker-compose.yml", ".ci/run", "scripts/check_extras.sh"):
        text = (ROOT / path).read_text()
        pinned = re.search(r"(?i)torch[\w-]*\s*(==|=)\s*[\"']?\d+\.\d+", text)
        assert not pinned, f"{path} pins torch itself ({pinned and pinned[0]}); use constraints.txt"
