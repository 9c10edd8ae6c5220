"""Prometheus, alert rules, Alertmanager and Redis configs, checked by promtool, amtool and a real redis-server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from redis import Redis
from redis.exceptions import OutOfMemoryError

from tests.deploy.tools import DEPLOY, load_yaml, run, tool
from tests.helpers import ROOT, free_port, wait_for

ALERTS = load_yaml(DEPLOY / "alerts.yml")
RULES = [rule for group in ALERTS["groups"] for rule in group["rules"]]


def test_alert_rules_are_valid() -> None:
    run(tool("promtool"), "check", "rules", str(DEPLOY / "alerts.yml"))


def test_alert_rule_unit_tests_pass() -> None:
    run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=DEPLOY)


def test_the_unit_tests_fail_when_an_alert_breaks(tmp_path: Path) -> None:
    """Halving the failure threshold's sensitivity must break its tests: they check the rule, not nothing."""
    broken = (DEPLOY / "alerts.yml").read_text().replace("[10m])) > 0.05", "[10m])) > 0.5")
    assert broken != (DEPLOY / "alerts.yml").read_text()
    (tmp_path / "alerts.yml").write_text(broken)
    shutil.copy(DEPLOY / "alerts.test.yml", tmp_path)
    done = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=tmp_path, check=False)
    assert done.returncode != 0 and "DiffusionJobFailures" in done.stdout + done.stderr


def test_every_alert_has_a_firing_test_and_a_runbook_entry() -> None:
    tests = load_yaml(DEPLOY / "alerts.test.yml")["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    readme = (DEPLOY / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for rule in RULES:
        name = rule["alert"]
        assert name in fired, f"{name}: no test case where it fires"
        assert name in quiet, f"{name}: no test case where it must stay quiet"
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        page, anchor = rule["annotations"]["runbook"].split("#")
        assert page == "deploy/README.md" and anchor in anchors, f"{name}: no section #{anchor} in deploy/README.md"


def test_prometheus_config_is_valid() -> None:
    run(tool("promtool"), "check", "config", str(DEPLOY / "prometheus.yml"))


def test_kubernetes_prometheus_config_is_valid(tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery: check the rest with a static target instead."""
    config = load_yaml(DEPLOY / "prometheus-k8s.yml")
    for job in config["scrape_configs"]:
        (sd,) = job.pop("kubernetes_sd_configs")
        assert sd["role"] == "pod" and sd["namespaces"]["names"] == ["diffusion"], job["job_name"]
        job["static_configs"] = [{"targets": ["pod:9101"]}]
    assert [j["job_name"] for j in config["scrape_configs"]] == ["diffusion-api", "diffusion-worker"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(DEPLOY / "alerts.yml", tmp_path)
    run(tool("promtool"), "check", "config", str(tmp_path / "prometheus.yml"))


def test_alerts_select_the_job_names_the_scrape_configs_define() -> None:
    jobs = {j["job_name"] for j in load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]}
    k8s = {j["job_name"] for j in load_yaml(DEPLOY / "prometheus-k8s.yml")["scrape_configs"]}
    named = {job for rule in RULES for job in re.findall(r"diffusion-\w+", rule["expr"])}
    assert named and named <= jobs and named <= k8s


def test_alertmanager_config_is_valid_and_routes_every_severity() -> None:
    run(tool("amtool"), "check-config", str(DEPLOY / "alertmanager.yml"))
    config = load_yaml(DEPLOY / "alertmanager.yml")
    receivers = {r["name"] for r in config["receivers"]}
    routes = {m: r["receiver"] for r in config["route"]["routes"] for m in r["matchers"]}
    assert routes['severity="page"'] in receivers and config["route"]["receiver"] in receivers
    assert routes['severity="page"'] != config["route"]["receiver"], "pages and tickets reach different receivers"


def test_amtool_rejects_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "am.yml").write_text("route: {receiver: nobody}\nreceivers: [{name: somebody}]\n")
    assert run(tool("amtool"), "check-config", str(tmp_path / "am.yml"), check=False).returncode != 0


@pytest.fixture
def production_redis(tmp_path: Path) -> tuple[Redis, int]:
    """A redis-server on deploy/redis.conf (its data directory moved to a temporary one), password `pw`."""
    conf = (DEPLOY / "redis.conf").read_text().replace("dir /data", f"dir {tmp_path}")
    (tmp_path / "redis.conf").write_text(conf)
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            str(tmp_path / "redis.conf"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            "pw",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = Redis(port=port, password="pw")
    wait_for(lambda: _pings(client), 10, "redis-server")
    yield client, port  # type: ignore[misc]
    proc.terminate()
    proc.wait(10)


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_production_redis_keeps_an_aof_and_refuses_writes_when_full(production_redis: tuple[Redis, int]) -> None:
    client, _ = production_redis
    config = client.config_get("*")
    assert (config["appendonly"], config["appendfsync"], config["save"]) == ("yes", "everysec", "")
    assert config["maxmemory-policy"] == "noeviction" and int(config["maxmemory"]) >= 2**30
    client.rpush("queue", "accepted job")
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + 100_000))
    with pytest.raises(OutOfMemoryError, match="maxmemory"):
        for i in range(1000):
            client.set(f"filler:{i}", "x" * 1000)
    assert client.lrange("queue", 0, -1) == [b"accepted job"], "noeviction: nothing accepted is dropped"


def test_the_compose_redis_healthcheck_needs_the_password(production_redis: tuple[Redis, int]) -> None:
    """redis-cli exits 0 on NOAUTH: the health check must look for PONG."""
    _, port = production_redis
    compose = load_yaml(ROOT / "docker-compose.yml")
    kind, command = compose["services"]["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    command = command.replace("redis-cli", f"redis-cli -p {port}")

    def healthy(password: str) -> bool:
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "REDISCLI_AUTH": password}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True).returncode == 0

    assert healthy("pw") and not healthy("wrong")
