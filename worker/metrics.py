"""Every Prometheus metric a worker exports; served on the worker's own metrics port."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "diffusion"
# Milliseconds (tiny models, distilled models on H100) to seconds (large models on CPU).
STEP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds to minutes: whole jobs and their waits.
# Jobs in one denoising batch (cross-request batching; at most DIFFUSION_MAX_BATCH_IMAGES images).
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)
JOB_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

STEP_SECONDS = Histogram(
    f"{PREFIX}_denoise_step_duration_seconds",
    "Latency of one denoising step (one denoiser pass over the whole batch plus the scheduler step).",
    ["model", "batch_size"],
    buckets=STEP_BUCKETS,
)
QUEUE_WAIT_SECONDS = Histogram(
    f"{PREFIX}_job_queue_wait_seconds",
    "Time from submission until a worker started the job.",
    ["model", "priority"],
    buckets=JOB_BUCKETS,
)
INFERENCE_SECONDS = Histogram(
    f"{PREFIX}_job_inference_seconds",
    "Time inside the pipeline: text encoding, denoising and decoding.",
    ["model"],
    buckets=JOB_BUCKETS,
)
JOB_SECONDS = Histogram(
    f"{PREFIX}_job_duration_seconds",
    "End to end: submission until the job's images are stored (or it failed).",
    ["model", "outcome"],
    buckets=JOB_BUCKETS,
)
JOBS_FINISHED = Counter(
    f"{PREFIX}_jobs_finished_total",
    "Jobs this worker ended, by outcome (succeeded, failed) and error type.",
    ["model", "outcome", "reason"],
)
JOBS_REQUEUED = Counter(
    f"{PREFIX}_jobs_requeued_total",
    "Jobs whose worker died (abandoned) and that were queued again for another attempt.",
    ["model"],
)
# Also defined in app/metrics.py (same name, help and labels): a job lost on every retry is failed by
# whichever process notices first, a worker's maintenance here or the API's housekeeping, and the
# record's transition lets only one of them count it. Sum both jobs' series.
JOBS_LOST = Counter(
    f"{PREFIX}_jobs_lost_total",
    "Jobs failed with worker_lost: their worker died on every attempt.",
    ["model"],
)
# Also in app/metrics.py: the API's housekeeping cancels queued jobs past their deadline; a worker
# cancels one it dequeues too late. Each job is canceled (and counted) once.
JOBS_DEADLINE_EXPIRED = Counter(
    f"{PREFIX}_jobs_deadline_expired_total",
    "Jobs canceled because their time-to-start deadline passed before a worker started them.",
    ["model"],
)
BATCH_JOBS = Histogram(
    f"{PREFIX}_batch_jobs",
    "Jobs denoised together in one batch (cross-request batching).",
    ["model"],
    buckets=BATCH_BUCKETS,
)
IMAGES_GENERATED = Counter(f"{PREFIX}_images_generated_total", "Images generated and stored.", ["model"])
WORKER_BUSY = Gauge(f"{PREFIX}_worker_busy", "1 while this worker runs a job, else 0.", ["model"])
PIPELINE_LOAD_SECONDS = Gauge(
    f"{PREFIX}_pipeline_load_seconds", "Time to load the pipeline and move it to the device, at start-up.", ["model"]
)
WARMUP_SECONDS = Gauge(f"{PREFIX}_pipeline_warmup_seconds", "Time of the start-up warm-up generations.", ["model"])
GPU_MEMORY_BYTES = Gauge(
    f"{PREFIX}_gpu_memory_bytes",
    "CUDA memory of this worker's device: allocated, reserved, peak allocated.",
    ["model", "kind"],
)
COMPILATIONS = Counter(
    f"{PREFIX}_torch_compilations_total",
    "Graphs torch.compile compiled for the denoiser; phase=serving counts recompiles after warm-up (should stay 0).",
    ["model", "phase"],
)
MODEL_INFO = Gauge(
    f"{PREFIX}_model_info",
    "Always 1; labels describe the loaded model and runtime.",
    ["model", "pipeline", "device", "dtype", "compiled", "torch", "diffusers", "version"],
)

__all__ = [
    "BATCH_JOBS",
    "COMPILATIONS",
    "GPU_MEMORY_BYTES",
    "IMAGES_GENERATED",
    "INFERENCE_SECONDS",
    "JOBS_DEADLINE_EXPIRED",
    "JOBS_FINISHED",
    "JOBS_LOST",
    "JOBS_REQUEUED",
    "JOB_SECONDS",
    "MODEL_INFO",
    "PIPELINE_LOAD_SECONDS",
    "QUEUE_WAIT_SECONDS",
    "REGISTRY",
    "STEP_SECONDS",
    "WARMUP_SECONDS",
    "WORKER_BUSY",
]
