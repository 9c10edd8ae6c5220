"""What a dashboard panel is (`Q`, `Panel`, `quantiles`) and the selectors panels share.

The panels themselves: dashboard_jobs.py (overview, steps, queue, jobs) and dashboard_service.py
(workers, Redis and processes, HTTP, webhooks); build_dashboard.py lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

M = 'model=~"$model"'  # the model variable's filter
RATE = "$__rate_interval"
JOBS = 'job=~"diffusion-api|diffusion-worker"'


def quantiles(
    metric: str, by: str, legend: str, selector: str = M, qs: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> list[Q]:
    """p50/p95/p99 of a histogram `metric` summed by the labels `by`, one query per quantile."""
    matchers = f"{{{selector}}}" if selector else ""
    buckets = f"sum by ({by + ', ' if by else ''}le) (rate({metric}_bucket{matchers}[{RATE}]))"
    return [Q(f"histogram_quantile({q}, {buckets})", f"{legend} p{round(q * 100)}") for q in qs]


@dataclass
class Q:
    """One PromQL query and its legend."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Panel:
    """A panel: kind is timeseries, stat or table; width in grid units (24 = full row)."""

    title: str
    description: str
    queries: list[Q]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    extra: dict[str, Any] = field(default_factory=dict)
