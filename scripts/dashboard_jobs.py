"""Dashboard rows about the work (overview, denoising steps, queue, jobs): one entry per panel.

build_dashboard.py lays them out. To add a panel: add it here, run `make dashboard`, commit both files.
tests/deploy/test_dashboard.py demands a panel for every metric the API and the workers export.
"""

from __future__ import annotations

from dashboard_model import JOBS, RATE, M, Panel, Q, quantiles

ROWS: list[tuple[str, list[Panel]]] = [
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
            Panel(
                "Oldest queued job",
                "How long the longest-waiting job has waited, all selected models. Alert: over 15 minutes.",
                [Q(f"max(diffusion_queue_oldest_age_seconds{{{M}}})")],
                unit="s",
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Jobs running",
                "Jobs workers have started and not finished, all selected models.",
                [Q(f"sum(max by (model) (diffusion_jobs_running{{{M}}}))")],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Redis reachable",
                "1 when every API replica read Redis at its last scrape. Alert: 0 for a minute.",
                [Q("min(diffusion_redis_up)")],
                kind="stat",
                width=4,
                height=4,
                extra={"min": 0, "max": 1},
            ),
            Panel(
                "Jobs lost, last hour",
                "Jobs failed because their worker died on every attempt (API and workers count them).",
                [Q(f"sum(increase(diffusion_jobs_lost_total{{{M}}}[1h]))")],
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
                width=16,
                height=9,
            ),
            Panel(
                "Jobs per denoising batch",
                "Cross-request batching: jobs denoised together, mean and p95 (images per batch: the step "
                "panel's batch_size).",
                [
                    Q(
                        f"sum by (model) (rate(diffusion_batch_jobs_sum{{{M}}}[{RATE}])) "
                        f"/ sum by (model) (rate(diffusion_batch_jobs_count{{{M}}}[{RATE}]))",
                        "{{model}} mean",
                    ),
                    *quantiles("diffusion_batch_jobs", "model", "{{model}}", qs=(0.95,)),
                ],
                width=8,
                height=9,
            ),
        ],
    ),
    (
        "Queue",
        [
            Panel(
                "Queued and running jobs by model",
                "Jobs waiting (all priorities) and jobs started, not finished: what KEDA scales workers on. "
                "Alert: a backlog over 50 that keeps growing.",
                [
                    Q(f"max by (model) (diffusion_queue_depth{{{M}}})", "queued {{model}}"),
                    Q(f"max by (model) (diffusion_jobs_running{{{M}}})", "running {{model}}"),
                ],
                width=8,
            ),
            Panel(
                "Oldest queued job's age by model",
                "How long the job at the head of the model's queues has waited. Alert: over 15 minutes.",
                [Q(f"max by (model) (diffusion_queue_oldest_age_seconds{{{M}}})", "{{model}}")],
                unit="s",
                width=8,
            ),
            Panel(
                "Queue wait p50 / p95 by model and priority",
                "Submission until a worker started the job.",
                quantiles(
                    "diffusion_job_queue_wait_seconds", "model, priority", "{{model}} {{priority}}", qs=(0.5, 0.95)
                ),
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
                width=24,
                height=7,
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
                "Jobs lost, expired and re-queued",
                "Re-queued: a worker died mid-job and another attempt follows. Lost: it died on every attempt "
                "(failed worker_lost). Expired: the time-to-start deadline passed while queued (canceled).",
                [
                    Q(
                        f"sum by (model) (increase(diffusion_jobs_requeued_total{{{M}}}[{RATE}]))",
                        "re-queued {{model}}",
                    ),
                    Q(f"sum by (model) (increase(diffusion_jobs_lost_total{{{M}}}[{RATE}]))", "lost {{model}}"),
                    Q(
                        f"sum by (model) (increase(diffusion_jobs_deadline_expired_total{{{M}}}[{RATE}]))",
                        "deadline expired {{model}}",
                    ),
                ],
                width=12,
                height=7,
            ),
        ],
    ),
]
