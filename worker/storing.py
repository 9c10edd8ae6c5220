"""Encoding and storing off the denoising path: a thread turns a finished batch's pixels into stored images and
ends each job's record, while the main thread already denoises the next batch.

The hand-off is bounded: at most one batch waits to be stored (the main thread blocks before handing
over a second), so memory stays bounded and a slow store slows intake instead of piling up. Each
job's end is written only by the attempt that holds it; an attempt that no longer does deletes the
objects it wrote and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from redis.exceptions import RedisError

from contract.failpoints import failpoint
from contract.jobs import ImageRecord, JobError, JobErrorType, JobPayload, now
from contract.storage import Storage, StorageError, content_type_of, image_key
from worker import metrics
from worker.encoding import encode
from worker.jobrun import JobRun, Stop
from worker.patience import redis_patient

log = logging.getLogger(__name__)

Done = Callable[[str, dict[str, object]], None]  # (job id, summary) once the job's record is final


@dataclass
class Finished:
    """One job of a denoised batch, handed to the store thread."""

    run: JobRun
    pixels: list[np.ndarray] | None = None  # None: stopped or failed before images existed
    error: JobError | None = None
    reproducibility: list[dict[str, Any]] = field(default_factory=list)


class Storer:
    """The store thread of a worker."""

    def __init__(
        self, storage: Storage, model: str, png_level: int, png_metadata: bool, fingerprint: str, on_done: Done
    ) -> None:
        self.storage, self.model, self.on_done = storage, model, on_done
        self.png_level, self.png_metadata, self.fingerprint = png_level, png_metadata, fingerprint
        self._queue: queue.Queue[Sequence[Finished]] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="store", daemon=True)
        self._thread.start()

    def submit(self, batch: Sequence[Finished]) -> None:
        """Hand a batch over; blocks while another one still waits to be stored."""
        self._queue.put(batch)

    def drain(self) -> None:
        """Wait until everything handed over is stored and its records written."""
        self._queue.join()

    def _loop(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                for item in batch:
                    self._finish_safely(item)
            finally:
                self._queue.task_done()

    def _finish_safely(self, item: Finished) -> None:
        summary: dict[str, object] = {"failed": JobErrorType.INTERNAL_ERROR.value}
        started = time.time_ns()
        try:
            summary = redis_patient(lambda: self.finish(item), f"ending job {item.run.job_id}")
        except RedisError:
            log.error("Redis stayed away; the job is left to RQ's recovery", extra={"job_id": item.run.job_id})
        except Exception:  # a bug here must not leave the job running forever
            log.exception("storing a job crashed", extra={"job_id": item.run.job_id})
            with contextlib.suppress(Exception):
                item.run.fail(JobError(type=JobErrorType.INTERNAL_ERROR, message="the worker hit an internal error"))
        item.run.trace.stored(started, summary)
        try:
            redis_patient(lambda: self.on_done(item.run.job_id, summary), f"reporting job {item.run.job_id} to RQ")
        except Exception:
            log.exception("could not report a job's end to RQ", extra={"job_id": item.run.job_id})

    def finish(self, item: Finished) -> dict[str, object]:
        """Write the job's end: its images, or why it stopped or failed."""
        run = item.run
        if run.stop == Stop.CANCELED:
            run.note_canceled()
            self._count(run, "canceled", "client")
            return {"canceled": run.stopped_at}
        if run.stop in (Stop.SUPERSEDED, Stop.GONE):
            log.warning(
                "another attempt holds the job (or it was deleted); nothing stored", extra={"job_id": run.job_id}
            )
            return {run.stop.value: True}
        error = item.error
        if run.stop == Stop.TIMEOUT:
            error = JobError(
                type=JobErrorType.TIMEOUT, message=f"the job ran over {run.timeout_seconds} s and was stopped"
            )
        if error is None and item.pixels is not None:
            try:
                images = self._store(run, item.pixels, item.reproducibility)
            except StorageError as exc:
                error = JobError(type=JobErrorType.STORAGE_ERROR, message=f"the image store failed: {exc}")
            else:
                if run.succeed(images):
                    self._count(run, "succeeded", "", len(images))
                    return {"images": len(images)}
                self._delete_own(run)  # canceled while storing, or superseded: keep nothing
                return {"ended_elsewhere": True}
        assert error is not None
        self._delete_own(run)
        if run.fail(error):
            self._count(run, "failed", error.type.value)
            log.warning("job failed", extra={"job_id": run.job_id, "error_type": error.type.value})
        return {"failed": error.type.value}

    def _store(self, run: JobRun, pixels: list[np.ndarray], records: list[dict[str, Any]]) -> list[ImageRecord]:
        p, images = run.payload.params, []
        for index, (array, reproducibility) in enumerate(zip(pixels, records, strict=True)):
            seed = p.image_seed(index)
            text = self._png_text(run.payload, seed) if self.png_metadata else None
            data = encode(array, p.output_format, p.output_quality, self.png_level, text)
            key = image_key(run.job_id, index, p.output_format, run.attempt)
            run.written.append(key)
            failpoint("store")
            self.storage.put(key, data, content_type_of(key))
            images.append(
                ImageRecord(
                    key=key,
                    width=array.shape[1],
                    height=array.shape[0],
                    seed=seed,
                    content_type=content_type_of(key),
                    bytes=len(data),
                    reproducibility=reproducibility,
                )
            )
        return images

    def _delete_own(self, run: JobRun) -> None:
        for key in run.written:
            try:
                self.storage.delete(key)
            except StorageError:
                log.warning("could not delete an image of a failed attempt", extra={"key": key})

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
            "model_revision": self.fingerprint,
        }

    def _count(self, run: JobRun, outcome: str, reason: str, images: int = 0) -> None:
        metrics.JOBS_FINISHED.labels(self.model, outcome, reason).inc()
        metrics.JOB_SECONDS.labels(self.model, outcome).observe(now() - run.payload.created_at)
        if images:
            metrics.IMAGES_GENERATED.labels(self.model).inc(images)
