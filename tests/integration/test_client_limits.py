"""The client against a full queue (429 with Retry-After) and a job that never starts within the timeout.

The stack's queue holds one job; a long job keeps the only worker busy, so one more job waits queued.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from diffusion_client import APITimeoutError, AsyncDiffusionClient, DiffusionClient, Job, QueueFullError
from tests.conftest import Stack
from tests.helpers import wait_for

STACK_ENV = {
    "DIFFUSION_MAX_INFERENCE_STEPS": "100000",
    "DIFFUSION_MAX_QUEUE_DEPTH": "1",
    "DIFFUSION_QUEUE_FULL_RETRY_AFTER_SECONDS": "1",
    "DIFFUSION_SSE_KEEPALIVE_SECONDS": "0.3",
}
STACK_MODELS = ("tiny-sd",)


@pytest.fixture
def busy(stack: Stack) -> Iterator[tuple[DiffusionClient, Job]]:
    """The worker busy on a long job and one job queued behind it: the queue is full."""
    with DiffusionClient(stack.base) as client:
        running = client.submit("long", num_inference_steps=100000)
        wait_for(lambda: client.get(running.id).status == "running", 30, "the long job to start")
        queued = client.submit("behind it", num_inference_steps=2)
        try:
            yield client, queued
        finally:
            for job in (running, queued):
                if not client.get(job.id).done:
                    client.cancel(job.id)


def test_queue_full_is_typed_and_retried_after_retry_after(busy: tuple[DiffusionClient, Job], stack: Stack) -> None:
    client, queued = busy
    with DiffusionClient(stack.base, max_retries=0) as impatient, pytest.raises(QueueFullError) as full:
        impatient.submit("one too many", num_inference_steps=2)
    assert (full.value.status, full.value.retry_after) == (429, 1.0)

    # Room appears 0.3 s later; the retry must still wait the full Retry-After.
    threading.Timer(0.3, client.cancel, args=(queued.id,)).start()
    started = time.monotonic()
    with DiffusionClient(stack.base, max_retries=3) as patient:
        job = patient.submit("one too many", num_inference_steps=2)
    elapsed = time.monotonic() - started
    assert job.status == "queued"
    assert 1.0 <= elapsed < 3.0, elapsed
    client.cancel(job.id)


def test_wait_honours_its_timeout_while_the_stream_only_sends_keep_alives(
    busy: tuple[DiffusionClient, Job], stack: Stack
) -> None:
    client, queued = busy
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        client.wait(queued.id, timeout=1)
    assert time.monotonic() - started < 2.0
    states = []
    with pytest.raises(TimeoutError):
        for state in client.stream(queued.id, timeout=1):
            states.append(state.status)
    assert states == ["queued"]

    async def wait_async() -> None:
        async with AsyncDiffusionClient(stack.base) as async_client:
            await async_client.wait(queued.id, timeout=1)

    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        asyncio.run(wait_async())
    assert time.monotonic() - started < 2.0
