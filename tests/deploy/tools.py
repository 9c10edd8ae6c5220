"""Helpers of the deployment checks: the external tools they run, PromQL names, exported metric names."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
# Series Prometheus itself writes for every target; our processes do not export them.
PROMETHEUS_SERIES = {"up"}


def tool(name: str) -> str:
    """Path of an external tool: next to this Python (`make tools` puts promtool and amtool there), or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: run `make tools` (scripts/install_tools.sh)")
    return found


def run(*args: str, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure the assertion shows its output."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
_KEYWORDS |= {"inf", "nan", "start", "end"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, aggregations, labels or keywords)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match[0].lower() in _KEYWORDS:
            continue
        names.add(match[0])
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by values Prometheus accepts."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def check_parse(exprs: dict[str, str], tmp_path: Path) -> None:
    """Every expression parses: promtool checks them as the recording rules of a temporary rules file."""
    rules = [{"record": f"check:{i}", "expr": expr} for i, expr in enumerate(exprs.values())]
    path = tmp_path / "exprs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]}))
    done = run(tool("promtool"), "check", "rules", str(path), check=False)
    if done.returncode != 0:
        where = "\n".join(f"  {i}: {name}: {expr}" for i, (name, expr) in enumerate(exprs.items()))
        raise AssertionError(f"promtool check rules failed:\n{done.stdout}{done.stderr}\nexpressions:\n{where}")


def exported_names(exposition: str) -> set[str]:
    """Series names a Prometheus text exposition offers, including declared families with no sample yet."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type in ("histogram", "summary"):
            names |= {f"{family.name}_{suffix}" for suffix in ("sum", "count")}
            if family.type == "histogram":
                names.add(f"{family.name}_bucket")
        else:
            names.add(family.name)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression of a dashboard: panel targets and query variables, keyed by where they are."""
    out = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out[f"panel {panel['id']} {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((?:(.+),\s*)?(\w+)\)", query)
            assert match, f"variable {variable['name']}: unsupported query {query!r}"
            if match[1]:
                out[f"variable {variable['name']}"] = match[1]
    return out


def alert_exprs() -> dict[str, str]:
    """Every alert and recording rule expression of deploy/alerts.yml, keyed by rule name."""
    rules = load_yaml(DEPLOY / "alerts.yml")
    return {r.get("alert") or r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def _first(*modules: str) -> ModuleType:
    """The first of `modules` that exists (app/ and worker/ rename modules now and then)."""
    for name in modules:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise AssertionError(f"none of {modules} exists")


def settings_classes() -> dict[str, type]:
    """The API's and the worker's settings classes, wherever the code keeps them."""
    return {
        "api": _first("app.settings", "app.config").ApiSettings,
        "worker": _first("worker.settings", "worker.config").WorkerSettings,
    }


def setting_default(process: str, field: str) -> Any:
    """Default of one setting of the API (`api`) or a worker (`worker`)."""
    return settings_classes()[process].model_fields[field].default


def setting_variables() -> set[str]:
    """Every environment variable the API or a worker reads (DIFFUSION_<FIELD>, and REDIS_URL)."""
    from contract.settings import ENV_PREFIX

    names = {"REDIS_URL"}
    for cls in settings_classes().values():
        names |= {f"{ENV_PREFIX}{field.upper()}" for field in cls.model_fields}
    return names


def code_metric_names() -> set[str]:
    """Every series name the API and the workers define: counters with _total, histograms with their suffixes."""
    from tests.unit.test_docs import all_metrics

    names = set()
    for name, kind in all_metrics().items():
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return names
