"""Housekeeping thread of the API: the writes no client request makes.

Every second: queued jobs whose time-to-start passed are canceled (reason `deadline`), and jobs RQ
gave up on (a worker died on every retry) are failed with `worker_lost`. Every few seconds: queued jobs
that RQ lost track of are put back at the front of their queue (see `rescue_stranded`). Every sweep interval:
retention. Job records expire in Redis by themselves (their TTL starts when the job ends); stored
images do not, so the sweep deletes every job's objects once its record is gone. A Redis lock per
task lets one API replica run it at a time.
"""

from __future__ import annotations

import logging
import threading
import time

from app.jobs import JobService
from app.metrics import ApiMetrics
from contract.jobs import JobError, JobErrorType, JobStatus, now
from contract.keys import active_jobs_key, deadlines_key, index_key, lock_key

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# A queued job missing from every RQ list and registry this long, over several looks, was lost by a worker
# that died between taking it and registering it (milliseconds apart): it is re-queued.
STRANDED_AFTER_SECONDS = 10.0
STRANDED_CHECK_SECONDS = 3.0


class Housekeeping:
    """On a daemon thread: `tick()` every second, `sweep()` every `interval_seconds`."""

    def __init__(self, jobs: JobService, models: list[str], interval_seconds: int, metrics: ApiMetrics) -> None:
        self.jobs, self.models, self.interval_seconds = jobs, models, interval_seconds
        self.metrics = metrics  # counts the jobs it ends: lost, deadline expired
        self.redis, self.prefix = jobs.redis, jobs.settings.key_prefix
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._missing: dict[str, float] = {}  # queued job id -> when it was first seen missing from RQ

    def start(self) -> None:
        """Start in the background."""
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current task."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self.interval_seconds
        while not self._stop.wait(TICK_SECONDS):
            try:
                self.tick()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.interval_seconds
                    self.sweep()
            except Exception:  # Redis may be down for a while; try again next time
                log.warning("housekeeping failed", exc_info=True)

    def _lock(self, task: str, milliseconds: int) -> bool:
        return bool(self.redis.set(lock_key(self.prefix, task), "1", nx=True, px=milliseconds))

    def tick(self) -> int:
        """The per-second tasks (one replica at a time); returns how many jobs they ended."""
        if not self._lock("tick", int(TICK_SECONDS * 900)):
            return 0
        ended = self.expire_deadlines() + self.fail_lost()
        if self._lock("stranded", int(STRANDED_CHECK_SECONDS * 1000)):
            self.rescue_stranded()
        return ended

    def expire_deadlines(self) -> int:
        """Cancel queued jobs whose start deadline passed; returns how many."""
        due: list[bytes] = self.redis.zrangebyscore(deadlines_key(self.prefix), "-inf", now())  # type: ignore[assignment]
        canceled = 0
        for member in due:
            self.redis.zrem(deadlines_key(self.prefix), member)
            record = self.jobs.store.get(member.decode())
            if record is not None and record.status == JobStatus.QUEUED and self.jobs.expire(record):
                self.metrics.jobs_deadline_expired.labels(record.model).inc()
                canceled += 1
        return canceled

    def fail_lost(self) -> int:
        """Fail the jobs RQ gave up on after their worker died on every retry; returns how many."""
        error = JobError(
            type=JobErrorType.WORKER_LOST, message="the worker running this job stopped and its retries are exhausted"
        )
        failed = 0
        for model in self.models:
            for job_id in self.jobs.queue.failed(model):
                if self.jobs.store.fail(job_id, error):  # False: a worker's maintenance failed (and counted) it
                    self.metrics.jobs_lost.labels(model).inc()
                    failed += 1
                    log.warning("job lost its worker on every attempt", extra={"job_id": job_id, "model": model})
                self.jobs.queue.forget_failed(job_id, model)
        return failed

    def rescue_stranded(self) -> int:
        """Re-queue queued jobs that RQ lost track of; returns how many.

        A worker listening on several queues (a model's priorities) takes a job with `BLPOP` and then
        registers it as started: a worker killed between the two leaves the job in no queue and no registry,
        its record `queued` for ever. A job counts as stranded when it was queued before the grace period
        and stayed missing from every RQ list and registry for `STRANDED_AFTER_SECONDS` of looks (a job
        that is merely passing from a queue to a worker shows up again at the next look).
        """
        queue, store = self.jobs.queue, self.jobs.store
        cutoff = now() - STRANDED_AFTER_SECONDS
        ids = [m.decode() for m in self.redis.zrangebyscore(index_key(self.prefix, status="queued"), "-inf", cutoff)]  # type: ignore[union-attr]
        records = [r for r in store.get_many(ids) if r is not None and r.status == JobStatus.QUEUED]
        known: dict[str, set[str]] = {}
        seen, missing, rescued = time.monotonic(), set(), 0
        for record in records:
            if record.model not in known:
                known[record.model] = queue.known(record.model)
            if record.id in known[record.model]:
                continue
            missing.add(record.id)
            if seen - self._missing.setdefault(record.id, seen) < STRANDED_AFTER_SECONDS:
                continue
            missing.discard(record.id)
            if queue.requeue_front(record.id, record.model, record.priority):
                rescued += 1
                log.warning(
                    "queued job was in no RQ queue or registry (its worker died taking it); re-queued",
                    extra={"job_id": record.id, "model": record.model},
                )
            elif store.fail(record.id, JobError(type=JobErrorType.WORKER_LOST, message="its queue entry was lost")):
                self.metrics.jobs_lost.labels(record.model).inc()
        self._missing = {job_id: at for job_id, at in self._missing.items() if job_id in missing}
        return rescued

    def sweep(self) -> int:
        """Delete the objects and index entries of jobs past retention; returns how many jobs were removed."""
        if not self._lock("sweep", max(1, self.interval_seconds) * 1000):
            return 0
        cutoff = now() - self.jobs.settings.job_retention_seconds
        store, gone = self.jobs.store, set()
        # Every listing index (all jobs, per owner, per status): entries whose record expired go.
        for key in self.redis.scan_iter(match=f"{index_key(self.prefix)}*", _type="ZSET"):
            ids = [m.decode() for m in self.redis.zrangebyscore(key, "-inf", cutoff)]  # type: ignore[union-attr]
            stale = [job_id for job_id, record in zip(ids, store.get_many(ids), strict=True) if record is None]
            if stale:
                self.redis.zrem(key, *stale)
                gone.update(stale)
        # Objects of jobs the indexes no longer know (e.g. an API that died between storing inputs and queueing).
        gone.update(job_id for job_id in self.jobs.storage.jobs_older_than(cutoff) if store.get(job_id) is None)
        for job_id in gone:
            self.jobs.storage.delete_job(job_id)
        self._prune_active()
        if gone:
            log.info("retention sweep", extra={"jobs_removed": len(gone)})
        return len(gone)

    def _prune_active(self) -> None:
        """Drop jobs that are no longer queued or running from the per-key active sets (quota counts)."""
        for key in self.redis.scan_iter(match=f"{active_jobs_key(self.prefix, '')}*", _type="SET"):
            ids = [m.decode() for m in self.redis.smembers(key)]  # type: ignore[union-attr]
            ended = [
                i for i, r in zip(ids, self.jobs.store.get_many(ids), strict=True) if r is None or r.status.terminal
            ]
            if ended:
                self.redis.srem(key, *ended)
