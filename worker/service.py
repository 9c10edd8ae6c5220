"""The worker process: load and warm the pipeline, register with RQ, take jobs until stopped."""

from __future__ import annotations

import json
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

from contract.queues import model_info_key, queue_names
from contract.records import JobStore
from contract.storage import LocalStorage
from worker import metrics, tasks
from worker.config import WorkerSettings
from worker.pipeline import ModelLoadError, WarmPipeline, load, pick_runtime
from worker.rqworker import GPUWorker
from worker.runner import Runner

log = logging.getLogger("worker")
VERSION = "0.1.0"


def publish_model(redis: Redis, settings: WorkerSettings, warm: WarmPipeline) -> None:
    """Tell the API this model's defaults (native size, steps, guidance) and what runs it."""
    info = {
        "pipeline": warm.pipeline_class,
        "width": warm.width,
        "height": warm.height,
        "steps": min(settings.default_steps, settings.max_steps or settings.default_steps),
        "guidance_scale": (
            settings.default_guidance_scale if settings.fixed_guidance_scale is None else settings.fixed_guidance_scale
        ),
        "schedulers": warm.scheduler_names,
        "scheduler": warm.default_scheduler,
        "loras": warm.loras.published(),
        "max_loras": warm.loras.max_per_job,
        "controlnets": sorted(warm.controlnets),
        "max_steps": settings.max_steps,
        "fixed_guidance_scale": settings.fixed_guidance_scale,
        "device": str(warm.runtime.device),
        "dtype": str(warm.runtime.dtype).removeprefix("torch."),
    }
    redis.set(model_info_key(settings.key_prefix, settings.name), json.dumps(info))


def run(settings: WorkerSettings, burst: bool = False) -> int:
    """Serve the configured model until stopped; returns the process exit code."""
    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    model = settings.name
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)

    try:
        runtime = pick_runtime(settings)
        started = time.perf_counter()
        pipe = load(settings, runtime)
        metrics.PIPELINE_LOAD_SECONDS.labels(model).set(time.perf_counter() - started)
        warm = WarmPipeline(pipe, runtime, settings)
    except ModelLoadError as exc:
        log.error("%s", exc)
        return 2
    warmup_seconds = warm.warm_up()
    metrics.WARMUP_SECONDS.labels(model).set(warmup_seconds)
    metrics.MODEL_INFO.labels(
        model,
        warm.pipeline_class,
        str(runtime.device),
        str(runtime.dtype),
        str(settings.compile),
        torch.__version__,
        diffusers.__version__,
        VERSION,
    ).set(1)
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

    redis = Redis.from_url(settings.redis_url)
    store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)
    runner = Runner(warm, store, LocalStorage(settings.storage_dir), model, settings)
    # Listed highest priority first: RQ's default dequeue takes from the first non-empty queue.
    queues = [
        Queue(name, connection=redis, serializer=JSONSerializer) for name in queue_names(settings.key_prefix, model)
    ]
    worker = GPUWorker(
        queues,
        connection=redis,
        serializer=JSONSerializer,
        name=settings.worker_id,
        worker_ttl=settings.worker_ttl_seconds,
        heartbeat_ttl=settings.heartbeat_ttl_seconds,
        maintenance_interval=settings.maintenance_interval_seconds,
    )
    tasks.install(runner, worker.job_heartbeat)
    publish_model(redis, settings, warm)
    log.info("taking jobs", extra={"queues": ",".join(q.name for q in queues), "worker": settings.worker_id})
    ok = worker.work(burst=burst, logging_level=settings.log_level)
    return 0 if ok or burst else 1
