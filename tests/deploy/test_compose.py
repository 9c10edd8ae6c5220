"""docker-compose.yml (and its CPU override) against the Compose Specification's JSON schema, plus what it promises.

No Docker engine here, so the file is read as Compose reads it: variables interpolated (`${VAR:?}`
fails without VAR, as `docker compose` does), override files merged (mappings merged, `!reset`
removing), then validated against the vendored schema (tests/deploy/schemas/compose-spec.json,
compose-spec/compose-spec at 170098ba, Apache-2.0).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.tools import DEPLOY, setting_default
from tests.helpers import ROOT

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "compose-spec.json").read_text())
ENV = {
    "REDIS_PASSWORD": "pw",
    "DIFFUSION_URL_SIGNING_SECRET": "secret",
    "AWS_ACCESS_KEY_ID": "diffusion",
    "AWS_SECRET_ACCESS_KEY": "minio-secret",
}
WORKERS = ("worker", "worker-gpu1")


class Reset:
    """Compose's `!reset` tag: remove the key from what the earlier files set."""


class Loader(yaml.SafeLoader):
    """YAML with Compose's merge tags."""


Loader.add_constructor("!reset", lambda loader, node: Reset())


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if op in (":?", "?") and not present:
            raise KeyError(f"required variable {name} is missing: {arg}")
        if op in (":-", "-") and not present:
            return arg
        return env.get(name, "")

    pattern = r"(?P<escaped>\$\$)|\$(?:\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
    return re.sub(pattern, one, value)


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file into a base: mappings merged, !reset removes, the rest replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            else:
                out[key] = merge(base.get(key), value) if key in base else value
        return out
    assert not isinstance(override, list), "sequences merge by appending in Compose; this merge does not model that"
    return override


def load(*files: str, env: dict[str, str] = ENV) -> dict[str, Any]:
    """The Compose model of `files`, in order, as `docker compose -f ... -f ...` would build it."""
    model: dict[str, Any] = {}
    for name in files:
        model = merge(model, yaml.load((ROOT / name).read_text(), Loader=Loader))
    return interpolate(model, env)  # type: ignore[no-any-return]


def validate(model: dict[str, Any]) -> None:
    """Raise on the first violation of the Compose Specification's schema."""
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(model), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors[:10])


