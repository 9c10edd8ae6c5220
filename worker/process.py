"""The worker process: load and warm the pipeline, register with RQ, take jobs until stopped."""

from __future__ import annotations

import logging
import os
import time

# Before transformers is imported: its import-time notices are noise in a worker's log.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import diffusers
import torch
import transformers
from prometheus_client import start_http_server
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from contract.jobs import JobError, JobErrorType
from contract.keys import queue_names
from contract.models import LoraInfo, ModelInfo
from contract.records import JobStore
from contract.storage import open_storage
from worker import metrics
from worker.claims import Claimer
from worker.loading import ModelLoadError, load, pick_runtime
from worker.pipeline import WarmPipeline
from worker.rqworker import GPUWorker, SafeJob
from worker.runner import Runner
from worker.settings import WorkerSettings

log = logging.getLogger("worker")
VERSION = "0.1.0"


def model_info(settings: WorkerSettings, warm: WarmPipeline) -> ModelInfo:
    """What this worker tells the API about its model: native size, defaults, limits, what runs it."""
    schedulers = warm.scheduler_names
    if warm.default_scheduler not in schedulers:  # the model's own scheduler is always valid
        schedulers = [warm.default_scheduler, *schedulers]
    return ModelInfo(
        pipeline=warm.pipeline_class,
        width=warm.width,
        height=warm.height,
        default_steps=min(settings.default_steps, settings.max_steps or settings.default_steps),
        default_guidance_scale=(
            settings.default_guidance_scale if settings.fixed_guidance_scale is None else settings.fixed_guidance_scale
        ),
        scheduler=warm.default_scheduler,
        schedulers=schedulers,
        max_steps=settings.max_steps,
        fixed_guidance_scale=settings.fixed_guidance_scale,
        device=str(warm.runtime.device),
        dtype=str(warm.runtime.dtype).removeprefix("torch."),
        compiled=settings.compile,
        controlnets=sorted(warm.controlnets),
        loras=[LoraInfo(name=name, sha256=sha) for name, sha in warm.loras.hashes.items()],
        max_loras=warm.loras.max_per_job,
        max_batch_images=settings.max_batch_images,
    )


def _warm(settings: WorkerSettings) -> WarmPipeline:
    model = settings.name
    runtime = pick_runtime(settings)
    started = time.perf_counter()
    pipe = load(settings, runtime)
    metrics.PIPELINE_LOAD_SECONDS.labels(model).set(time.perf_counter() - started)
    warm = WarmPipeline(pipe, runtime, settings)
    warmup_seconds = warm.warm_up()
    metrics.WARMUP_SECONDS.labels(model).set(warmup_seconds)
    labels = (
        model,
        warm.pipeline_class,
        str(runtime.device),
        str(runtime.dtype),
        str(settings.compile),
        torch.__version__,
        diffusers.__version__,
        VERSION,
    )
    metrics.MODEL_INFO.labels(*labels).set(1)
    log.info(
        "pipeline warm",
        extra={
            "model": model,
            "pipeline": warm.pipeline_class,
            "device": str(runtime.device),
            "dtype": str(runtime.dtype),
            "native": f"{warm.width}x{warm.height}",
            "warmup_seconds": round(warmup_seconds, 3),
        },
    )
    return warm


def run(settings: WorkerSettings, burst: bool = False) -> int:
    """Serve the configured model until stopped; returns the process exit code."""
    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    model = settings.name
    for counter in (metrics.JOBS_LOST, metrics.JOBS_DEADLINE_EXPIRED, metrics.JOBS_REQUEUED):
        counter.labels(model)  # exported at 0 from the start: rates and increases need a first sample
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    try:
        warm = _warm(settings)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 2
    redis = Redis.from_url(settings.redis_url)
    store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)
    storage = open_storage(settings.storage_url, settings.storage_timeout_seconds, settings.storage_retries)
    # Listed highest priority first: RQ's default dequeue takes from the first non-empty queue.
    queues = [
        Queue(name, connection=redis, serializer=JSONSerializer, job_class=SafeJob)
        for name in queue_names(settings.key_prefix, model)
    ]
    claim = (
        Claimer(redis, settings.key_prefix, queues, settings.max_batch_images)
        if settings.max_batch_images > 1
        else None
    )
    worker = GPUWorker(
        queues,
        connection=redis,
        serializer=JSONSerializer,
        name=settings.worker_id,
        worker_ttl=settings.worker_ttl_seconds,
        heartbeat_ttl=settings.heartbeat_ttl_seconds,
        maintenance_interval=settings.maintenance_interval_seconds,
        on_abandoned=lambda job_id, retries_left: abandoned(store, model, job_id, retries_left),
        claim=claim,
    )
    worker.runner = Runner(warm, store, storage, settings, on_done=worker.job_done)
    model_info(settings, warm).publish(redis, settings.key_prefix, model)
    log.info("taking jobs", extra={"queues": ",".join(q.name for q in queues), "worker": settings.worker_id})
    worker.work(burst=burst, logging_level=settings.log_level)
    # A requested stop (SIGTERM) or an emptied queue in burst mode is a clean exit; anything else made
    # RQ's loop give up (e.g. Redis unreachable for too long): exit non-zero so the supervisor restarts us.
    return 0 if worker._stop_requested or burst else 1


def abandoned(store: JobStore, model: str, job_id: str, retries_left: int) -> None:
    """RQ found a job whose worker died: its record shows it queued again, or lost when no retry is left."""
    if retries_left > 0:
        store.requeue(job_id)
        metrics.JOBS_REQUEUED.labels(model).inc()
        log.warning("job's worker died; re-queued", extra={"job_id": job_id, "retries_left": retries_left})
    else:
        error = JobError(
            type=JobErrorType.WORKER_LOST, message="the worker running this job stopped and its retries are exhausted"
        )
        if store.fail(job_id, error):  # False: the API's housekeeping failed it first (and counted it)
            metrics.JOBS_LOST.labels(model).inc()
            log.warning("job's worker died on every attempt; failed", extra={"job_id": job_id})
