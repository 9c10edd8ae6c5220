"""The runner's record transitions, batches and failure paths, with a real pipeline, real Redis and real files."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from redis import Redis

from contract.jobs import CancelReason, GenerationParams, JobPayload, JobRecord, JobStatus
from contract.records import JobStore
from contract.storage import LocalStorage
from tests.helpers import wait_for, warm
from worker.pipeline import WarmPipeline
from worker.runner import Runner
from worker.settings import WorkerSettings


@pytest.fixture(scope="module")
def pipeline(tiny_sd: Path) -> WarmPipeline:
    return warm(tiny_sd)


class Ends:
    """What the runner reported for each job (job id -> summary)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, object]] = {}

    def __call__(self, job_id: str, summary: dict[str, object]) -> None:
        self.seen[job_id] = summary


def submit(redis: Redis, store: JobStore, steps: int = 3, images: int = 1, **params: Any) -> JobPayload:
    p = GenerationParams(
        **{
            "prompt": "p",
            "width": 64,
            "height": 64,
            "num_inference_steps": steps,
            "guidance_scale": 5.0,
            "seed": 1,
            "num_images": images,
            **params,
        }
    )
    job_id = uuid.uuid4().hex
    record = JobRecord(id=job_id, model="tiny-sd", status=JobStatus.QUEUED, params=p, created_at=time.time())
    with redis.pipeline() as pipe:
        store.create(record, pipe)
        pipe.execute()
    return JobPayload(job_id=job_id, model="tiny-sd", params=p, created_at=record.created_at)


def runner(pipeline: WarmPipeline, store: JobStore, storage: Path, ends: Ends, timeout: int = 60) -> Runner:
    settings = WorkerSettings(worker_id="w1", png_compress_level=1, model_name="tiny-sd")
    run = Runner(pipeline, store, LocalStorage(storage), settings, ends)
    run.settings = settings.model_copy(update={"job_timeout_seconds": timeout})  # 0: over at the first step
    return run


def pixels(storage: Path, record: JobRecord | None) -> list[np.ndarray]:
    from PIL import Image

    assert record is not None
    return [np.asarray(Image.open(storage / image.key)).astype(int) for image in record.images]


def test_success_stores_images_and_ends_record(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    payload = submit(redis, store, images=2)
    run = runner(pipeline, store, tmp_path, ends)
    run.run([payload])
    run.drain()
    record = store.get(payload.job_id)
    assert record and record.status == JobStatus.SUCCEEDED and record.attempts == 1
    assert [i.seed for i in record.images] == [1, 2]
    assert [i.key.split("/")[1] for i in record.images] == ["0-1.png", "1-1.png"], "keys carry the attempt"
    assert all((tmp_path / i.key).read_bytes().startswith(b"\x89PNG") for i in record.images)
    assert record.images[0].reproducibility["batch_size"] == 2
    assert 0 < redis.ttl(store.key(payload.job_id)) <= 120, "retention starts when the job ends"
    assert ends.seen == {payload.job_id: {"images": 2}}


def test_storage_failure_fails_job_without_partial_images(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    payload = submit(redis, store, images=2)
    blocker = tmp_path / "images"
    blocker.write_text("a file where the storage directory should be")
    run = runner(pipeline, store, blocker, ends)
    run.run([payload])
    run.drain()
    record = store.get(payload.job_id)
    assert record and record.status == JobStatus.FAILED
    assert record.error and record.error.type == "storage_error"
    assert record.images == []
    assert ends.seen[payload.job_id] == {"failed": "storage_error"}


def test_timeout_stops_at_a_step_boundary(pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    payload = submit(redis, store, steps=50)
    run = runner(pipeline, store, tmp_path, ends, timeout=0)
    run.run([payload])
    run.drain()
    record = store.get(payload.job_id)
    assert record and record.status == JobStatus.FAILED
    assert record.error and record.error.type == "timeout"
    assert record.progress and record.progress.step == 1, "stopped after the first step, not at the end"
    assert not (tmp_path / payload.job_id).exists()


def test_finished_job_is_not_run_again(pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    payload = submit(redis, store)
    run = runner(pipeline, store, tmp_path, ends)
    run.run([payload])
    run.drain()
    finished = store.get(payload.job_id)
    run.run([payload])
    run.drain()
    assert ends.seen[payload.job_id] == {"skipped": True}
    assert store.get(payload.job_id) == finished


def test_a_superseded_attempt_writes_nothing(pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    payload = submit(redis, store, steps=400)
    run = runner(pipeline, store, tmp_path, ends)
    thread = threading.Thread(target=lambda: (run.run([payload]), run.drain()))
    thread.start()
    wait_for(lambda: (r := store.get(payload.job_id)) and r.progress and r.progress.step >= 2, 60, "a few steps")
    assert store.mark_running(payload.job_id, "w2", 400) == 2, "another worker took the job for dead"
    thread.join(60)
    record = store.get(payload.job_id)
    assert ends.seen[payload.job_id] == {"superseded": True}
    assert record and record.status == JobStatus.RUNNING and record.worker == "w2" and record.attempts == 2
    assert record.progress and record.progress.step == 0, "the old attempt wrote no progress over the new one's"
    assert not (tmp_path / payload.job_id).exists()


def test_batched_jobs_keep_their_own_images(pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    first = submit(redis, store, images=2, prompt="a red circle", seed=5)
    second = submit(redis, store, images=1, prompt="a blue square", negative_prompt="red", seed=9)
    run = runner(pipeline, store, tmp_path, ends)
    run.run([first, second])
    run.drain()
    together = [pixels(tmp_path, store.get(p.job_id)) for p in (first, second)]
    assert store.get(second.job_id).images[0].reproducibility["batch_size"] == 3  # type: ignore[union-attr]
    alone = []
    for p in (first, second):
        again = submit(
            redis,
            store,
            images=p.params.num_images,
            prompt=p.params.prompt,
            negative_prompt=p.params.negative_prompt,
            seed=p.params.seed,
        )
        run.run([again])
        run.drain()
        alone.append(pixels(tmp_path, store.get(again.job_id)))
    for batched, single in zip(together, alone, strict=True):
        for a, b in zip(batched, single, strict=True):
            assert np.abs(a - b).max() <= 1, "a job's images do not depend on what it was batched with"


def test_canceling_one_job_of_a_batch_leaves_the_other(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    store, ends = JobStore(redis, prefix, 120), Ends()
    # The cancel lands after step 2: 60 steps leave ample margin in steps, whatever the machine's speed.
    steps = 60
    victim = submit(redis, store, steps=steps, prompt="victim", seed=3)
    keeper = submit(redis, store, steps=steps, prompt="keeper", seed=4)
    run = runner(pipeline, store, tmp_path, ends, timeout=600)
    thread = threading.Thread(target=lambda: (run.run([victim, keeper]), run.drain()))
    thread.start()
    wait_for(lambda: (r := store.get(victim.job_id)) and r.progress and r.progress.step >= 2, 60, "a few steps")
    assert store.cancel(victim.job_id, CancelReason.CLIENT)
    canceled_at = store.get(victim.job_id).progress.step  # type: ignore[union-attr]
    thread.join(300)
    stopped, kept = store.get(victim.job_id), store.get(keeper.job_id)
    assert stopped and stopped.status == JobStatus.CANCELED and stopped.images == []
    assert stopped.progress and canceled_at <= stopped.progress.step <= canceled_at + 2 < steps
    assert kept and kept.status == JobStatus.SUCCEEDED and len(kept.images) == 1
    assert not (tmp_path / victim.job_id).exists(), "nothing stored for the canceled job"
