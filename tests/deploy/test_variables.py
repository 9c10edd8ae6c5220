"""Every DIFFUSION_* variable the deployment files set is one the code reads.

The settings ignore unknown variables, so a renamed setting (the code moves on, a manifest keeps the
old name) would otherwise fail silently, with the default in its place.
"""

from __future__ import annotations

import re

import yaml

from tests.deploy.test_compose import Loader
from tests.deploy.test_k8s import rendered
from tests.deploy.tools import DEPLOY, setting_variables
from tests.helpers import ROOT


def ours(names: set[str]) -> set[str]:
    """The variables meant for our processes."""
    return {n for n in names if n.startswith("DIFFUSION_") or n == "REDIS_URL"}


def set_by_deployment_files() -> dict[str, set[str]]:
    """Variables each deployment file sets (or, for the health check, reads)."""
    found: dict[str, set[str]] = {}
    dockerfile = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found["Dockerfile"] = {
        name for line in dockerfile.splitlines() if line.startswith("ENV ") for name in re.findall(r"(\w+)=", line)
    }
    for compose in ("docker-compose.yml", "docker-compose.cpu.yml"):
        services = yaml.load((ROOT / compose).read_text(), Loader=Loader)["services"]
        found[compose] = {name for service in services.values() for name in service.get("environment", {})}
    k8s: set[str] = set()
    for doc in rendered():
        if doc["kind"] == "ConfigMap":
            k8s |= set(doc["data"])
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            k8s |= {e["name"] for e in container.get("env", [])}
    found["deploy/k8s"] = k8s
    found["scripts/check_extras.sh"] = set(re.findall(r"\b([A-Z_]+)=", (ROOT / "scripts/check_extras.sh").read_text()))
    found["deploy/healthcheck.py"] = set(
        re.findall(r"['\"](DIFFUSION_\w+)['\"]", (DEPLOY / "healthcheck.py").read_text())
    )
    return found


def client_variables() -> set[str]:
    """Variables the `diffusion` command reads (its own, not the servers')."""
    return {
        v for path in (ROOT / "diffusion_client").rglob("*.py") for v in re.findall(r"DIFFUSION_\w+", path.read_text())
    }


# Set by the deployment files ahead of the code that reads them, which lands from another branch:
# variable -> what will read it. The test below fails once the code reads it: then delete the entry.
PENDING: dict[str, str] = {}


def test_every_variable_set_for_our_processes_is_a_setting() -> None:
    known = setting_variables() | client_variables()
    assert not set(PENDING) & known, f"now read by a setting, drop from PENDING: {set(PENDING) & known}"
    known |= set(PENDING)
    unknown = {where: sorted(ours(names) - known) for where, names in set_by_deployment_files().items()}
    assert not any(unknown.values()), f"variables no setting reads (renamed?): {unknown}"


def test_the_check_sees_the_variables() -> None:
    found = set_by_deployment_files()
    assert {"REDIS_URL", "DIFFUSION_DEFAULT_MODEL"} <= ours(found["docker-compose.yml"])
    assert "DIFFUSION_METRICS_PORT" in found["Dockerfile"] and "DIFFUSION_JOB_TIMEOUT_SECONDS" in found["deploy/k8s"]
    assert "DIFFUSION_STORAGE_X" not in setting_variables() and "REDIS_URL" in setting_variables()
