"""Dashboard rows about what runs it (workers, Redis and processes, HTTP API, webhooks): one entry per panel.

build_dashboard.py lays them out. To add a panel: add it here, run `make dashboard`, commit both files.
tests/deploy/test_dashboard.py demands a panel for every metric the API and the workers export.
"""

from __future__ import annotations

from dashboard_model import JOBS, RATE, M, Panel, Q, quantiles

ROWS: list[tuple[str, list[Panel]]] = [
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
        "Redis and processes",
        [
            Panel(
                "Redis reachable by API replica",
                "1 when the replica read Redis at the scrape, 0 when it could not (then its queue numbers are "
                "missing, not stale). Alert: 0 for a minute.",
                [Q("min by (instance) (diffusion_redis_up)", "{{instance}}")],
                width=6,
                extra={"min": 0, "max": 1},
            ),
            Panel(
                "Redis memory",
                "Used memory against maxmemory: with noeviction, submissions fail past it. Alert: over 90%.",
                [
                    Q("max(diffusion_redis_memory_used_bytes)", "used"),
                    Q("max(diffusion_redis_memory_max_bytes)", "maxmemory"),
                ],
                unit="bytes",
                width=6,
            ),
            Panel(
                "Process CPU by target",
                "CPU seconds per second of each API replica and worker process.",
                [
                    Q(
                        f"sum by (job, instance) (rate(process_cpu_seconds_total{{{JOBS}}}[{RATE}]))",
                        "{{job}} {{instance}}",
                    )
                ],
                width=6,
            ),
            Panel(
                "Process memory by target",
                "Resident memory of each API replica and worker process.",
                [Q(f"max by (job, instance) (process_resident_memory_bytes{{{JOBS}}})", "{{job}} {{instance}}")],
                unit="bytes",
                width=6,
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
