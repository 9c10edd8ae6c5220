"""A worker's signals: lost and expired jobs counted once whoever ends them, jobs per batch, and spans that
continue the API's trace (in-process, OpenTelemetry's in-memory exporter on both sides)."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import Redis

from contract.jobs import JobError, JobErrorType, JobPayload, JobRecord, JobStatus
from contract.records import JobStore
from contract.storage import LocalStorage
from contract.tracing import Tracing
from tests.helpers import params, warm
from worker import metrics
from worker.jobrun import JobRun
from worker.pipeline import WarmPipeline
from worker.process import abandoned
from worker.runner import Runner
from worker.settings import WorkerSettings

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


@pytest.fixture(scope="module")
def pipeline(tiny_sd: Path) -> WarmPipeline:
    return warm(tiny_sd)


def traced(exporter: InMemorySpanExporter) -> Tracing:
    """Tracing into `exporter`, synchronously."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider.get_tracer("test"))


def test_batch_spans_continue_each_jobs_trace(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    api_spans, worker_spans = InMemorySpanExporter(), InMemorySpanExporter()
    api, store = traced(api_spans), JobStore(redis, prefix, 60)
    payloads = []
    for _ in range(2):  # what app.jobs does per submit
        with api.span("submit"):
            payloads.append(queued(redis, store, trace=api.carrier()))
    settings = WorkerSettings(worker_id="w1", model_name=MODEL)
    runner = Runner(pipeline, store, LocalStorage(tmp_path), settings, lambda job_id, summary: None)
    runner.tracing = traced(worker_spans)
    batches = count("diffusion_batch_jobs_count")
    jobs = count("diffusion_batch_jobs_sum")
    runner.run(payloads)
    runner.drain()
    assert count("diffusion_batch_jobs_count") == batches + 1 and count("diffusion_batch_jobs_sum") == jobs + 2
    submits = {s.context.trace_id: s for s in api_spans.get_finished_spans()}
    assert len(submits) == 2, "one trace per job"
    by_trace: dict[int, dict[str, object]] = {}
    for span in worker_spans.get_finished_spans():
        parent = submits[span.context.trace_id]
        assert span.parent is not None and span.parent.span_id == parent.context.span_id, span.name
        by_trace.setdefault(span.context.trace_id, {})[span.name] = span
    for spans in by_trace.values():
        assert list(spans) == ["queue_wait", "load", "denoise", "decode", "store"]
        for earlier, later in itertools.pairwise(spans.values()):
            assert earlier.end_time <= later.start_time + 1_000_000, (earlier.name, later.name)  # type: ignore[attr-defined]
        assert spans["denoise"].attributes["diffusion.batch_jobs"] == 2  # type: ignore[attr-defined]
    assert set(by_trace) == set(submits)


def test_without_a_trace_context_the_worker_roots_its_own(
    pipeline: WarmPipeline, redis: Redis, prefix: str, tmp_path: Path
) -> None:
    exporter, store = InMemorySpanExporter(), JobStore(redis, prefix, 60)
    runner = Runner(pipeline, store, LocalStorage(tmp_path), WorkerSettings(worker_id="w1", model_name=MODEL), print)
    runner.tracing = traced(exporter)
    runner.run([queued(redis, store)])
    runner.drain()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"job", "queue_wait", "load", "denoise", "decode", "store"}
    assert {s.parent.span_id for n, s in spans.items() if n != "job"} == {spans["job"].context.span_id}  # type: ignore[union-attr]
    assert spans["job"].parent is None and spans["job"].attributes["diffusion.job_id"]  # type: ignore[index]
