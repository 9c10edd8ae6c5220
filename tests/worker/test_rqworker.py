"""The GPU worker runs only the service's job function and keeps RQ's bookkeeping."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from worker.rqworker import GPUWorker, SafeJob


def test_foreign_function_is_refused_without_import(
    redis: Redis, prefix: str, tmp_path: Path, monkeypatch: object
) -> None:
    mark = tmp_path / "imported"
    os.environ["EVIL_MARK"] = str(mark)
    sys.modules.pop("tests.worker.evil_job", None)
    try:
        queue = Queue(f"{prefix}.generate.x", connection=redis, serializer=JSONSerializer)
        job = queue.enqueue("tests.worker.evil_job.run")
        worker = GPUWorker([queue], connection=redis, serializer=JSONSerializer, name=f"{prefix}-w")
        worker.work(burst=True)
        fetched = SafeJob.fetch(job.id, connection=redis, serializer=JSONSerializer)
        assert fetched.get_status() == JobStatus.FAILED
        assert "refusing to run" in (fetched.exc_info or "")
        assert not mark.exists(), "the foreign module was imported"
    finally:
        os.environ.pop("EVIL_MARK", None)


def test_heartbeat_ttl_replaces_timeout_plus_60(redis: Redis, prefix: str) -> None:
    queue = Queue(f"{prefix}.generate.x", connection=redis, serializer=JSONSerializer)
    worker = GPUWorker([queue], connection=redis, serializer=JSONSerializer, heartbeat_ttl=7)
    job = queue.enqueue("worker.tasks.generate", kwargs={"payload": {}}, job_timeout=600)
    assert worker.get_heartbeat_ttl(job) == 7
