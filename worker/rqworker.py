"""RQ worker for a warm GPU pipeline: runs jobs in-process, in batches, never losing one and never running one twice.

- In-process (SimpleWorker): CUDA does not survive RQ's fork per job; only our job function runs.
- Batches: the job RQ dequeued, plus compatible jobs claimed atomically from the model's queues
  (`claims.Claimer`), each through RQ's own lifecycle (execution, started registry, heartbeats,
  retries, abandoned-job recovery): a worker killed mid-batch loses none of them.
- Every job RQ hands this worker stays "live" until its record is final, which can be after
  `execute_job` returned (images are stored while the next batch denoises); RQ's bookkeeping of its
  end (`_finalize_success`) then happens on the store thread, under `rq_lock`.
- A heartbeat thread refreshes every live job's started-registry entry for as long as this process
  runs, whatever the job is doing (text encoding, a long decode, a compile, a slow store), so a
  healthy job is never taken for abandoned; the entries lapse `heartbeat_ttl` after the process dies.
  The same thread runs RQ's maintenance while the main thread is busy.
- An idle worker wakes from its dequeue every `maintenance_interval` seconds (RQ's default is
  worker_ttl - 15 s) to re-queue abandoned jobs; `on_abandoned` tells our record what RQ decided.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker, worker_registration
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.queue import Queue
from rq.registry import clean_registries
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

from contract.jobs import JobPayload
from contract.keys import ALLOWED_FUNCTIONS
from worker.failures import EXIT_DEVICE_LOST, DeviceLost
from worker.patience import redis_patient

log = logging.getLogger(__name__)

AbandonedHook = Callable[[str, int], None]  # (job id, retries left), during maintenance
Claim = Callable[[Job, Queue], list[tuple[Job, Queue]]]  # more jobs for the batch of a dequeued one


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


class BatchRunner:
    """What runs a batch of payloads (`worker.runner.Runner`): reports each job's end through `on_done`."""

    def run(self, payloads: Sequence[JobPayload]) -> None:
        """Denoise the batch and hand it on to be stored."""
        raise NotImplementedError

    def drain(self) -> None:
        """Wait until every handed-over job is final."""
        raise NotImplementedError


@dataclass
class Member:
    """A job this worker took from RQ and has not yet reported back."""

    job: Job
    queue: Queue
    execution: Any


