"""A store that goes down: the API answers 503 where it needs the store, a running job ends `storage_error`,
nothing hangs, nothing of other jobs is deleted, and everything works again once the store is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import RedisServer, encoded, run_job, wait_status, wait_step
from tests.storage.conftest import MotoServer, S3Stack, keys, start_s3_stack

# A refused connection fails a call in well under a second; the bound below leaves room for a busy VM.
FAST_SECONDS = 5


@dataclass
class Store:
    """This module's own moto server, which the tests stop and start again on the same port."""

    server: MotoServer

    @contextmanager
    def down(self) -> Iterator[None]:
        """The store is stopped inside the block (listener closed, connections dropped), then back, its objects kept."""
        self.server.stop()
        try:
            yield
        finally:
            self.server = MotoServer(self.server.port)
            self.server.start()


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    server = MotoServer()
    server.start()
    holder = Store(server)
    yield holder
    holder.server.stop()


@pytest.fixture(scope="module")
def s3(
    redis_server: RedisServer, store: Store, tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Stack]:
    bucket = f"down-{uuid.uuid4().hex[:12]}"
    store.server.client().create_bucket(Bucket=bucket)
    stack = start_s3_stack(
        tmp_path_factory.mktemp("s3-down"),
        redis_server,
        store.server,
        bucket,
        tiny_sd,
        {"proxy": {}},
        DIFFUSION_STORAGE_TIMEOUT_SECONDS="2",
        DIFFUSION_STORAGE_RETRIES="1",
    )
    yield stack
    stack.stop()


@pytest.fixture
def api(s3: S3Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=s3.base("proxy"), timeout=30) as client:
        yield client


def assert_unavailable(response: httpx.Response, seconds: float) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "service_unavailable"
    assert response.headers["retry-after"] == "5"
    assert seconds < FAST_SECONDS, f"took {seconds:.1f}s"


def test_submit_with_an_input_image_gets_503_and_queues_nothing(store: Store, api: httpx.Client) -> None:
    body = {"prompt": "p", "num_inference_steps": 2, "init_image": encoded(Image.new("RGB", (64, 64)))}
    before = len(api.get("/v1/generations", params={"limit": 100}).json()["data"])
    with store.down():
        started = time.monotonic()
        response = api.post("/v1/generations", json=body, headers={"Idempotency-Key": "outage"})
        assert_unavailable(response, time.monotonic() - started)
    assert len(api.get("/v1/generations", params={"limit": 100}).json()["data"]) == before
    # The Idempotency-Key was released: the same request goes through once the store is back.
    assert api.post("/v1/generations", json=body, headers={"Idempotency-Key": "outage"}).status_code == 202


def test_image_route_and_delete_get_503_then_work_again(store: Store, api: httpx.Client) -> None:
    job = run_job(api, {"prompt": "p", "num_inference_steps": 2})
    url = job["images"][0]["url"]
    with store.down():
        started = time.monotonic()
        assert_unavailable(api.get(url), time.monotonic() - started)
        started = time.monotonic()
        assert_unavailable(api.delete(f"/v1/generations/{job['id']}"), time.monotonic() - started)
        assert api.get(f"/v1/generations/{job['id']}").json()["status"] == "succeeded", "the job was not deleted"
    assert api.get(url).status_code == 200


def test_running_job_ends_storage_error_and_other_jobs_keep_their_images(
    store: Store, s3: S3Stack, api: httpx.Client
) -> None:
    kept = run_job(api, {"prompt": "kept", "num_inference_steps": 2})
    kept_keys = keys(store.server, s3.bucket, f"images/{kept['id']}/")
    assert kept_keys == [f"images/{kept['id']}/0-1.png"]
    long = api.post("/v1/generations", json={"prompt": "long", "num_inference_steps": 50}).json()
    wait_step(api, long["id"], 1)
    with store.down():
        failed = wait_status(api, long["id"], "failed", "succeeded", timeout=90)
        assert failed["status"] == "failed", failed
        assert failed["error"]["type"] == "storage_error"
        assert failed["images"] == []
    assert keys(store.server, s3.bucket, f"images/{kept['id']}/") == kept_keys
    assert keys(store.server, s3.bucket, f"images/{long['id']}/") == []
    # The worker carries on: the next job stores its image.
    assert run_job(api, {"prompt": "after", "num_inference_steps": 2})["status"] == "succeeded"
