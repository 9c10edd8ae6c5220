"""Print the requirements of one pyproject extra, one a line, with the project's own extras expanded.

The Dockerfile installs an image's dependencies from this list before it copies the code, so an
edit to the code does not reinstall torch:

    python scripts/extra_requirements.py api > requirements.txt
    pip install -r requirements.txt -c constraints.txt

Needs only the standard library (Python 3.11+): it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `diffusion-service[contract]` inside an extra: the project's own extra, expanded in place.
SELF = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*\[(?P<extras>[^\]]+)\]\s*$")


def normalize(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extra: str, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The base dependencies plus those of `extra`, self-references expanded, first occurrence kept."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})
    own = normalize(project["name"])
    out: dict[str, None] = dict.fromkeys(project.get("dependencies", []))

    def add(name: str, seen: tuple[str, ...]) -> None:
        if name not in extras:
            raise SystemExit(f"no extra {name!r} in {pyproject} (have: {', '.join(sorted(extras))})")
        if name in seen:
            raise SystemExit(f"extra {name!r} includes itself: {' -> '.join((*seen, name))}")
        for requirement in extras[name]:
            match = SELF.match(requirement)
            if match and normalize(match["name"]) == own:
                for sub in match["extras"].split(","):
                    add(sub.strip(), (*seen, name))
            else:
                out.setdefault(requirement)

    add(extra, ())
    return list(out)


def main() -> None:
    """Command line: `extra_requirements.py EXTRA [EXTRA...]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="+", help="extra names, e.g. api")
    args = parser.parse_args()
    lines: dict[str, None] = {}
    for extra in args.extras:
        lines.update(dict.fromkeys(requirements(extra)))
    sys.stdout.write("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()