class GPUWorker(SimpleWorker):
    """SimpleWorker running batches through a `BatchRunner`, with a heartbeat thread and prompt maintenance."""

    job_class = SafeJob

    def __init__(
        self,
        *args: Any,
        heartbeat_ttl: int = 10,
        on_abandoned: AbandonedHook | None = None,
        claim: Claim | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("job_class", SafeJob)
        super().__init__(*args, **kwargs)
        self.heartbeat_ttl, self.on_abandoned, self.claim = heartbeat_ttl, on_abandoned, claim
        self.runner: BatchRunner | None = None
        self.live: dict[str, Member] = {}
        self.rq_lock = threading.RLock()
        self._beat = Heartbeat(self)
        self.push_exc_handler(self._abandoned)

    @property
    def dequeue_timeout(self) -> int:
        """Seconds an idle worker blocks waiting for a job before it checks for abandoned ones."""
        return max(1, min(int(self.maintenance_interval), self.worker_ttl - 15))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Entries of running jobs expire this long after the last heartbeat."""
        return self.heartbeat_ttl

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, with the heartbeat thread running alongside."""
        self._beat.start()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            self._beat.stop()

    def teardown(self) -> None:
        """Before unregistering: wait until every job handed to the store thread is final."""
        if self.runner is not None:
            self.runner.drain()
        super().teardown()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the dequeued job and the compatible jobs claimed with it as one batch, in this process."""
        members = self._admit_batch(job, queue)
        if not members:
            return
        payloads = [p for p in (self._payload(m) for m in members) if p is not None]
        timeout = max((m.job.timeout or self.queue_class.DEFAULT_TIMEOUT) for m in members)
        try:
            if payloads:
                assert self.runner is not None, "attach a runner before work()"
                runner = self.runner
                with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                    # Redis away (restarting): wait for it, then start the batch again (nothing ran yet:
                    # only starting a job touches Redis before the device does).
                    redis_patient(lambda: runner.run(payloads), f"starting batch of {job.id}")
        except DeviceLost:
            # The CUDA context is corrupt: exit now; the jobs stay started and are re-queued on
            # another worker once their heartbeats lapse, exactly like after a crash.
            log.critical("unrecoverable CUDA error; exiting", exc_info=True)
            os._exit(EXIT_DEVICE_LOST)
        except BaseException:  # a cold shutdown (second SIGTERM) or a bug: RQ retries what is left
            exc_info = sys.exc_info()
            for member in [self.live.pop(m.job.id) for m in members if m.job.id in self.live]:
                with self.rq_lock:
                    self._finalize_failure(member.job, member.queue, member.execution, exc_info)
        self.set_state(WorkerStatus.IDLE)

    def _admit_batch(self, job: Job, queue: Queue) -> list[Member]:
        """The dequeued job and its claimed companions, each registered as started. Redis going away here leaves
        what was not registered in RQ's intermediate lists, which maintenance re-queues (after a minute)."""
        members: list[Member] = []
        try:
            with self.rq_lock:
                members.append(self._admit(job, queue))
                for other, other_queue in self.claim(job, queue) if self.claim is not None else []:
                    members.append(self._admit(other, other_queue))
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("batch cut short: Redis unreachable", extra={"job_id": job.id, "admitted": len(members)})
        return members

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """RQ's worker state (shown by `rq info`); a Redis outage is logged, not fatal."""
        try:
            super().set_state(state, pipeline)
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("worker state not recorded: Redis unreachable", extra={"state": state})

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's `rq suspend` check; with Redis unreachable the worker goes on (its dequeue waits for Redis)."""
        try:
            super().check_for_suspension(burst)
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("suspension not checked: Redis unreachable")

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """RQ's worker heartbeat; a Redis outage is logged, not fatal (the next one retries)."""
        try:
            super().heartbeat(timeout, pipeline)
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("worker heartbeat failed: Redis unreachable")

    def run_maintenance_tasks(self) -> None:
        """RQ's maintenance; a Redis outage is logged, not fatal (the next interval retries)."""
        try:
            super().run_maintenance_tasks()
        except (RedisConnectionError, RedisTimeoutError):
            log.warning("maintenance skipped: Redis unreachable")

    def job_done(self, job_id: str, summary: dict[str, object]) -> None:
        """A job's record is final: RQ's bookkeeping of its success (from whichever thread ended it)."""
        with self.rq_lock:
            member = self.live.pop(job_id, None)
            if member is not None:
                self._finalize_success(member.job, member.queue, member.execution, summary)

    def _admit(self, job: Job, queue: Queue) -> Member:
        execution = self.prepare_execution(job)
        self.prepare_job_execution(job, remove_from_intermediate_queue=True)
        job.started_at = now()
        member = Member(job, queue, execution)
        self.live[job.id] = member
        return member

    def _payload(self, member: Member) -> JobPayload | None:
        try:
            member.job.func  # noqa: B018  (the allow-list check)
            return JobPayload.model_validate(member.job.kwargs["payload"])
        except (UnknownJobFunction, ValidationError, KeyError, TypeError):
            self.live.pop(member.job.id, None)
            with self.rq_lock:
                self._finalize_failure(member.job, member.queue, member.execution, sys.exc_info())
            return None

    def clean_registries(self) -> None:
        """RQ's registry maintenance (abandoned jobs are re-queued or failed here), under a lock that lasts
        one maintenance interval instead of RQ's 15 minutes: a worker killed while holding it must not
        stop everyone else from re-queueing its jobs."""
        for queue in self.queues:
            if self.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=max(2, int(self.maintenance_interval))):
                try:
                    clean_registries(queue, self._exc_handlers)
                    worker_registration.clean_worker_registry(queue)
                    queue.intermediate_queue.cleanup(self, queue)
                finally:
                    queue.release_maintenance_lock()
        self.last_cleaned_at = now()  # type: ignore[assignment]  # RQ declares it None-only

    def _abandoned(self, job: Job, exc_type: type[BaseException], *_: Any) -> bool:
        if exc_type is AbandonedJobError and self.on_abandoned is not None:
            try:
                self.on_abandoned(job.id, job.retries_left or 0)
            except Exception:  # the record is a view of RQ's state: never let it stop the cleanup
                log.warning("could not record an abandoned job", extra={"job_id": job.id}, exc_info=True)
        return True


class Heartbeat:
    """A daemon thread for the worker's life: every quarter TTL it refreshes the heartbeat of every live job,
    and runs RQ's maintenance when it is due."""

    def __init__(self, worker: GPUWorker) -> None:
        self.worker = worker
        self.interval = max(0.5, worker.heartbeat_ttl / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def start(self) -> None:
        """Begin beating."""
        self._thread.start()

    def stop(self) -> None:
        """Stop beating (the process is leaving)."""
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.worker.rq_lock:
                    for member in list(self.worker.live.values()):
                        self.worker.maintain_heartbeats(member.job, member.execution)
                if self.worker.live and self.worker.should_run_maintenance_tasks:
                    self.worker.run_maintenance_tasks()
            except Exception:  # Redis down for a moment: the next beat tries again
                log.warning("heartbeat failed", exc_info=True)
