"""Runs one job on the warm pipeline: record transitions, progress, step metrics, deadline, encoding, storage."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from contract.jobs import (
    CancelReason,
    GenerationParams,
    ImageRecord,
    JobError,
    JobErrorType,
    JobPayload,
    Progress,
    Stage,
    now,
)
from contract.logs import bind, prompt_digest
from contract.models import StepRates
from contract.records import JobStore
from contract.storage import Storage, StorageError, content_type_of, image_key
from worker import failures, metrics
from worker.encoding import encode, encode_jpeg
from worker.failures import JobFailed
from worker.pipeline import WarmPipeline
from worker.previews import latent_preview
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

Heartbeat = Callable[[], None]
RATE_WEIGHT = 0.3  # weight of the newest job in the moving averages of step cost


class Canceled(Exception):
    """The job was canceled while it ran; it stopped at `step`."""

    def __init__(self, step: int, total: int) -> None:
        super().__init__(f"canceled at step {step}")
        self.progress = Progress.at(Stage.DENOISING, step, total)


class Runner:
    """Owns the warm pipeline and executes payloads one at a time."""

    def __init__(
        self, warm: WarmPipeline, store: JobStore, storage: Storage, model: str, settings: WorkerSettings
    ) -> None:
        self.warm, self.store, self.storage = warm, store, storage
        self.model, self.worker_id = model, settings.worker_id
        self.job_timeout_seconds = settings.job_timeout_seconds
        self.png_compress_level = settings.png_compress_level
        self.png_metadata = settings.png_metadata

    def run(self, payload: JobPayload, heartbeat: Heartbeat) -> dict[str, object]:
        """Execute a job to a terminal record; returns a small summary for RQ's result.

        Raises `failures.DeviceLost` when the device is unusable: the process must exit.
        """
        job_id, params = payload.job_id, payload.params
        with bind(job_id=job_id, model=self.model):
            if payload.start_by is not None and now() > payload.start_by:
                # Time-to-start deadline passed while queued: end it without touching the device.
                if self.store.cancel(job_id, CancelReason.DEADLINE, only_queued=True):
                    log.info("job missed its start deadline; canceled")
                    metrics.JOBS_FINISHED.labels(self.model, "canceled", CancelReason.DEADLINE.value).inc()
                return {"skipped": True}
            if not self.store.mark_running(job_id, self.worker_id, params.num_inference_steps):
                log.info("job no longer runnable (canceled, finished or expired); skipped")
                return {"skipped": True}
            started = now()
            metrics.QUEUE_WAIT_SECONDS.labels(self.model).observe(max(0.0, started - payload.created_at))
            log.info(
                "job started",
                extra={
                    "prompt_sha": prompt_digest(params.prompt),
                    "steps": params.num_inference_steps,
                    "images": params.num_images,
                },
            )
            metrics.WORKER_BUSY.labels(self.model).set(1)
            try:
                images = self._generate_and_store(payload, heartbeat)
            except Canceled as exc:
                self.store.note_stop(job_id, exc.progress)
                metrics.JOBS_FINISHED.labels(self.model, "canceled", CancelReason.CLIENT.value).inc()
                log.info("job canceled while running", extra={"stopped_at_step": exc.progress.step})
                return {"canceled": exc.progress.step}
            except Exception as exc:
                error = failures.classify(exc)  # raises DeviceLost when the process must go
                self._finish_failed(payload, error, exc)
                return {"failed": error.type.value}
            finally:
                metrics.WORKER_BUSY.labels(self.model).set(0)
                self._observe_memory()
            if not self.store.succeed(job_id, images, params.num_inference_steps):
                self.storage.delete_job(job_id)  # canceled while storing: keep nothing
                return {"canceled": params.num_inference_steps}
            metrics.JOBS_FINISHED.labels(self.model, "succeeded", "").inc()
            metrics.IMAGES_GENERATED.labels(self.model).inc(len(images))
            metrics.JOB_SECONDS.labels(self.model, "succeeded").observe(now() - payload.created_at)
            log.info("job succeeded", extra={"seconds": round(now() - started, 3)})
            return {"images": len(images)}

    def _generate_and_store(self, payload: JobPayload, heartbeat: Heartbeat) -> list[ImageRecord]:
        params = payload.params
        timeout = min(self.job_timeout_seconds, payload.timeout_seconds or self.job_timeout_seconds)
        deadline = time.monotonic() + timeout
        timed_out = False
        canceled_at: tuple[int, int] | None = None
        denoise_seconds = 0.0
        batch = str(params.num_images if self.warm.settings.batch_images else 1)

        def on_step(done: int, total: int, seconds: float) -> bool:
            nonlocal timed_out, canceled_at, denoise_seconds
            denoise_seconds += seconds
            metrics.STEP_SECONDS.labels(self.model, batch).observe(seconds)
            stage = Stage.DECODING if done >= total else Stage.DENOISING
            if not self.store.set_progress(payload.job_id, Progress.at(stage, done, total)):
                canceled_at = (done, total)  # the record left `running`: a client canceled it
                return False
            heartbeat()
            # RQ's alarm fires late inside long native calls; a step boundary is exact.
            timed_out = time.monotonic() > deadline
            return not timed_out

        def on_preview(done: int, latents: object) -> None:
            picture = latent_preview(latents)
            if picture is not None:
                data = base64.b64encode(encode_jpeg(picture)).decode()
                progress = Progress.at(Stage.DENOISING, done, params.num_inference_steps)
                self.store.set_progress(payload.job_id, progress, preview=f"data:image/jpeg;base64,{data}")

        started = time.perf_counter()
        pixels = self.warm.generate(params, on_step, on_preview, payload.preview_every or 0, self._inputs(params))
        if canceled_at is not None:
            del pixels
            self.warm.release_memory()
            raise Canceled(*canceled_at)
        if timed_out:
            raise JobFailed(JobErrorType.TIMEOUT, f"the job ran over {timeout} s and was stopped")
        metrics.INFERENCE_SECONDS.labels(self.model).observe(time.perf_counter() - started)
        steps = params.num_inference_steps
        self.store.set_progress(payload.job_id, Progress.at(Stage.STORING, steps, steps))
        images = self._store(payload, pixels, heartbeat)
        self._measure(params, denoise_seconds, time.perf_counter() - started)
        return images

    def _measure(self, params: GenerationParams, denoise_seconds: float, total_seconds: float) -> None:
        """Fold this job's costs into the model's moving averages, which the API turns into ETAs."""
        sample = StepRates.measured(params, denoise_seconds, total_seconds)
        old = StepRates.read(self.store.redis, self.store.prefix, self.model)
        (old.updated(sample, RATE_WEIGHT) if old else sample).save(self.store.redis, self.store.prefix, self.model)

    def _store(self, payload: JobPayload, pixels: list[np.ndarray], heartbeat: Heartbeat) -> list[ImageRecord]:
        records = []
        p = payload.params
        try:
            for index, array in enumerate(pixels):
                seed = p.image_seed(index)
                text = self._png_text(payload, seed) if self.png_metadata else None
                data = encode(array, p.output_format, p.output_quality, self.png_compress_level, text)
                key = image_key(payload.job_id, index, p.output_format)
                self.storage.put(key, data, content_type_of(key))
                records.append(
                    ImageRecord(
                        key=key,
                        width=array.shape[1],
                        height=array.shape[0],
                        seed=seed,
                        content_type=content_type_of(key),
                        bytes=len(data),
                        reproducibility=self.warm.reproducibility(self.model, seed, p.loras),
                    )
                )
                heartbeat()
        except StorageError:
            with contextlib.suppress(StorageError):  # a store that is down: retention removes the rest later
                self.storage.delete_job(payload.job_id)  # never leave a partial set of images
            raise
        return records

    def _inputs(self, params: GenerationParams) -> dict[str, Image.Image]:
        """The job's input images, as the API stored them (already checked there)."""
        found = {}
        for name, key in (("init", params.init_image), ("mask", params.mask_image), ("control", params.control_image)):
            if key is not None:
                with Image.open(io.BytesIO(self.storage.get(key))) as image:
                    found[name] = image.convert("L" if name == "mask" else "RGB")
        return found

    def _png_text(self, payload: JobPayload, seed: int) -> dict[str, str]:
        p = payload.params
        return {
            "prompt": p.prompt,
            "negative_prompt": p.negative_prompt or "",
            "seed": str(seed),
            "steps": str(p.num_inference_steps),
            "guidance_scale": str(p.guidance_scale),
            "scheduler": p.scheduler or "",
            "model": self.model,
            "size": f"{p.width}x{p.height}",
            "model_revision": self.warm.fingerprint,
        }

    def _finish_failed(self, payload: JobPayload, error: JobError, exc: Exception) -> None:
        self.store.fail(payload.job_id, error)
        metrics.JOBS_FINISHED.labels(self.model, "failed", error.type.value).inc()
        metrics.JOB_SECONDS.labels(self.model, "failed").observe(now() - payload.created_at)
        if error.type == JobErrorType.INTERNAL_ERROR:
            log.error("job crashed", exc_info=exc)
        else:
            log.warning("job failed", extra={"error_type": error.type.value, "error": error.message})
        if error.type == JobErrorType.OUT_OF_MEMORY:
            self.warm.release_memory()

    def _observe_memory(self) -> None:
        for kind, value in self.warm.memory().items():
            metrics.GPU_MEMORY_BYTES.labels(self.model, kind).set(value)
