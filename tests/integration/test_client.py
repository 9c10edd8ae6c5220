"""The Python client, sync and async, against the running service (and tiny real servers for failures)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from http.server import BaseHTTPRequestHandler

import pytest
from PIL import Image as PILImage

from diffusion_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncDiffusionClient,
    ConflictError,
    DiffusionClient,
    InvalidRequestError,
    Job,
    NotFoundError,
)
from tests.conftest import Stack
from tests.helpers import free_port, http_server, job_object, send_json

STACK_ENV = {"DIFFUSION_MAX_INFERENCE_STEPS": "2000"}
STACK_MODELS = ("tiny-sd",)


def test_submit_stream_wait_and_download(stack: Stack) -> None:
    with DiffusionClient(stack.base) as client:
        job = client.submit("a red circle", num_inference_steps=8, num_images=2, seed=5)
        states = list(client.stream(job.id))
        assert states[-1].status == "succeeded" and len(states) >= 8
        assert [s.progress.fraction for s in states] == sorted(s.progress.fraction for s in states)
        assert all(s.event_id for s in states), "every streamed state carries its event id"
        polled = client.wait(client.submit("again", num_inference_steps=2).id, poll_interval=0.05)
        assert polled.status == "succeeded"
        final = client.wait(job.id)
        assert [im.seed for im in final.images] == [5, 6]
        assert final.images[0].reproducibility["seed"] == 5
        png = PILImage.open(io.BytesIO(client.download(final.images[1])))
        assert png.size == (64, 64)


def test_stream_resumes_after_an_event_id(stack: Stack) -> None:
    with DiffusionClient(stack.base) as client:
        job = client.generate("a blue square", num_inference_steps=6, seed=1)
        everything = list(client.stream(job.id))
        resumed = list(client.stream(job.id, last_event_id=everything[2].event_id))
    assert [s.event_id for s in resumed] == [s.event_id for s in everything[3:]]
    assert resumed[-1].status == "succeeded"


def test_models_replay_and_typed_errors(stack: Stack) -> None:
    with DiffusionClient(stack.base) as client:
        models = {m.id: m for m in client.models()}
        model = models["tiny-sd"]
        assert (model.ready_workers, model.width, model.height) == (1, 64, 64) and "euler" in model.schedulers
        assert models["tiny-sd3"].ready_workers == 0 and models["tiny-sd3"].width is None
        first = client.generate("a green triangle", num_inference_steps=3, seed=11)
        again = client.wait(client.replay(first.id).id)
        assert again.id != first.id and again.images[0].seed == 11
        assert client.download(again.images[0]) == client.download(first.images[0])
        long = client.submit("long", num_inference_steps=1500)
        assert client.cancel(long.id).status == "canceled"
        with pytest.raises(ConflictError) as conflict:
            client.cancel(long.id)
        assert conflict.value.status == 409 and "canceled" in conflict.value.message
        with pytest.raises(InvalidRequestError) as invalid:
            client.submit("bad", width=13)
        assert (invalid.value.status, invalid.value.param) == (422, "width")
        with pytest.raises(NotFoundError):
            client.get("0" * 32)


def test_async_client_has_the_same_surface(stack: Stack) -> None:
    async def scenario() -> tuple[list[Job], Job, bytes, bytes]:
        async with AsyncDiffusionClient(stack.base) as client:
            assert "tiny-sd" in [m.id for m in await client.models()]
            job = await client.submit("a red circle", num_inference_steps=5, seed=3)
            states = [state async for state in client.stream(job.id)]
            replayed = await client.wait((await client.replay(job.id)).id, timeout=60)
            done = await client.get(job.id)
            with pytest.raises(ConflictError):
                await client.cancel(job.id)
            return states, replayed, await client.download(done.images[0]), await client.download(replayed.images[0])

    states, replayed, original, again = asyncio.run(scenario())
    assert states[-1].status == "succeeded" and states[-1].images[0].seed == 3
    assert replayed.status == "succeeded" and original == again


def test_wait_on_a_dead_server_gives_up_within_its_timeout() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with DiffusionClient(dead) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match="cannot reach"):
            client.wait("0" * 32, timeout=1)
        assert time.monotonic() - started < 2.0
        with pytest.raises(APIConnectionError, match="cannot reach"):
            client.get("0" * 32)

    async def wait_async() -> None:
        async with AsyncDiffusionClient(dead) as client:
            await client.wait("0" * 32, timeout=1)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(wait_async())
    assert time.monotonic() - started < 2.0


class _Silent(BaseHTTPRequestHandler):
    """Accepts the request, then never answers (a hung server or a black-holed proxy)."""

    def do_GET(self) -> None:
        time.sleep(5)

    def log_message(self, *args: object) -> None:
        return


def test_wait_on_a_hung_server_gives_up_within_its_timeout() -> None:
    with http_server(_Silent) as url, DiffusionClient(url) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            client.wait("0" * 32, timeout=1)
        assert time.monotonic() - started < 2.0


class _Dropping(BaseHTTPRequestHandler):
    """An event stream that breaks after two events; the next connection must resume after the second."""

    seen: list[str | None] = []
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def do_GET(self) -> None:
        last = self.headers.get("last-event-id")
        type(self).seen.append(last)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if last is None:
            events = [("1-0", job_object("j", "queued")), ("2-0", job_object("j", "running", 2))]
        else:
            events = [("3-0", job_object("j", "running", 3)), ("4-0", job_object("j", "succeeded", 4))]
        for event_id, job in events:
            self.wfile.write(f": keep-alive\n\nid: {event_id}\ndata: {json.dumps(job)}\n\n".encode())
            self.wfile.flush()

    def log_message(self, *args: object) -> None:
        return


def test_a_dropped_stream_resumes_with_last_event_id() -> None:
    _Dropping.seen = []
    with http_server(_Dropping) as url, DiffusionClient(url) as client:
        states = list(client.stream("j"))
    assert [s.event_id for s in states] == ["1-0", "2-0", "3-0", "4-0"], "every event once, in order"
    assert _Dropping.seen == [None, "2-0"]


class _Recording(BaseHTTPRequestHandler):
    """Records each request's Authorization header; answers with the error `answers` holds for the path."""

    seen: list[tuple[str, str | None]] = []
    answers: dict[str, tuple[int, dict[str, object] | bytes, dict[str, str]]] = {}

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("authorization")))
        status, body, headers = type(self).answers.get(self.path, (200, job_object("j", "queued"), {}))
        if isinstance(body, bytes):  # not JSON: a proxy's page
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            send_json(self, status, body, headers)

    def log_message(self, *args: object) -> None:
        return


