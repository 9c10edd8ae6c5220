"""RQ worker for a warm GPU pipeline: runs jobs in-process and runs only our job function."""

from __future__ import annotations

import time
from typing import Any

from rq import SimpleWorker
from rq.job import Job

from contract.keys import ALLOWED_FUNCTIONS


class UnknownJobFunction(Exception):
    """A queued job names a function this worker does not run."""


class SafeJob(Job):
    """A job that imports its function only if it is on the allow-list."""

    @property
    def func(self) -> Any:
        """The job's callable; refuses anything but our job function before importing it."""
        if self.func_name not in ALLOWED_FUNCTIONS:
            raise UnknownJobFunction(f"refusing to run {self.func_name!r}: not a function of this service")
        return super().func


class GPUWorker(SimpleWorker):
    """SimpleWorker (no fork: CUDA does not survive one) that heartbeats from the denoising loop.

    SimpleWorker sends no heartbeat during a job, so the job's started-registry entry would only
    expire job_timeout + 60 s after start. Here it lives `heartbeat_ttl` seconds after the last
    step instead, so a killed worker's job is noticed and re-queued within that bound.
    """

    job_class = SafeJob

    def __init__(self, *args: Any, heartbeat_ttl: int = 60, **kwargs: Any) -> None:
        kwargs.setdefault("job_class", SafeJob)
        super().__init__(*args, **kwargs)
        self.heartbeat_ttl = heartbeat_ttl
        self._last_beat = 0.0

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Entries of running jobs expire this long after the last heartbeat."""
        return self.heartbeat_ttl

    def job_heartbeat(self) -> None:
        """Called from the step callback; writes to Redis at most every third of the TTL."""
        now = time.monotonic()
        if now - self._last_beat < self.heartbeat_ttl / 3:
            return
        job, execution = self.get_current_job(), self.execution
        if job is None or execution is None:
            return
        self._last_beat = now
        self.maintain_heartbeats(job, execution)
