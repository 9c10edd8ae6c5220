"""The Grafana dashboard and the alert rules query only metrics a real API and worker export, in valid PromQL.

The stack (tests/conftest.py) runs the real API and a real worker on a private redis-server; one
job runs first so histograms and counters have samples. Names are compared with what both
processes export on their metrics endpoints (families declared without samples count: GPU memory
has none on a CPU worker, webhook deliveries none without a webhook).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.deploy.tools import (
    DEPLOY,
    PROMETHEUS_SERIES,
    alert_exprs,
    check_parse,
    dashboard_exprs,
    exported_names,
    grafana_to_promql,
    load_yaml,
    metric_names,
)
from tests.helpers import ROOT, wait_for

STACK_MODELS = ("tiny-sd",)
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "diffusion.json"


def dashboard() -> dict[str, Any]:
    """The committed dashboard JSON."""
    return json.loads(DASHBOARD_FILE.read_text())


@pytest.fixture(scope="module")
def exported(stack: Stack) -> set[str]:
    """Series names the API and the worker export after one finished job."""
    with stack.client() as client:
        job = client.post("/v1/generations", json={"prompt": "a red circle", "num_inference_steps": 2}).json()
        wait_for(lambda: client.get(f"/v1/generations/{job['id']}").json()["status"] == "succeeded", 60, "the job")
        api = client.get("/metrics").text
    worker = httpx.get(f"http://127.0.0.1:{stack.workers['tiny-sd'].port}/metrics", timeout=10).text
    assert "diffusion_denoise_step_duration_seconds_bucket{" in worker  # the job was observed
    return exported_names(api) | exported_names(worker)


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (model, le) (rate(diffusion_a_bucket{model=~"$model", le!="x"}[5m])))'
        ' / ignoring (le) group_left sum(b_total offset 1h) > 2 * c and on (job) absent(up{job="d"} == 1) or 1e3'
    )
    assert metric_names(expr) == {"diffusion_a_bucket", "b_total", "c", "up"}
    assert metric_names(grafana_to_promql('sum(x{m=~"$model"}[$__rate_interval])')) == {"x"}


def test_every_dashboard_and_alert_metric_is_exported(exported: set[str]) -> None:
    queries = {**dashboard_exprs(dashboard()), **{f"alert {k}": v for k, v in alert_exprs().items()}}
    missing = {
        where: sorted(metric_names(expr) - exported - PROMETHEUS_SERIES)
        for where, expr in queries.items()
        if metric_names(expr) - exported - PROMETHEUS_SERIES
    }
    assert not missing, f"queries naming metrics nobody exports: {json.dumps(missing, indent=1)}"
    assert all(metric_names(expr) for expr in queries.values()), "an expression selects no metric"


def test_the_dashboard_shows_every_exported_metric(exported: set[str]) -> None:
    """Each family either has a panel or is named here with why not."""
    used = {name for expr in dashboard_exprs(dashboard()).values() for name in metric_names(expr)}
    families = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in exported}
    not_shown: dict[str, str] = {}  # family -> why it has no panel
    left = {
        f
        for f in families
        if f.startswith("diffusion_") and not any(u.startswith(f) for u in used) and f not in not_shown
    }
    assert not left, f"exported but on no panel: {sorted(left)}"


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    exprs = {where: grafana_to_promql(expr) for where, expr in dashboard_exprs(dashboard()).items()}
    assert len(exprs) > 20
    check_parse(exprs, tmp_path)


def test_the_parse_check_catches_a_broken_expression(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="promtool check rules failed"):
        check_parse({"broken": "sum(rate(diffusion_x_total[5m])"}, tmp_path)


def test_the_committed_dashboard_is_what_the_script_builds() -> None:
    built = subprocess.run(
        [sys.executable, "-c", "import json, build_dashboard as b; print(json.dumps(b.build(), indent=2))"],
        cwd=ROOT / "scripts",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(built) == dashboard(), "run `make dashboard` and commit deploy/grafana/dashboards/diffusion.json"


def test_panels_are_laid_out_without_overlap_and_use_the_datasource_variable() -> None:
    board = dashboard()
    taken: set[tuple[int, int]] = set()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"


def test_compose_provisions_the_datasource_and_opens_on_the_dashboard() -> None:
    """What `docker compose --profile monitoring up` mounts is what the provisioning files point at."""
    compose = load_yaml(ROOT / "docker-compose.yml")
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    home_dir, home_file = os.path.split(home)
    assert (ROOT / mounts[home_dir] / home_file).resolve() == DASHBOARD_FILE
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    providers = load_yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]
    assert [p["options"]["path"] for p in providers] == [home_dir]
    sources = load_yaml(provisioning / "datasources" / "datasources.yml")["datasources"]
    prometheus = next(s for s in sources if s["type"] == "prometheus")
    assert prometheus["isDefault"] and prometheus["url"] == "http://prometheus:9090"
    scrape = load_yaml(DEPLOY / "prometheus.yml")["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"  # no login, no clicks


def test_healthchecks_against_the_real_processes(stack: Stack) -> None:
    """deploy/healthcheck.py: healthy on the API and a warm worker; not on an endpoint without the warm sample."""

    def check(kind: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(DEPLOY / "healthcheck.py"), kind],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    worker_port = str(stack.workers["tiny-sd"].port)
    assert check("api", DIFFUSION_PORT=str(stack.api.port)).returncode == 0
    assert check("worker", DIFFUSION_METRICS_PORT=worker_port).returncode == 0
    # The API's /metrics answers but carries no diffusion_model_info sample: not a warm worker.
    cold = check("worker", DIFFUSION_METRICS_PORT=str(stack.api.port))
    assert cold.returncode == 1 and "still loading" in cold.stderr, cold.stderr
    assert check("api", DIFFUSION_PORT="1").returncode == 1  # nothing listens there
    assert check("worker", DIFFUSION_METRICS_PORT="0").returncode == 1