def seconds(duration: str) -> float:
    """A Compose duration (`11m`, `1m30s`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cpu.yml")])
def test_compose_files_validate_against_the_compose_schema(files: tuple[str, ...]) -> None:
    validate(load(*files))


def test_the_schema_check_catches_a_typo() -> None:
    model = load("docker-compose.yml")
    model["services"]["api"]["helthcheck"] = model["services"]["api"].pop("healthcheck")
    with pytest.raises(AssertionError, match="helthcheck"):
        validate(model)


def test_the_secrets_are_required() -> None:
    for missing in ENV:
        with pytest.raises(KeyError, match=missing):
            load("docker-compose.yml", env={k: v for k, v in ENV.items() if k != missing})


def test_health_checks_and_start_order() -> None:
    services = load("docker-compose.yml")["services"]
    for name in ("redis", "api", *WORKERS, "prometheus", "alertmanager", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("api", *WORKERS):
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}
    for name in ("api", *WORKERS):
        test = services[name]["healthcheck"]["test"]
        assert test[-2:] == ["/srv/deploy/healthcheck.py", "api" if name == "api" else "worker"], test


def memory_bytes(size: str) -> int:
    """A memory size as Redis (`2gb`) or Compose (`3g`) write it."""
    number, unit = re.fullmatch(r"(\d+)([kmg]?)b?", size.lower()).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[unit]


def test_redis_refuses_writes_when_full_instead_of_being_killed() -> None:
    redis = load("docker-compose.yml")["services"]["redis"]
    conf = dict(line.split(None, 1) for line in (DEPLOY / "redis.conf").read_text().splitlines() if line[:1].isalpha())
    assert conf["maxmemory-policy"] == "noeviction" and conf["appendonly"] == "yes"
    assert "./deploy/redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert redis["command"][:2] == ["redis-server", "/usr/local/etc/redis/redis.conf"]
    limit = memory_bytes(redis["deploy"]["resources"]["limits"]["memory"])
    assert limit >= 1.4 * memory_bytes(conf["maxmemory"]), "leave room above maxmemory for an AOF rewrite's fork"


def test_one_worker_per_gpu_each_pinned_to_its_own_device() -> None:
    services = load("docker-compose.yml")["services"]
    devices = []
    for name in WORKERS:
        (request,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert "count" not in request, f"{name}: `count` would give every replica the first GPU"
        devices += request["device_ids"]
        assert services[name]["networks"]["default"]["aliases"] == ["workers"], name
    assert len(devices) == len(set(devices)) == len(WORKERS)
    assert services["worker-gpu1"]["profiles"] == ["gpu1"]


def test_workers_get_time_to_finish_the_running_job() -> None:
    services = load("docker-compose.yml")["services"]
    timeout = setting_default("worker", "job_timeout_seconds")
    for name in WORKERS:
        assert seconds(services[name]["stop_grace_period"]) >= timeout + 60, name


def test_worker_caches_are_volumes_where_the_image_puts_them() -> None:
    env = dict(re.findall(r"(HF_HOME|TORCHINDUCTOR_CACHE_DIR)=(\S+)", (ROOT / "Dockerfile").read_text()))
    model = load("docker-compose.yml")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in model["services"]["worker"]["volumes"]}
    assert mounts[env["HF_HOME"]] == "hf-cache" and mounts[env["TORCHINDUCTOR_CACHE_DIR"]] == "compile-cache"
    assert {"hf-cache", "compile-cache"} <= set(model["volumes"])


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.cpu.yml")])
def test_images_live_in_the_minio_bucket_the_api_and_workers_share(files: tuple[str, ...]) -> None:
    """MinIO replaces the shared image volume: same store settings everywhere, bucket made before anyone starts."""
    services = load(*files)["services"]
    store = {k: v for k, v in services["api"]["environment"].items() if k.startswith("AWS_") or "STORAGE" in k}
    assert store == {
        "DIFFUSION_STORAGE_URL": "s3://diffusion/images",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ACCESS_KEY_ID": ENV["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": ENV["AWS_SECRET_ACCESS_KEY"],
        "AWS_REGION": "us-east-1",
    }
    assert services["api"]["environment"]["DIFFUSION_IMAGE_DELIVERY"] == "proxy", "clients cannot reach minio:9000"
    assert "ports" not in services["minio"], "the store stays private"
    minio = services["minio"]["environment"]
    assert (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]) == (
        store["AWS_ACCESS_KEY_ID"],
        store["AWS_SECRET_ACCESS_KEY"],
    )
    init = services["minio-init"]
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "mc mb --ignore-existing store/diffusion" in init["entrypoint"][-1]
    assert store["DIFFUSION_STORAGE_URL"].removeprefix("s3://").split("/")[0] == "diffusion"
    for name in ("api", *(w for w in WORKERS if w in services)):
        service = services[name]
        assert {k: service["environment"][k] for k in store} == store, name
        assert service["depends_on"]["minio-init"] == {"condition": "service_completed_successfully"}, name
        assert not any(v.endswith(":/data/images") for v in service.get("volumes", [])), f"{name}: no shared volume"
        assert service["environment"]["DIFFUSION_AUTH"] == "required", name


def test_the_bucket_init_passes_the_credentials_through_the_shell() -> None:
    """`$$` in the file reaches the container's shell as `$`: the secret is never written into the command."""
    (command,) = yaml.load((ROOT / "docker-compose.yml").read_text(), Loader=Loader)["services"]["minio-init"][
        "entrypoint"
    ][-1:]
    assert '"$$AWS_ACCESS_KEY_ID" "$$AWS_SECRET_ACCESS_KEY"' in command
    assert (
        '"$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"'
        in load("docker-compose.yml")["services"]["minio-init"]["entrypoint"][-1]
    )


def test_the_cpu_variant_runs_without_a_gpu_on_the_default_model() -> None:
    worker = load("docker-compose.yml", "docker-compose.cpu.yml")["services"]["worker"]
    assert "deploy" not in worker
    assert worker["environment"]["DIFFUSION_DEVICE"] == "cpu"
    assert worker["environment"]["DIFFUSION_DEFAULT_MODEL"] == "shapes"
    assert setting_default("worker", "model_source").endswith("shapes")  # embedded, no download
    assert worker["build"] == {
        "context": ".",
        "target": "worker",
        "args": {"TORCH_INDEX": worker["build"]["args"]["TORCH_INDEX"]},
    }
    assert "cpu" in worker["build"]["args"]["TORCH_INDEX"] and "cpu" in worker["image"]


def test_prometheus_finds_every_api_replica_and_worker_by_dns() -> None:
    model = load("docker-compose.yml")
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: job["dns_sd_configs"][0] for job in prometheus["scrape_configs"] if "dns_sd_configs" in job
    }
    assert jobs["diffusion-api"]["names"] == ["api"] and "api" in model["services"]
    assert jobs["diffusion-api"]["port"] == int(model["services"]["api"]["ports"][0].split(":")[-1])
    assert jobs["diffusion-worker"]["names"] == ["workers"]
    assert jobs["diffusion-worker"]["port"] == setting_default("worker", "metrics_port")
    mounted = set(model["services"]["prometheus"]["volumes"])
    assert {
        "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro",
    } <= mounted
    assert prometheus["rule_files"] == ["alerts.yml"]  # beside the config, in the container too


def test_monitoring_is_a_profile_and_every_mounted_file_exists() -> None:
    services = load("docker-compose.yml", "docker-compose.cpu.yml")["services"]
    for name in ("prometheus", "alertmanager", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), "no auth: loopback only"
    for service in services.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), volume