def test_api_key_is_sent_as_bearer_and_errors_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion_client import RateLimitedError, UnauthorizedError, UnknownAPIError

    envelope = {"error": {"type": "unauthorized", "message": "unknown API key", "param": None}}
    limited = {"error": {"type": "rate_limited", "message": "quota used up", "param": None}}
    novel = {"error": {"type": "brand_new", "message": "later", "param": None}}
    _Recording.seen = []
    _Recording.answers = {
        "/v1/generations/401": (401, envelope, {"www-authenticate": "Bearer"}),
        "/v1/generations/429": (429, limited, {"retry-after": "120"}),
        "/v1/generations/418": (418, novel, {}),
        "/v1/models": (200, b"<html>captive portal</html>", {}),
    }
    with http_server(_Recording) as url:
        with DiffusionClient(url, api_key="k-arg") as client:
            client.get("j")
            with pytest.raises(UnauthorizedError):
                client.get("401")
            started = time.monotonic()
            with pytest.raises(RateLimitedError) as limited_error:
                client.get("429")
            assert time.monotonic() - started < 1, "a Retry-After past the call's patience is not waited for"
            assert limited_error.value.retry_after == 120
            with pytest.raises(UnknownAPIError) as unknown:
                client.get("418")
            assert (unknown.value.type, unknown.value.status) == ("brand_new", 418)
            with pytest.raises(UnknownAPIError, match="not JSON: <html>captive portal"):
                client.models()
            # An image on another origin (S3, a CDN) never receives the key.
            client.download(url.replace("127.0.0.1", "localhost") + "/image.png")
        monkeypatch.setenv("DIFFUSION_API_KEY", "k-env")
        with DiffusionClient(url) as client:
            client.get("j")
    keys = [key for _, key in _Recording.seen]
    assert keys[:5] == ["Bearer k-arg"] * 5
    assert keys[5:] == [None, "Bearer k-env"]


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 then 429 (Retry-After: 0), then the job; records each attempt's Idempotency-Key."""

    keys: list[str | None] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        type(self).keys.append(self.headers.get("idempotency-key"))
        attempt = len(type(self).keys)
        if attempt == 1:
            send_json(self, 503, {"error": {"type": "service_unavailable", "message": "m"}}, {"retry-after": "0"})
        elif attempt == 2:
            send_json(self, 429, {"error": {"type": "queue_full", "message": "m"}}, {"retry-after": "0"})
        else:
            send_json(self, 202, job_object("x", "queued"))

    def log_message(self, *args: object) -> None:
        return


def test_retried_submits_reuse_one_idempotency_key() -> None:
    _Flaky.keys = []
    with http_server(_Flaky) as url, DiffusionClient(url) as client:
        assert client.submit("p").id == "x"
    assert len(_Flaky.keys) == 3 and len(set(_Flaky.keys)) == 1 and _Flaky.keys[0], "never two jobs"
