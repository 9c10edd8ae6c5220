"""Runs one job on the warm pipeline: record transitions, progress, step metrics, deadline, encoding, storage."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from contract.jobs import ImageRecord, JobError, JobErrorType, JobPayload, now
from contract.logs import bind, prompt_digest
from contract.records import JobStore
from contract.storage import LocalStorage, content_type_of, image_key
from worker import metrics
from worker.pipeline import BadOutput, WarmPipeline

log = logging.getLogger(__name__)

Heartbeat = Callable[[], None]


class JobFailed(Exception):
    """A failure that ends the job with a client-facing error (no retry: the input or the output is at fault)."""

    def __init__(self, type_: JobErrorType, message: str) -> None:
        super().__init__(message)
        self.error = JobError(type=type_, message=message)


class Runner:
    """Owns the warm pipeline and executes payloads one at a time."""

    def __init__(self, warm: WarmPipeline, store: JobStore, storage: LocalStorage, model: str, worker_id: str,
                 job_timeout_seconds: int, png_compress_level: int) -> None:
        self.warm, self.store, self.storage = warm, store, storage
        self.model, self.worker_id = model, worker_id
        self.job_timeout_seconds = job_timeout_seconds
        self.png_compress_level = png_compress_level

    def run(self, payload: JobPayload, heartbeat: Heartbeat) -> dict[str, object]:
        """Execute a job to a terminal record; returns a small summary for RQ's result."""
        job_id = payload.job_id
        with bind(job_id=job_id, model=self.model):
            params = payload.params
            if not self.store.mark_running(job_id, self.worker_id, params.num_inference_steps):
                log.info("job no longer runnable (finished or expired); skipped")
                return {"skipped": True}
            started = now()
            metrics.QUEUE_WAIT_SECONDS.labels(self.model).observe(max(0.0, started - payload.created_at))
            log.info("job started", extra={"prompt_sha": prompt_digest(params.prompt), "steps":
                                           params.num_inference_steps, "images": params.num_images})
            metrics.WORKER_BUSY.labels(self.model).set(1)
            try:
                images = self._generate_and_store(payload, heartbeat)
            except JobFailed as exc:
                self._finish_failed(payload, exc.error)
                return {"failed": exc.error.type.value}
            finally:
                metrics.WORKER_BUSY.labels(self.model).set(0)
                self._observe_memory()
            self.store.succeed(job_id, images)
            metrics.JOBS_FINISHED.labels(self.model, "succeeded", "").inc()
            metrics.IMAGES_GENERATED.labels(self.model).inc(len(images))
            metrics.JOB_SECONDS.labels(self.model, "succeeded").observe(now() - payload.created_at)
            log.info("job succeeded", extra={"seconds": round(now() - started, 3)})
            return {"images": len(images)}

    def _generate_and_store(self, payload: JobPayload, heartbeat: Heartbeat) -> list[ImageRecord]:
        params = payload.params
        deadline = time.monotonic() + self.job_timeout_seconds
        timed_out = False
        batch = str(params.num_images if self.warm.settings.batch_images else 1)

        def on_step(done: int, total: int, seconds: float) -> bool:
            nonlocal timed_out
            metrics.STEP_SECONDS.labels(self.model, batch).observe(seconds)
            self.store.set_progress(payload.job_id, done, total)
            heartbeat()
            # RQ's alarm fires late inside long native calls; a step boundary is exact.
            timed_out = time.monotonic() > deadline
            return not timed_out

        started = time.perf_counter()
        try:
            pixels = self.warm.generate(params, on_step)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise JobFailed(JobErrorType.OUT_OF_MEMORY,
                            "the GPU ran out of memory; try fewer images or a smaller size") from None
        except BadOutput as exc:
            raise JobFailed(JobErrorType.BAD_OUTPUT, str(exc)) from None
        except (ValueError, TypeError) as exc:
            # diffusers validates its inputs with ValueError (e.g. a size the model cannot take).
            raise JobFailed(JobErrorType.INVALID_INPUT, f"the pipeline refused the input: {exc}") from None
        if timed_out:
            raise JobFailed(JobErrorType.TIMEOUT, f"the job ran over {self.job_timeout_seconds} s and was stopped")
        metrics.INFERENCE_SECONDS.labels(self.model).observe(time.perf_counter() - started)
        return self._store(payload, pixels, heartbeat)

    def _store(self, payload: JobPayload, pixels: list[np.ndarray], heartbeat: Heartbeat) -> list[ImageRecord]:
        records = []
        try:
            for index, array in enumerate(pixels):
                data = encode_png(array, self.png_compress_level)
                key = image_key(payload.job_id, index, "png")
                self.storage.put(key, data)
                records.append(ImageRecord(key=key, width=array.shape[1], height=array.shape[0],
                                           seed=payload.params.image_seed(index), content_type=content_type_of(key),
                                           bytes=len(data)))
                heartbeat()
        except OSError as exc:
            self.storage.delete_job(payload.job_id)  # never leave a partial set of images
            raise JobFailed(JobErrorType.STORAGE_ERROR, f"storing the images failed: {exc.strerror}") from None
        return records

    def _finish_failed(self, payload: JobPayload, error: JobError) -> None:
        self.store.fail(payload.job_id, error)
        metrics.JOBS_FINISHED.labels(self.model, "failed", error.type.value).inc()
        metrics.JOB_SECONDS.labels(self.model, "failed").observe(now() - payload.created_at)
        log.warning("job failed", extra={"error_type": error.type.value, "error": error.message})

    def _observe_memory(self) -> None:
        for kind, value in self.warm.memory().items():
            metrics.GPU_MEMORY_BYTES.labels(self.model, kind).set(value)


def encode_png(array: np.ndarray, compress_level: int) -> bytes:
    """PNG bytes of an HxWx3 uint8 array."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
