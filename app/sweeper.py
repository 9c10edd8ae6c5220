"""Housekeeping thread of the API: start deadlines every second, retention every sweep interval.

Deadlines: a queued job whose time-to-start passed is canceled (reason `deadline`) as soon as it
passes, not only when a worker or a client next looks at it. Retention: job records expire in
Redis by themselves (their TTL starts when the job ends); images live on a filesystem with no TTL,
so the sweep removes every job directory older than retention whose record is gone. Redis locks
let one API replica do each at a time.
"""

from __future__ import annotations

import logging
import threading
import time

from app.generations import GenerationService
from contract.jobs import JobStatus, now
from contract.queues import deadlines_key, index_key
from contract.storage import JOB_ID_PATTERN

log = logging.getLogger(__name__)

DEADLINE_TICK_SECONDS = 1.0


class Sweeper:
    """On a daemon thread: `expire_deadlines()` every second, `sweep()` every `interval_seconds`."""

    def __init__(self, service: GenerationService, interval_seconds: int) -> None:
        self.service = service
        self.interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sweeping in the background."""
        self._thread = threading.Thread(target=self._loop, name="retention-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current sweep."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self.interval_seconds
        while not self._stop.wait(DEADLINE_TICK_SECONDS):
            try:
                self.expire_deadlines()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.interval_seconds
                    self.sweep()
            except Exception:  # Redis may be down for a while; try again next time
                log.warning("housekeeping failed", exc_info=True)

    def expire_deadlines(self) -> int:
        """Cancel queued jobs whose start deadline passed; returns how many."""
        service, prefix = self.service, self.service.settings.key_prefix
        if not service.redis.set(f"{prefix}:deadline-lock", "1", nx=True, px=int(DEADLINE_TICK_SECONDS * 900)):
            return 0
        due: list[bytes] = service.redis.zrangebyscore(deadlines_key(prefix), "-inf", now())  # type: ignore[assignment]
        canceled = 0
        for member in due:
            service.redis.zrem(deadlines_key(prefix), member)
            record = service.store.get(member.decode())
            if record is not None and record.status == JobStatus.QUEUED:
                canceled += service.expire(record)
        return canceled

    def sweep(self) -> int:
        """Delete images (and index entries) of jobs past retention; returns how many jobs were removed."""
        service, prefix = self.service, self.service.settings.key_prefix
        if not service.redis.set(f"{prefix}:sweeper-lock", "1", nx=True, ex=max(1, self.interval_seconds)):
            return 0
        cutoff = now() - service.settings.job_retention_seconds
        removed = 0
        expired: list[bytes] = service.redis.zrangebyscore(index_key(prefix), "-inf", cutoff)  # type: ignore[assignment]
        for member in expired:
            job_id = member.decode()
            if service.store.get(job_id) is None:
                service.storage.delete_job(job_id)
                service.redis.zrem(index_key(prefix), job_id)
                removed += 1
        root = service.storage.root
        if root.is_dir():
            for folder in root.iterdir():
                if (
                    JOB_ID_PATTERN.match(folder.name)
                    and folder.stat().st_mtime < cutoff
                    and service.store.get(folder.name) is None
                ):
                    service.storage.delete_job(folder.name)
                    removed += 1
        if removed:
            log.info("retention sweep", extra={"jobs_removed": removed, "at": time.time()})
        return removed
