"""The runner's record transitions and failure paths, with a real pipeline, real Redis and real files."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from redis import Redis

from contract.jobs import GenerationParams, JobPayload, JobRecord, JobStatus
from contract.records import JobStore
from contract.storage import LocalStorage
from worker.loading import load, pick_runtime
from worker.pipeline import WarmPipeline
from worker.runner import Runner
from worker.settings import WorkerSettings


@pytest.fixture(scope="module")
def warm(tiny_sd: Path) -> WarmPipeline:
    settings = WorkerSettings(model_source=str(tiny_sd), device="cpu")
    runtime = pick_runtime(settings)
    return WarmPipeline(load(settings, runtime), runtime, settings)


def submit(redis: Redis, store: JobStore, steps: int = 3, images: int = 1) -> JobPayload:
    params = GenerationParams(
        prompt="p", width=64, height=64, num_inference_steps=steps, guidance_scale=5.0, seed=1, num_images=images
    )
    job_id = uuid.uuid4().hex
    record = JobRecord(id=job_id, model="tiny-sd", status=JobStatus.QUEUED, params=params, created_at=time.time())
    with redis.pipeline() as pipe:
        store.create(record, pipe)
        pipe.execute()
    return JobPayload(job_id=job_id, model="tiny-sd", params=params, created_at=record.created_at)


def runner(warm: WarmPipeline, store: JobStore, storage: Path, timeout: int = 60) -> Runner:
    settings = WorkerSettings(worker_id="w1", job_timeout_seconds=max(1, timeout), png_compress_level=1)
    run = Runner(warm, store, LocalStorage(storage), "tiny-sd", settings)
    run.job_timeout_seconds = timeout  # 0: over the deadline after the first step
    return run


def test_success_stores_images_and_ends_record(warm: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store = JobStore(redis, prefix, 120)
    payload = submit(redis, store, images=2)
    beats: list[int] = []
    runner(warm, store, tmp_path).run(payload, lambda: beats.append(1))
    record = store.get(payload.job_id)
    assert record and record.status == JobStatus.SUCCEEDED and record.attempts == 1
    assert [i.seed for i in record.images] == [1, 2]
    assert all((tmp_path / i.key).read_bytes().startswith(b"\x89PNG") for i in record.images)
    assert 0 < redis.ttl(store.key(payload.job_id)) <= 120, "retention starts when the job ends"
    assert len(beats) >= 3, "the RQ heartbeat is driven from every step"


def test_storage_failure_fails_job_without_partial_images(
    warm: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    store = JobStore(redis, prefix, 120)
    payload = submit(redis, store, images=2)
    blocker = tmp_path / "images"
    blocker.write_text("a file where the storage directory should be")
    runner(warm, store, blocker).run(payload, lambda: None)
    record = store.get(payload.job_id)
    assert record and record.status == JobStatus.FAILED
    assert record.error and record.error.type == "storage_error"
    assert record.images == []


def test_deadline_stops_at_a_step_boundary(warm: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store = JobStore(redis, prefix, 120)
    payload = submit(redis, store, steps=50)
    runner(warm, store, tmp_path, timeout=0).run(payload, lambda: None)
    record = store.get(payload.job_id)
    assert record and record.status == JobStatus.FAILED
    assert record.error and record.error.type == "timeout"
    assert record.progress and record.progress.step == 1, "stopped after the first step, not at the end"
    assert not (tmp_path / payload.job_id).exists()


def test_finished_job_is_not_run_again(warm: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store = JobStore(redis, prefix, 120)
    payload = submit(redis, store)
    run = runner(warm, store, tmp_path)
    run.run(payload, lambda: None)
    finished = store.get(payload.job_id)
    assert run.run(payload, lambda: None) == {"skipped": True}
    assert store.get(payload.job_id) == finished
