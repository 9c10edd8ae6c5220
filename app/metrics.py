"""Every Prometheus metric the API process exports, in one registry per app instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.catalog import Catalog

disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "diffusion"
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class QueueCollector(Collector):
    """Queue and Redis gauges, read from Redis at scrape time; `diffusion_redis_up` 0 when it cannot be read.

    Redis is asked first, with a short timeout and no retry (`Catalog.redis_memory`): while it is down a
    scrape still answers at once with `diffusion_redis_up 0` and nothing else, never with stale numbers
    and never with silence.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(f"{PREFIX}_redis_up", "1 when this API process can read Redis, else 0.")
        try:
            families = list(self._read())
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[GaugeMetricFamily]:
        used, limit = self.catalog.redis_memory()
        yield GaugeMetricFamily(f"{PREFIX}_redis_memory_used_bytes", "Memory Redis uses (INFO memory).", value=used)
        yield GaugeMetricFamily(
            f"{PREFIX}_redis_memory_max_bytes", "Redis's maxmemory (0: no limit); past it writes fail.", value=limit
        )
        per_model = {
            "queue_depth": "Jobs waiting in the model's queues (all priorities).",
            "workers_ready": "Warm workers listening on the model's queue.",
            "queue_oldest_age_seconds": "Age of the oldest job waiting for the model (0 when none waits).",
            "jobs_running": "The model's jobs that workers have started and not finished (RQ's started registries).",
        }
        families = {
            name: GaugeMetricFamily(f"{PREFIX}_{name}", text, labels=["model"]) for name, text in per_model.items()
        }
        for model in self.catalog.names:
            families["queue_depth"].add_metric([model], self.catalog.depth(model))
            families["workers_ready"].add_metric([model], self.catalog.ready_workers(model))
            families["queue_oldest_age_seconds"].add_metric([model], self.catalog.oldest_age(model))
            families["jobs_running"].add_metric([model], self.catalog.running(model))
        yield from families.values()


class ApiMetrics:
    """The API's metrics; `registry` is what `/metrics` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            f"{PREFIX}_http_requests_total",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            f"{PREFIX}_jobs_submitted_total",
            "Generation jobs accepted and queued, by model and API key name.",
            ["model", "key"],
            registry=self.registry,
        )
        self.jobs_rejected = Counter(
            f"{PREFIX}_jobs_rejected_total",
            "Generation requests refused before queueing, by reason.",
            ["reason"],
            registry=self.registry,
        )

        # Also defined in worker/metrics.py: the process that ends the job counts it (see there).
        self.jobs_lost = Counter(
            f"{PREFIX}_jobs_lost_total",
            "Jobs failed with worker_lost: their worker died on every attempt.",
            ["model"],
            registry=self.registry,
        )
        self.jobs_deadline_expired = Counter(
            f"{PREFIX}_jobs_deadline_expired_total",
            "Jobs canceled because their time-to-start deadline passed before a worker started them.",
            ["model"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            f"{PREFIX}_webhook_deliveries_total",
            "Webhook delivery attempts by event and outcome (delivered, retrying, failed, timeout, error, refused).",
            ["event", "outcome"],
            registry=self.registry,
        )
        self.webhook_duration = Histogram(
            f"{PREFIX}_webhook_delivery_duration_seconds",
            "Time for a webhook receiver to answer.",
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

        # The API process itself: CPU, memory, open files, start time; the Python version.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def watch_queues(self, collector: QueueCollector) -> None:
        """Export the queue and Redis gauges through `collector`; model-labelled counters start at 0."""
        self.registry.register(collector)
        for model in collector.catalog.names:
            self.jobs_lost.labels(model)
            self.jobs_deadline_expired.labels(model)
