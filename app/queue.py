"""The API's side of RQ: the only module that touches RQ and its queue keys.

Enqueue (inside the caller's Redis transaction), remove, queue position and depth, the ids of jobs
ahead of one, running and failed jobs, every job RQ knows of (and the re-queue of one it lost), and the
workers registered on a model's queues.
"""

from __future__ import annotations

import contextlib

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry, worker_registration
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from contract.jobs import JobPayload, Priority
from contract.keys import GENERATE_FUNCTION, PRIORITIES, queue_name

# RQ keeps its own job hash only briefly; our record is what clients read.
RQ_RESULT_TTL_SECONDS = 300


class JobQueue:
    """The RQ queues of every model (one per priority), with the JSON serializer (never pickle)."""

    def __init__(
        self, redis: Redis, prefix: str, job_timeout_seconds: int, retries: int, failure_ttl_seconds: int
    ) -> None:
        self.redis, self.prefix = redis, prefix
        self.job_timeout_seconds, self.retries = job_timeout_seconds, retries
        self.failure_ttl_seconds = failure_ttl_seconds

    def _queue(self, model: str, priority: str = Priority.NORMAL) -> Queue:
        return Queue(queue_name(self.prefix, model, priority), connection=self.redis, serializer=JSONSerializer)

    def enqueue(self, payload: JobPayload, priority: Priority, pipe: Pipeline) -> None:
        """Add the job to its model's queue as part of the caller's transaction `pipe`."""
        self._queue(payload.model, priority).enqueue_call(
            GENERATE_FUNCTION,
            kwargs={"payload": payload.model_dump(mode="json")},
            job_id=payload.job_id,
            # The worker enforces the real limit at step boundaries; RQ's alarm is a backstop.
            timeout=self.job_timeout_seconds + 60,
            retry=Retry(max=self.retries) if self.retries else None,
            result_ttl=RQ_RESULT_TTL_SECONDS,
            failure_ttl=self.failure_ttl_seconds,
            description=f"generate model={payload.model}",
            pipeline=pipe,
        )

    def remove(self, job_id: str, model: str, priority: Priority) -> None:
        """Take a job out of its queue and drop RQ's copy (a canceled, expired or deleted job)."""
        self._queue(model, priority).remove(job_id)
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer).delete()

    def depth(self, model: str) -> int:
        """Jobs waiting for a model, all priorities."""
        return sum(self._queue(model, p).count for p in PRIORITIES)

    def position(self, job_id: str, model: str, priority: Priority) -> int | None:
        """Jobs ahead of this one: every job of higher priority, then those ahead in its own queue."""
        own = self._queue(model, priority).get_job_position(job_id)
        if own is None:
            return None
        higher = PRIORITIES[: PRIORITIES.index(priority.value)]
        return own + sum(self._queue(model, p).count for p in higher)

    def heads(self, model: str) -> list[str]:
        """The first job id of each of the model's queues: the oldest waiting job of each priority (a retried job
        re-queued behind newer ones aside)."""
        return [job_id for p in PRIORITIES for job_id in self._queue(model, p).get_job_ids(0, 1)]

    def ahead(self, model: str, priority: Priority, count: int) -> list[str]:
        """Ids of the first `count` jobs a worker of the model takes before a new job of `priority`."""
        ids: list[str] = []
        for level in PRIORITIES[: PRIORITIES.index(priority.value) + 1]:
            if len(ids) >= count:
                break
            ids += self._queue(model, level).get_job_ids(0, count - len(ids))
        return ids[:count]

    def running(self, model: str) -> list[str]:
        """Ids of the model's jobs that workers have started and not finished."""
        ids: list[str] = []
        for priority in PRIORITIES:
            ids += StartedJobRegistry(queue=self._queue(model, priority)).get_job_ids(cleanup=False)
        return ids

    def failed(self, model: str) -> list[str]:
        """Ids of the model's jobs RQ gave up on (a worker died on every retry)."""
        ids: list[str] = []
        for priority in PRIORITIES:
            ids += FailedJobRegistry(queue=self._queue(model, priority)).get_job_ids(cleanup=False)
        return ids

    def forget_failed(self, job_id: str, model: str) -> None:
        """Drop a failed job from RQ once our record says so."""
        for priority in PRIORITIES:
            FailedJobRegistry(queue=self._queue(model, priority)).remove(job_id)
        with contextlib.suppress(NoSuchJobError):
            Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer).delete()

    def known(self, model: str) -> set[str]:
        """Ids of every job RQ holds for the model: waiting in a queue, dequeued (its intermediate lists),
        started, scheduled for a retry, or failed."""
        ids: set[str] = set()
        for priority in PRIORITIES:
            queue = self._queue(model, priority)
            ids.update(queue.get_job_ids())
            ids.update(m.decode() for m in self.redis.lrange(queue.intermediate_queue_key, 0, -1))  # type: ignore[union-attr]
            for registry in (StartedJobRegistry, ScheduledJobRegistry, FailedJobRegistry):
                ids.update(registry(queue=queue).get_job_ids(cleanup=False))
        return ids

    def requeue_front(self, job_id: str, model: str, priority: Priority) -> bool:
        """Put a job RQ lost track of back at the front of its queue (where it was taken from); False when
        RQ's copy of the job is gone."""
        if not Job.exists(job_id, connection=self.redis):
            return False
        self._queue(model, priority).push_job_id(job_id, at_front=True)
        return True

    def ready_workers(self, model: str) -> int:
        """Workers registered on the model's queue (they register only once warm) whose RQ key is alive.

        Read from RQ's registration keys rather than with `Worker.all`: building an RQ `Worker` raises the
        socket timeout of its client's connection pool to the workers' blocking-pop timeout (about 7 min),
        so every later connection of the API's client waited minutes, not seconds, on a frozen Redis."""
        keys = sorted(worker_registration.get_keys(queue=self._queue(model)))
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            return sum(pipe.execute())
