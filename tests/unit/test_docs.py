"""The README documents every metric and every setting, and metric names follow Prometheus conventions."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from app.metrics import ApiMetrics, QueueCollector
from app.settings import ApiSettings
from contract.settings import ENV_PREFIX
from tests.helpers import ROOT
from worker.settings import WorkerSettings

README = (ROOT / "README.md").read_text()


def exported_names(registry: CollectorRegistry) -> dict[str, str]:
    names = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        names[name] = family.type
    return names


class FixedCatalog:
    """What the queue collector reads, without Redis."""

    names = ("m",)

    def depth(self, model: str) -> int:
        return 0

    def ready_workers(self, model: str) -> int:
        return 1

    def oldest_age(self, model: str) -> float:
        return 0.0

    def running(self, model: str) -> int:
        return 0

    def redis_memory(self) -> tuple[int, int]:
        return 1, 0


def all_metrics() -> dict[str, str]:
    import worker.metrics as worker_metrics

    api = ApiMetrics()
    api.watch_queues(QueueCollector(FixedCatalog()))
    names = exported_names(api.registry) | exported_names(worker_metrics.REGISTRY)
    # Ours; not the process_* and python_info families of prometheus_client's own collectors.
    return {name: kind for name, kind in names.items() if name.startswith("diffusion_")}


def test_metric_names_follow_conventions() -> None:
    metrics = all_metrics()
    assert len(metrics) >= 20
    for name, kind in metrics.items():
        assert re.fullmatch(r"diffusion_[a-z_]+", name), name
        if kind == "counter":
            assert name.endswith("_total"), name
        if kind == "histogram":
            # Base units; a histogram of a count is named for what it counts (jobs per batch).
            assert name.endswith(("_seconds", "_bytes", "_jobs")), name


def test_every_metric_is_in_the_readme_table() -> None:
    documented = set(re.findall(r"^\| `(diffusion_[a-z_]+)` \| (\w+) \|", README, flags=re.M))
    assert documented == set(all_metrics().items())


def test_every_setting_is_in_the_readme() -> None:
    for cls in (ApiSettings, WorkerSettings):
        for name in cls.model_fields:
            variable = "REDIS_URL" if name == "redis_url" else f"{ENV_PREFIX}{name.upper()}"
            assert f"`{variable}`" in README, f"{variable} is not documented"
