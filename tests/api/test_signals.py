"""What the API exports about the queue, Redis and lost work: read from a real Redis at scrape time, and still
answered (with `diffusion_redis_up 0`) while Redis is unreachable."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from app import housekeeping
from app.main import create_app
from app.settings import ApiSettings
from contract.jobs import JobErrorType, JobStatus
from contract.keys import queue_name
from contract.records import JobStore
from tests.helpers import RedisServer, free_port, models_file, wait_for

MODEL = "tiny-sd"


def settings(redis_url: str, prefix: str, tmp_path: Path) -> ApiSettings:
    """An API serving MODEL that queues jobs without a ready worker."""
    return ApiSettings(
        redis_url=redis_url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        default_model=MODEL,
        models_file=models_file(tmp_path, 64, MODEL),
        require_ready_worker=False,
    )


def sample(client: TestClient, name: str, **labels: str) -> float | None:
    """One sample of the API's /metrics, or None when it is not exported."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


@pytest.fixture
def client(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(redis_server.url, prefix, tmp_path))) as client:
        yield client


def submit(client: TestClient, **body: object) -> str:
    answer = client.post("/v1/generations", json={"prompt": "a red circle", "num_inference_steps": 2, **body})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def test_queue_gauges_follow_the_queue(client: TestClient, redis: Redis, prefix: str) -> None:
    assert sample(client, "diffusion_redis_up") == 1
    assert sample(client, "diffusion_redis_memory_used_bytes") > 0  # type: ignore[operator]
    assert sample(client, "diffusion_redis_memory_max_bytes") is not None
    assert sample(client, "diffusion_queue_oldest_age_seconds", model=MODEL) == 0
    assert sample(client, "diffusion_jobs_lost_total", model=MODEL) == 0, "counters start at 0"
    first = submit(client, priority="low")
    time.sleep(0.5)
    submit(client, priority="high")
    age = sample(client, "diffusion_queue_oldest_age_seconds", model=MODEL)
    assert age is not None and 0.5 <= age < 30, "the oldest job of any priority, the low one"
    assert sample(client, "diffusion_queue_depth", model=MODEL) == 2
    assert sample(client, "diffusion_jobs_running", model=MODEL) == 0
    # A worker takes the low job: out of its queue, into RQ's started registry.
    queue = Queue(queue_name(prefix, MODEL, "low"), connection=redis, serializer=JSONSerializer)
    queue.remove(first)
    with redis.pipeline() as pipe:
        Execution.create(Job.fetch(first, connection=redis, serializer=JSONSerializer), 60, pipe)
        pipe.execute()
    assert sample(client, "diffusion_jobs_running", model=MODEL) == 1
    assert sample(client, "diffusion_queue_depth", model=MODEL) == 1
    assert sample(client, "diffusion_queue_oldest_age_seconds", model=MODEL) < 0.5  # type: ignore[operator]


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A port that accepts connections and never answers: a Redis that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.mark.parametrize("kind", ["refusing", "hanging"])
def test_a_scrape_answers_redis_down_at_once(kind: str, silent_redis: str, prefix: str, tmp_path: Path) -> None:
    url = silent_redis if kind == "hanging" else f"redis://127.0.0.1:{free_port()}/0"
    with TestClient(create_app(settings(url, prefix, tmp_path))) as client:
        started = time.monotonic()
        text = client.get("/metrics").text
        assert time.monotonic() - started < 2.5, "1 s probe timeout, no retries"
        assert "diffusion_redis_up 0.0" in text
        assert "diffusion_queue_depth" not in text, "no stale or made-up queue numbers"
        assert "process_resident_memory_bytes" in text, "the API's own process metrics"


def test_housekeeping_counts_what_it_ends(client: TestClient, redis: Redis, prefix: str) -> None:
    store = JobStore(redis, prefix, 60)
    expiring = submit(client, deadline_seconds=1)
    wait_for(lambda: sample(client, "diffusion_jobs_deadline_expired_total", model=MODEL) == 1, 10, "the expiry")
    record = store.get(expiring)
    assert record and record.status == JobStatus.CANCELED and record.cancel_reason == "deadline"
    # A job whose worker died on every attempt: RQ moved it to its failed registry.
    lost = submit(client)
    assert store.mark_running(lost, "dead-worker", 2)
    queue = Queue(queue_name(prefix, MODEL), connection=redis, serializer=JSONSerializer)
    queue.remove(lost)
    FailedJobRegistry(queue=queue).add(Job.fetch(lost, connection=redis, serializer=JSONSerializer), 60, "abandoned")
    wait_for(lambda: sample(client, "diffusion_jobs_lost_total", model=MODEL) == 1, 10, "the lost job to be counted")
    record = store.get(lost)
    assert record and record.error and record.error.type == JobErrorType.WORKER_LOST
    time.sleep(1.5)  # more housekeeping ticks: still counted once
    assert sample(client, "diffusion_jobs_lost_total", model=MODEL) == 1
    assert sample(client, "diffusion_jobs_deadline_expired_total", model=MODEL) == 1


def test_a_queued_job_that_rq_lost_goes_back_to_the_front_of_its_queue(
    client: TestClient, redis: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "STRANDED_AFTER_SECONDS", 1.0)
    store = JobStore(redis, prefix, 60)
    lost, taken, waiting = submit(client), submit(client), submit(client)
    queue = Queue(queue_name(prefix, MODEL, "normal"), connection=redis, serializer=JSONSerializer)
    # A worker pops `lost` off the queue (BLPOP) and dies before registering it: in no list, no registry.
    queue.remove(lost)
    # Another takes `taken` properly: in RQ's started registry, so RQ knows where it is.
    queue.remove(taken)
    with redis.pipeline() as pipe:
        Execution.create(Job.fetch(taken, connection=redis, serializer=JSONSerializer), 60, pipe)
        pipe.execute()
    wait_for(lambda: lost in queue.get_job_ids(), 20, "the lost job back in its queue")
    time.sleep(2 * housekeeping.STRANDED_CHECK_SECONDS)  # more looks: nothing else moves
    assert queue.get_job_ids() == [lost, waiting], "at the front, where it was taken from; the started job stays out"
    record = store.get(lost)
    assert record and record.status == JobStatus.QUEUED
