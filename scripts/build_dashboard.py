"""Build the Grafana dashboard ops open first: deploy/grafana/dashboards/diffusion.json (`make dashboard`).

One line per panel below; the layout (grid positions, ids) is computed. tests/deploy/test_dashboard.py
checks that the committed JSON is what this script builds, that every expression parses (promtool)
and that every metric it names is exported by a real API and worker.

To add a panel: add it to SECTIONS, run `make dashboard`, commit both files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "dashboards" / "diffusion.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
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


SECTIONS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            Panel(
                "Jobs queued",
                "Waiting jobs, all selected models.",
                [Q(f"sum(max by (model) (diffusion_queue_depth{{{M}}}))")],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Workers ready",
                "Warm workers registered, all selected models.",
                [Q(f"sum(max by (model) (diffusion_workers_ready{{{M}}}))")],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Busy ratio",
                "Share of warm workers running a job now.",
                [Q(f"sum(diffusion_worker_busy{{{M}}}) / count(diffusion_model_info{{{M}}})")],
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Jobs finished / s",
                "All outcomes.",
                [Q(f"sum(rate(diffusion_jobs_finished_total{{{M}}}[{RATE}]))")],
                unit="ops",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Failed jobs, last hour",
                "Share of jobs ended by a worker that failed (alert: over 5%).",
                [
                    Q(
                        f'sum(increase(diffusion_jobs_finished_total{{outcome="failed", {M}}}[1h])) '
                        f"/ sum(increase(diffusion_jobs_finished_total{{{M}}}[1h]))"
                    )
                ],
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Scrape targets up",
                "API replicas and workers Prometheus scrapes successfully, by job.",
                [Q(f"sum by (job) (up{{{JOBS}}})", "{{job}}")],
                kind="stat",
                width=4,
                height=4,
            ),
        ],
    ),
    (
        "Denoising steps",
        [
            Panel(
                "Step latency p50 / p95 / p99 by model and batch size",
                "One denoising step (denoiser over the whole batch + scheduler step). Alert: p95 over twice "
                "its daily level.",
                quantiles(
                    "diffusion_denoise_step_duration_seconds", "model, batch_size", "{{model}} batch {{batch_size}}"
                ),
                unit="s",
                width=24,
                height=9,
            ),
        ],
    ),
    (
        "Queue",
        [
            Panel(
                "Queue depth by model",
                "Jobs waiting (all priorities). Alert: over 100 for 10 minutes.",
                [Q(f"max by (model) (diffusion_queue_depth{{{M}}})", "{{model}}")],
                width=8,
            ),
            Panel(
                "Queue wait p50 / p95 by model",
                "Submission until a worker started the job.",
                quantiles("diffusion_job_queue_wait_seconds", "model", "{{model}}", qs=(0.5, 0.95)),
                unit="s",
                width=8,
            ),
            Panel(
                "Submitted and rejected / s",
                "Jobs queued by model; requests refused before queueing by reason.",
                [
                    Q(f"sum by (model) (rate(diffusion_jobs_submitted_total{{{M}}}[{RATE}]))", "submitted {{model}}"),
                    Q(f"sum by (reason) (rate(diffusion_jobs_rejected_total[{RATE}]))", "rejected {{reason}}"),
                ],
                unit="ops",
                width=8,
            ),
        ],
    ),
    (
        "Jobs",
        [
            Panel(
                "Jobs / s by outcome and error type",
                "Jobs ended by workers; reason is the error type of failures.",
                [
                    Q(
                        f"sum by (model, outcome, reason) (rate(diffusion_jobs_finished_total{{{M}}}[{RATE}]))",
                        "{{model}} {{outcome}} {{reason}}",
                    )
                ],
                unit="ops",
                width=8,
            ),
            Panel(
                "Images / s by model",
                "Images generated and stored.",
                [Q(f"sum by (model) (rate(diffusion_images_generated_total{{{M}}}[{RATE}]))", "{{model}}")],
                unit="ops",
                width=8,
            ),
            Panel(
                "End-to-end latency p50 / p95 / p99",
                "Succeeded jobs: submission until the images are stored.",
                quantiles("diffusion_job_duration_seconds", "model", "{{model}}", f'outcome="succeeded", {M}'),
                unit="s",
                width=8,
            ),
            Panel(
                "Inference time p50 / p95",
                "Inside the pipeline: text encoding, denoising, VAE decode.",
                quantiles("diffusion_job_inference_seconds", "model", "{{model}}", qs=(0.5, 0.95)),
                unit="s",
                width=12,
                height=7,
            ),
            Panel(
                "Jobs re-queued after their worker died",
                "Found by a worker's maintenance (heartbeat lapsed); each runs again, as a new attempt.",
                [Q(f"sum by (model) (increase(diffusion_jobs_requeued_total{{{M}}}[{RATE}]))", "{{model}}")],
                width=12,
                height=7,
            ),
        ],
    ),
    (
        "Workers",
        [
            Panel(
                "Workers ready by model",
                "Warm workers registered on the model's queues. Alert: 0 for 2 minutes.",
                [Q(f"max by (model) (diffusion_workers_ready{{{M}}})", "{{model}}")],
                width=8,
            ),
            Panel(
                "Busy ratio by model",
                "Time share the model's warm workers spent running jobs.",
                [
                    Q(
                        f"sum by (model) (avg_over_time(diffusion_worker_busy{{{M}}}[{RATE}])) "
                        f"/ count by (model) (diffusion_model_info{{{M}}})",
                        "{{model}}",
                    )
                ],
                unit="percentunit",
                width=8,
                extra={"max": 1, "min": 0},
            ),
            Panel(
                "GPU memory by worker",
                "CUDA memory after each job: allocated, reserved, peak allocated.",
                [
                    Q(
                        f"max by (model, instance, kind) (diffusion_gpu_memory_bytes{{{M}}})",
                        "{{model}} {{instance}} {{kind}}",
                    )
                ],
                unit="bytes",
                width=8,
            ),
            Panel(
                "Serving recompiles",
                "Graphs compiled after warm-up (should stay 0). Alert: any in 30 minutes.",
                [
                    Q(
                        "sum by (model) "
                        f'(increase(diffusion_torch_compilations_total{{phase="serving", {M}}}[{RATE}]))',
                        "{{model}}",
                    )
                ],
                width=8,
            ),
            Panel(
                "Start-up time by worker",
                "Pipeline load and warm-up (with compilation) at the last start.",
                [
                    Q(
                        f"max by (model, instance) (diffusion_pipeline_load_seconds{{{M}}})",
                        "load {{model}} {{instance}}",
                    ),
                    Q(
                        f"max by (model, instance) (diffusion_pipeline_warmup_seconds{{{M}}})",
                        "warm-up {{model}} {{instance}}",
                    ),
                ],
                unit="s",
                width=8,
            ),
            Panel(
                "Workers",
                "What each warm worker runs.",
                [
                    Q(
                        f"max by (instance, model, pipeline, device, dtype, compiled, torch, diffusers, version) "
                        f"(diffusion_model_info{{{M}}})",
                        instant=True,
                    )
                ],
                kind="table",
                width=8,
            ),
        ],
    ),
    (
        "HTTP API",
        [
            Panel(
                "Requests / s by route and status",
                "Route templates, not paths.",
                [Q(f"sum by (route, status) (rate(diffusion_http_requests_total[{RATE}]))", "{{route}} {{status}}")],
                unit="reqps",
                width=8,
            ),
            Panel(
                "Error ratio by route",
                "Answers with status 5xx (server) and 4xx (client) over all answers.",
                [
                    Q(
                        f'sum by (route) (rate(diffusion_http_requests_total{{status=~"5.."}}[{RATE}])) '
                        f"/ sum by (route) (rate(diffusion_http_requests_total[{RATE}]))",
                        "5xx {{route}}",
                    ),
                    Q(
                        f'sum by (route) (rate(diffusion_http_requests_total{{status=~"4.."}}[{RATE}])) '
                        f"/ sum by (route) (rate(diffusion_http_requests_total[{RATE}]))",
                        "4xx {{route}}",
                    ),
                ],
                unit="percentunit",
                width=8,
            ),
            Panel(
                "p99 latency by route",
                "API answer time; event streams (SSE) last as long as the job.",
                quantiles("diffusion_http_request_duration_seconds", "route", "{{route}}", "", qs=(0.99,)),
                unit="s",
                width=8,
            ),
        ],
    ),
    (
        "Webhooks",
        [
            Panel(
                "Webhook deliveries / s by event and outcome",
                "delivered, retrying, failed (gave up), timeout, error, refused (address not allowed).",
                [
                    Q(
                        f"sum by (event, outcome) (rate(diffusion_webhook_deliveries_total[{RATE}]))",
                        "{{event}} {{outcome}}",
                    )
                ],
                unit="ops",
                width=12,
            ),
            Panel(
                "Webhook receiver answer time p50 / p95",
                "Time for receivers to answer a delivery.",
                quantiles("diffusion_webhook_delivery_duration_seconds", "", "answer", "", qs=(0.5, 0.95)),
                unit="s",
                width=12,
            ),
        ],
    ),
]


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, query in enumerate(panel.queries):
        target: dict[str, Any] = {"datasource": DATASOURCE, "expr": query.expr, "refId": chr(ord("A") + i)}
        if query.legend:
            target["legendFormat"] = query.legend
        if query.instant or panel.kind == "table":
            target |= {"instant": True, "range": False, "format": "table"}
        targets.append(target)
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, **panel.extra}, "overrides": []},
        "targets": targets,
    }
    if panel.kind == "timeseries":
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    elif panel.kind == "table":
        out["transformations"] = [{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}]
    return out


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, section in SECTIONS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            }
        )
        pid, y, x, row_height = pid + 1, y + 1, 0, 0
        for panel in section:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, row_height = pid + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": "diffusion-service",
        "title": "Diffusion service",
        "description": "Built by scripts/build_dashboard.py; edit there, then `make dashboard`.",
        "tags": ["diffusion"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                },
                {
                    "name": "model",
                    "label": "Model",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "definition": "label_values(diffusion_queue_depth, model)",
                    "query": {"query": "label_values(diffusion_queue_depth, model)", "refId": "model"},
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "sort": 1,
                    "hide": 0,
                    "options": [],
                },
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def main() -> None:
    """Write the dashboard JSON."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({sum(1 for p in build()['panels'] if p['type'] != 'row')} panels)")


if __name__ == "__main__":
    main()
