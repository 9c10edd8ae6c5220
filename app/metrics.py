"""Every Prometheus metric the API process exports, in one registry per app instance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.catalog import Catalog

disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "diffusion"
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class QueueCollector(Collector):
    """Queue depth and ready workers per served model, read from Redis at scrape time."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs waiting in the model's queue.", labels=["model"])
        ready = GaugeMetricFamily(
            f"{PREFIX}_workers_ready", "Warm workers listening on the model's queue.", labels=["model"]
        )
        try:
            for model in self.catalog.names:
                depth.add_metric([model], self.catalog.depth(model))
                ready.add_metric([model], self.catalog.ready_workers(model))
        except Exception:
            return
        yield depth
        yield ready


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

    def watch_queues(self, collector: QueueCollector) -> None:
        """Export queue depth and ready workers through `collector`."""
        self.registry.register(collector)
