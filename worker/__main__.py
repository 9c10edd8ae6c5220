"""`python -m worker [--model ID_OR_PATH] [--metrics-port P]`: load, warm up, then take jobs.

Other settings come from the environment (README). The worker registers with RQ (and so counts
as ready in the API's /readyz) only after its pipeline is loaded and warm.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
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

from contract import logs
from contract.queues import model_info_key, queue_names
from contract.records import JobStore
from contract.settings import load_settings, read_models_file
from contract.storage import LocalStorage
from worker import metrics, tasks
from worker.config import WorkerSettings
from worker.pipeline import ModelLoadError, WarmPipeline, load, pick_runtime
from worker.rqworker import GPUWorker
from worker.runner import Runner

log = logging.getLogger("worker")
VERSION = "0.1.0"


def parse_args(argv: list[str] | None = None) -> dict[str, object]:
    """Command-line overrides of the environment settings."""
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    parser.add_argument("--model", dest="model_source", help="local diffusers folder or hub id")
    parser.add_argument("--name", dest="model_name", help="model (and queue) name; default DIFFUSION_DEFAULT_MODEL")
    parser.add_argument("--metrics-port", dest="metrics_port", type=int, help="0 disables the metrics server")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty (for batch runs)")
    args = vars(parser.parse_args(argv))
    return {k: v for k, v in args.items() if v is not None}


def publish_model(redis: Redis, settings: WorkerSettings, warm: WarmPipeline) -> None:
    """Tell the API this model's defaults (native size, steps, guidance) and what runs it."""
    info = {"pipeline": warm.pipeline_class, "width": warm.width, "height": warm.height,
            "steps": min(settings.default_steps, settings.max_steps or settings.default_steps),
            "guidance_scale": (settings.default_guidance_scale if settings.fixed_guidance_scale is None
                               else settings.fixed_guidance_scale),
            "schedulers": warm.scheduler_names, "scheduler": warm.default_scheduler,
            "loras": warm.loras.published(), "controlnets": sorted(warm.controlnets),
            "max_steps": settings.max_steps, "fixed_guidance_scale": settings.fixed_guidance_scale,
            "device": str(warm.runtime.device), "dtype": str(warm.runtime.dtype).removeprefix("torch.")}
    redis.set(model_info_key(settings.key_prefix, settings.name), json.dumps(info))


def settings_for(overrides: dict[str, object]) -> WorkerSettings:
    """Settings from the command line, then the environment, then the model's entry in the models file."""
    settings = load_settings(WorkerSettings, **overrides)
    entry = read_models_file(settings.models_file).get(settings.name)
    if entry is None:
        return settings
    from_file = {("model_source" if k == "source" else k): v for k, v in entry.model_dump(exclude_none=True).items()}
    explicit = {k: getattr(settings, k) for k in settings.model_fields_set}
    return load_settings(WorkerSettings, **{**from_file, **explicit})


def main(argv: list[str] | None = None) -> int:
    """Start a worker; returns the process exit code."""
    overrides = parse_args(argv)
    burst = bool(overrides.pop("burst", False))
    settings = settings_for(overrides)
    logs.configure(settings.log_format, settings.log_level)
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
    metrics.MODEL_INFO.labels(model, warm.pipeline_class, str(runtime.device), str(runtime.dtype),
                              str(settings.compile), torch.__version__, diffusers.__version__, VERSION).set(1)
    log.info("pipeline warm", extra={"model": model, "pipeline": warm.pipeline_class, "device": str(runtime.device),
                                     "dtype": str(runtime.dtype), "native": f"{warm.width}x{warm.height}",
                                     "warmup_seconds": round(warmup_seconds, 3)})

    redis = Redis.from_url(settings.redis_url)
    store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)
    runner = Runner(warm, store, LocalStorage(settings.storage_dir), model, settings)
    # Listed highest priority first: RQ's default dequeue takes from the first non-empty queue.
    queues = [Queue(name, connection=redis, serializer=JSONSerializer)
              for name in queue_names(settings.key_prefix, model)]
    worker = GPUWorker(queues, connection=redis, serializer=JSONSerializer, name=settings.worker_id,
                       worker_ttl=settings.worker_ttl_seconds, heartbeat_ttl=settings.heartbeat_ttl_seconds,
                       maintenance_interval=settings.maintenance_interval_seconds)
    tasks.install(runner, worker.job_heartbeat)
    publish_model(redis, settings, warm)
    log.info("taking jobs", extra={"queues": ",".join(q.name for q in queues), "worker": settings.worker_id})
    ok = worker.work(burst=burst, logging_level=settings.log_level)
    return 0 if ok or burst else 1


if __name__ == "__main__":
    sys.exit(main())
