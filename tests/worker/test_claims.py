"""Cross-request batching in the RQ worker: a lone job never waits for a batch to fill, and compatible queued jobs
are claimed into the batch of the one dequeued (the real GPUWorker, Claimer and Runner on real Redis)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from app.queue import JobQueue
from contract.jobs import GenerationParams, JobPayload, JobRecord, JobStatus, Priority
from contract.keys import queue_names
from contract.records import JobStore
from contract.storage import LocalStorage
from tests.helpers import params, wait_for, warm
from worker.claims import Claimer
from worker.pipeline import WarmPipeline
from worker.rqworker import GPUWorker, SafeJob
from worker.runner import Runner
from worker.settings import WorkerSettings

MODEL = "tiny-sd"


@pytest.fixture(scope="module")
def pipeline(tiny_sd: Path) -> WarmPipeline:
    return warm(tiny_sd)


def enqueue(redis: Redis, prefix: str, store: JobStore, p: GenerationParams) -> str:
    """A job queued as the API queues it: its record (with its batch key) and its RQ job in one transaction."""
    job_id, created = uuid.uuid4().hex, time.time()
    record = JobRecord(
        id=job_id, model=MODEL, status=JobStatus.QUEUED, params=p, created_at=created, batch_key=p.batch_key()
    )
    payload = JobPayload(job_id=job_id, model=MODEL, params=p, created_at=created)
    with redis.pipeline(transaction=True) as pipe:
        pipe.multi()
        store.create(record, pipe)
        JobQueue(redis, prefix, 60, 0, 60).enqueue(payload, Priority.NORMAL, pipe)
        pipe.execute()
    return job_id


def batching_worker(redis: Redis, prefix: str, pipeline: WarmPipeline, store: JobStore, images: Path) -> GPUWorker:
    """A worker of MODEL as `worker.process.run` builds it, with cross-request batching on (8 images)."""
    settings = WorkerSettings(worker_id=f"{prefix}-w", model_name=MODEL, max_batch_images=8, png_compress_level=1)
    queues = [
        Queue(name, connection=redis, serializer=JSONSerializer, job_class=SafeJob)
        for name in queue_names(prefix, MODEL)
    ]
    worker = GPUWorker(
        queues,
        connection=redis,
        serializer=JSONSerializer,
        name=settings.worker_id,
        maintenance_interval=1,
        claim=Claimer(redis, prefix, queues, settings.max_batch_images),
    )
    worker.runner = Runner(pipeline, store, LocalStorage(images), settings, on_done=worker.job_done)
    return worker


def test_a_lone_job_starts_at_once_on_an_idle_batching_worker(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    store = JobStore(redis, prefix, 120)
    worker = batching_worker(redis, prefix, pipeline, store, tmp_path)
    submitted: list[str] = []

    def submit_once_idle() -> None:
        # The worker is registered and blocked in its dequeue: nothing else is queued, nothing will be.
        wait_for(lambda: worker.get_state() == "idle", 30, "the worker to wait for jobs", interval=0.01)
        time.sleep(0.2)
        submitted.append(enqueue(redis, prefix, store, params(num_inference_steps=2)))

    helper = threading.Thread(target=submit_once_idle)
    helper.start()
    worker.work(max_jobs=1, max_idle_time=30)  # returns once that job's batch ran and was stored
    helper.join()
    record = store.get(submitted[0])
    assert record is not None and record.status == JobStatus.SUCCEEDED
    assert record.started_at is not None
    # Started on the dequeue itself: had the worker waited for companions to fill its batch of 8, this
    # would be that wait; it is the few Redis round trips of taking the job (milliseconds).
    assert record.started_at - record.created_at < 1.0
    assert [image.reproducibility["batch_size"] for image in record.images] == [1]


def test_compatible_queued_jobs_share_the_batch_of_the_dequeued_one(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    store = JobStore(redis, prefix, 120)
    first = enqueue(redis, prefix, store, params(num_inference_steps=2, seed=1, num_images=2))
    other = enqueue(redis, prefix, store, params(num_inference_steps=3, seed=2))  # another batch key
    third = enqueue(redis, prefix, store, params(num_inference_steps=2, seed=3, prompt="a blue square"))
    batching_worker(redis, prefix, pipeline, store, tmp_path).work(burst=True)
    records = {job_id: store.get(job_id) for job_id in (first, other, third)}
    assert all(r is not None and r.status == JobStatus.SUCCEEDED for r in records.values())
    sizes = {job_id: [i.reproducibility["batch_size"] for i in r.images] for job_id, r in records.items() if r}
    assert sizes == {first: [3, 3], third: [3], other: [1]}, "the compatible job joined the first batch (3 images)"
