"""Download into .whl/ the wheels the GPU check needs that the GPU machine's image lacks, then prove the set complete.

The lent GPU machines run Python 3.12 with torch 2.11 (CUDA 13.0), transformers 5.17, huggingface-hub 1.33,
peft, accelerate, numpy, pillow, safetensors, regex, requests, filelock, httpx, pytest and
prometheus-client, but not diffusers, pydantic, pydantic-settings or redis, and they reach no package
index. This script fetches exactly what is missing, at the versions constraints.txt pins, for CPython
3.12 on manylinux x86_64; then it checks every requirement of every carried wheel (markers evaluated for
that interpreter) against the carried set and the image's packages, and installs the set into a
scratch folder the way the machine will (no index, no dependencies), which also checks every wheel's
tags against Python 3.12. `.whl/` is git-ignored; the device call carries it (docs/gpu.md).

    python scripts/gpu_wheels.py            # ~10 MB, a few seconds
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".whl"
CARRIED = [
    "diffusers",  # the worker's pipelines
    "pydantic",  # contract/ and the settings
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",  # pydantic needs >= 4.16; the image's own version is not known here
    "pydantic-settings",
    "python-dotenv",
    "importlib-metadata",  # diffusers imports it; not on the image
    "lazy-importer",  # importlib-metadata 10 needs it
    "zipp",  # importlib-metadata needs >= 3.20; the image's own version is not known here
    "redis",  # only for tests/gpu (tests/conftest.py imports it); the check itself never talks to Redis
]
# What the image has, from the device notes (KINDS.md); versions where a session read them there.
IMAGE = {
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "huggingface-hub": "1.33.0",
    "safetensors": "0.8.0",
    "numpy": "2.5.2",
    "accelerate": "1.15.0",
    "tokenizers": "0.23.2",
    "peft": None,
    "pillow": None,
    "regex": None,
    "requests": None,
    "filelock": None,
    "httpx": None,
    "prometheus-client": None,
    "packaging": None,
    "pyyaml": None,
    "psutil": None,
    "tqdm": None,
    "pytest": None,
    "pytest-timeout": None,
}
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:"] + [
    f"--platform={p}"
    for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
]
ENVIRONMENT = default_environment() | {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "extra": "",
}


def pinned() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def download() -> None:
    """Empty .whl/ and fetch every carried wheel at its pinned version."""
    pins = pinned()
    WHEELS.mkdir(exist_ok=True)
    for old in WHEELS.glob("*.whl"):
        old.unlink()
    specs = [f"{name}=={pins[canonicalize_name(name)]}" for name in CARRIED]
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *TARGET, "-d", str(WHEELS)]
    subprocess.run([*pip, *specs], check=True)


def requirements(wheel: Path) -> list[Requirement]:
    """The wheel's Requires-Dist that apply on the machine (markers evaluated, extras left out)."""
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(archive.read(meta).decode())
    found = [Requirement(line) for line in headers.get_all("Requires-Dist") or []]
    return [r for r in found if r.marker is None or r.marker.evaluate(ENVIRONMENT)]


def check() -> list[str]:
    """Problems with the set in .whl/: a requirement neither carried nor on the image, a version that does
    not satisfy it, two versions of one package."""
    carried: dict[str, Version] = {}
    problems = []
    wheels = sorted(WHEELS.glob("*.whl"))
    for wheel in wheels:
        name, version, _, _ = parse_wheel_filename(wheel.name)
        if name in carried:
            problems.append(f"two versions of {name} in .whl/")
        carried[name] = version
    for wheel in wheels:
        for req in requirements(wheel):
            name = canonicalize_name(req.name)
            have = carried.get(name) or (Version(IMAGE[name]) if IMAGE.get(name) else None)
            if name not in carried and name not in IMAGE:
                problems.append(f"{wheel.name} needs {req}: neither carried nor on the image")
            elif have is not None and req.specifier and not req.specifier.contains(have, prereleases=True):
                problems.append(f"{wheel.name} needs {req}: there is {have}")
    return problems


def install_like_the_machine(folder: Path) -> None:
    """pip install as gpu_check.sh does it, for Python 3.12 (wheel tags are checked against it)."""
    wheels = [str(w) for w in sorted(WHEELS.glob("*.whl"))]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    subprocess.run([*pip, "--no-cache-dir", "--upgrade", "--target", str(folder), *TARGET, *wheels], check=True)


def main() -> int:
    """Download, check, trial-install; non-zero exit when the set is incomplete."""
    download()
    problems = check()
    with tempfile.TemporaryDirectory() as folder:
        install_like_the_machine(Path(folder))
    size = sum(w.stat().st_size for w in WHEELS.glob("*.whl"))
    for wheel in sorted(WHEELS.glob("*.whl")):
        print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
    print(f"{size / 2**20:7.2f} MiB in {len(list(WHEELS.glob('*.whl')))} wheels in {WHEELS}")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
