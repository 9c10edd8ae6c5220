"""One attempt of one job on this worker: every record write it makes is fenced with its attempt number.

A job whose worker was taken for dead is run again by another worker as a new attempt. Should the
first worker still be alive (a long pause it could not heartbeat through), the record refuses its
writes (`-2`): it stops, stores nothing in the job's record and deletes only the objects it wrote
itself, so it can never touch the results of the attempt that superseded it.
"""

from __future__ import annotations

import logging
import threading
import time
from enum import Enum

from contract.jobs import CancelReason, ImageRecord, JobError, JobPayload, Progress, Stage, now
from contract.records import JobStore
from worker import metrics
from worker.tracing import NO_TRACE, JobTrace

log = logging.getLogger(__name__)


class Stop(Enum):
    """Why an attempt stops before its images are stored."""

    CANCELED = "canceled"  # a client canceled the job
    SUPERSEDED = "superseded"  # another attempt holds the job now
    GONE = "gone"  # the record no longer exists (deleted)
    TIMEOUT = "timeout"  # its running-time limit passed


class JobRun:
    """The state of one attempt: progress to publish, the reason to stop (if any), the objects it wrote."""

    def __init__(self, payload: JobPayload, store: JobStore, worker_id: str, default_timeout_seconds: int) -> None:
        self.payload, self.store, self.worker_id = payload, store, worker_id
        self.job_id = payload.job_id
        self.attempt = 0
        self.timeout_seconds = min(default_timeout_seconds, payload.timeout_seconds or default_timeout_seconds)
        self.deadline = 0.0
        self.stop: Stop | None = None
        self.stopped_at = 0
        # Progress not yet published, oldest first: a newer step replaces the newest entry unless that one
        # carries a preview (which must ride on the event of its own step).
        self.pending: list[tuple[Progress, str | None]] = []
        self.written: list[str] = []  # storage keys this attempt wrote
        self.started_at = 0.0
        self.trace: JobTrace = NO_TRACE  # its spans (worker.tracing), once started
        self._lock = threading.Lock()

    @property
    def total_steps(self) -> int:
        """Denoising steps the job asked for."""
        return self.payload.params.num_inference_steps

    def start(self) -> bool:
        """Take the job for this attempt; False when it must not run (deadline passed, canceled, ended)."""
        if self.payload.start_by is not None and now() > self.payload.start_by:
            # Time-to-start deadline passed while queued: end it without touching the device.
            if self.store.cancel(self.job_id, CancelReason.DEADLINE, only_queued=True):
                metrics.JOBS_DEADLINE_EXPIRED.labels(self.payload.model).inc()
                log.info("job missed its start deadline; canceled", extra={"job_id": self.job_id})
            return False
        attempt = self.store.mark_running(self.job_id, self.worker_id, self.total_steps)
        if attempt is None:
            log.info("job no longer runnable (canceled, finished or deleted); skipped", extra={"job_id": self.job_id})
            return False
        self.attempt = attempt
        self.started_at = now()
        self.deadline = time.monotonic() + self.timeout_seconds
        return True

    @property
    def active(self) -> bool:
        """Whether the attempt still goes on (not stopped)."""
        return self.stop is None

    def step(self, done: int, total: int, preview: str | None = None) -> bool:
        """A denoising step ended: note the progress for the publisher. False once this job must stop."""
        stage = Stage.DECODING if done >= total else Stage.DENOISING
        self._note(Progress.at(stage, done, total), preview)
        if self.stop is None and time.monotonic() > self.deadline:
            # RQ's alarm fires late inside long native calls; a step boundary is exact.
            self.halt(Stop.TIMEOUT, done)
        return self.stop is None

    def stage(self, stage: Stage) -> None:
        """Note a stage after denoising (storing) for the publisher."""
        self._note(Progress.at(stage, self.total_steps, self.total_steps), None)

    def _note(self, progress: Progress, preview: str | None) -> None:
        with self._lock:
            if self.stop is not None:
                return
            if self.pending and self.pending[-1][1] is None and (preview is None or self.pending[-1][0] == progress):
                self.pending[-1] = (progress, preview)
            else:
                self.pending.append((progress, preview))

    @property
    def has_updates(self) -> bool:
        """Whether progress waits to be published."""
        return bool(self.pending)

    def take_updates(self) -> list[tuple[Progress, str | None]]:
        """The unpublished progress (with previews), oldest first, once."""
        with self._lock:
            updates, self.pending = self.pending, []
            return updates

    def publish(self, progress: Progress, preview: str | None) -> None:
        """Write progress to the record, and learn from its answer whether the job must stop."""
        answer = self.store.set_progress(self.job_id, progress, self.attempt, preview)
        if answer != 1:
            self.halt({-1: Stop.CANCELED, -2: Stop.SUPERSEDED}.get(answer, Stop.GONE), progress.step)

    def halt(self, reason: Stop, step: int) -> None:
        """Stop this attempt at `step` (the first reason wins)."""
        with self._lock:
            if self.stop is None:
                self.stop, self.stopped_at = reason, step

    def succeed(self, images: list[ImageRecord]) -> bool:
        """End the job with its images; False (and nothing written) when the attempt no longer holds the job."""
        return self.store.succeed(self.job_id, images, self.total_steps, self.attempt)

    def fail(self, error: JobError) -> bool:
        """End the job with an error; False when the attempt no longer holds the job."""
        return self.store.fail(self.job_id, error, self.attempt)

    def note_canceled(self) -> None:
        """After a cancel: the step at which this attempt really stopped."""
        self.store.note_stop(self.job_id, Progress.at(Stage.DENOISING, self.stopped_at, self.total_steps), self.attempt)

    def requeued(self) -> None:
        """The worker is going away mid-job (a second SIGTERM): show the job queued for its next attempt."""
        self.store.requeue(self.job_id, self.attempt)
