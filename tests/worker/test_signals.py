"""A worker's signals: lost and expired jobs counted once, whoever ends them."""

from __future__ import annotations

import time
import uuid

from redis import Redis

from contract.jobs import JobError, JobErrorType, JobPayload, JobRecord, JobStatus
from contract.records import JobStore
from tests.helpers import params
from worker import metrics
from worker.jobrun import JobRun
from worker.process import abandoned

MODEL = "tiny-sd"


def count(metric: str, **labels: str) -> float:
    """A sample of the worker's registry (0 before its first increment)."""
    return metrics.REGISTRY.get_sample_value(metric, {"model": MODEL, **labels}) or 0.0


def queued(redis: Redis, store: JobStore, **fields: object) -> JobPayload:
    """A queued job's record and its payload."""
    job_id, p = uuid.uuid4().hex, params(num_inference_steps=2)
    record = JobRecord(id=job_id, model=MODEL, status=JobStatus.QUEUED, params=p, created_at=time.time())
    with redis.pipeline() as pipe:
        store.create(record, pipe)
        pipe.execute()
    return JobPayload(job_id=job_id, model=MODEL, params=p, created_at=record.created_at, **fields)  # type: ignore[arg-type]


def test_a_lost_job_is_counted_once_whoever_fails_it(redis: Redis, prefix: str) -> None:
    store, before = JobStore(redis, prefix, 60), count("diffusion_jobs_lost_total")
    first, second = queued(redis, store), queued(redis, store)
    for payload in (first, second):
        assert store.mark_running(payload.job_id, "dead-worker", 2)
    abandoned(store, MODEL, first.job_id, retries_left=0)
    abandoned(store, MODEL, first.job_id, retries_left=0)  # another worker's maintenance, a moment later
    # The API's housekeeping got to the second one first (it counts in its own registry).
    assert store.fail(second.job_id, JobError(type=JobErrorType.WORKER_LOST, message="lost"))
    abandoned(store, MODEL, second.job_id, retries_left=0)
    assert count("diffusion_jobs_lost_total") == before + 1
    assert store.get(first.job_id).error.type == JobErrorType.WORKER_LOST  # type: ignore[union-attr]


def test_a_job_dequeued_past_its_deadline_is_counted_once(redis: Redis, prefix: str) -> None:
    store, before = JobStore(redis, prefix, 60), count("diffusion_jobs_deadline_expired_total")
    payload = queued(redis, store, start_by=time.time() - 1)
    assert not JobRun(payload, store, "w1", 60).start()
    assert not JobRun(payload, store, "w2", 60).start()  # dequeued again (a retry): already canceled
    assert count("diffusion_jobs_deadline_expired_total") == before + 1
    assert store.get(payload.job_id).cancel_reason == "deadline"  # type: ignore[union-attr]
