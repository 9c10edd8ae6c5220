"""Webhooks to a real receiver on loopback: Standard Webhooks signatures, retries, event filter, no redirects."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from contract.keys import webhook_retry_key
from tests.conftest import Stack
from tests.helpers import free_port, submit, wait_for, wait_status

RAW_SECRET = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(RAW_SECRET).decode()
STACK_ENV = {
    "DIFFUSION_WEBHOOK_SECRET": SECRET,
    "DIFFUSION_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
    "DIFFUSION_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "DIFFUSION_MAX_INFERENCE_STEPS": "2000",
}
STACK_MODELS = ("tiny-sd",)


@dataclass
class Receiver:
    """Records every request; answers each path with the scripted statuses, then 200."""

    port: int
    script: dict[str, list[int]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            arrived = time.time()
            time.sleep(rec.delays.get(self.path, 0))
            statuses = rec.script.get(self.path, [])
            status = statuses.pop(0) if statuses else 200
            rec.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "status": status,
                    "arrived": arrived,
                    "answered": time.time(),
                }
            )
            self.send_response(status)
            if status == 302:
                self.send_header("Location", rec.url("/redirected"))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", rec.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()


def verify(request: dict[str, Any]) -> dict[str, Any]:
    """The Standard Webhooks check, written from the spec: base64 HMAC-SHA256 of `id.timestamp.body`."""
    headers = {k.lower(): v for k, v in request["headers"].items()}
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + request["body"]
    expected = base64.b64encode(hmac.new(RAW_SECRET, signed, hashlib.sha256).digest()).decode()
    assert f"v1,{expected}" in headers["webhook-signature"].split(" ")
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300
    return json.loads(request["body"])  # type: ignore[no-any-return]


def logged(client: httpx.Client, job_id: str, attempts: int) -> dict[str, Any]:
    """The job once its delivery log holds `attempts` entries, the last one final (not `retrying`)."""

    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/generations/{job_id}").json()
        log = job["webhook"]["deliveries"]
        return job if len(log) >= attempts and log[-1]["outcome"] != "retrying" else None

    return wait_for(done, 30, f"{attempts} logged webhook attempts")  # type: ignore[return-value]


def test_completed_webhook_is_signed_and_logged(stack: Stack, receiver: Receiver) -> None:
    with stack.client() as client:
        created = submit(client, webhook_url=receiver.url("/ok"))
        wait_status(client, created["id"], "succeeded")
        job = logged(client, created["id"], 1)
    [request] = receiver.at("/ok")
    payload = verify(request)
    assert payload["type"] == "generation.completed"
    assert payload["data"]["id"] == created["id"] and payload["data"]["status"] == "succeeded"
    assert payload["data"]["images"][0]["url"].startswith("http")
    assert job["webhook"]["events"] == ["completed"]
    assert [d["outcome"] for d in job["webhook"]["deliveries"]] == ["delivered"]


def test_receiver_failing_twice_gets_one_success_with_the_same_id(stack: Stack, receiver: Receiver) -> None:
    receiver.script["/flaky"] = [500, 503]
    with stack.client() as client:
        created = submit(client, webhook_url=receiver.url("/flaky"))
        job = logged(client, created["id"], 3)
    # Delivered: no retry of it is pending, so no further attempt can come.
    assert stack.redis.zcard(webhook_retry_key(stack.prefix)) == 0
    attempts = receiver.at("/flaky")
    assert [a["status"] for a in attempts] == [500, 503, 200]
    assert len({a["headers"]["webhook-id"] for a in attempts}) == 1
    for attempt in attempts:
        verify(attempt)
    assert [d["outcome"] for d in job["webhook"]["deliveries"]] == ["retrying", "retrying", "delivered"]


def test_event_filter_started_progress_completed(stack: Stack, receiver: Receiver) -> None:
    with stack.client() as client:
        created = submit(
            client,
            num_inference_steps=150,
            webhook_url=receiver.url("/all"),
            webhook_events=["started", "progress", "completed"],
        )
        done = wait_status(client, created["id"], "succeeded")
        wait_for(
            lambda: any(verify(r)["type"] == "generation.completed" for r in receiver.at("/all")),
            30,
            "the completed webhook",
        )
    types = [verify(r)["type"] for r in receiver.at("/all")]
    assert types[0] == "generation.started" and types[-1] == "generation.completed"
    progress = [t for t in types if t == "generation.progress"]
    run_seconds = _ts(done["finished_at"]) - _ts(done["started_at"])
    assert 1 <= len(progress) <= run_seconds + 2, "throttled to at most one a second"


def test_slow_receiver_never_slows_generation(stack: Stack, receiver: Receiver) -> None:
    # The receiver stalls 6 s on each delivery; the 4-step job takes well under a second (seconds on a loaded
    # machine), so it can only finish first if delivery never holds up generation.
    receiver.delays["/slow"] = 6.0
    with stack.client() as client:
        created = submit(
            client, num_inference_steps=4, webhook_url=receiver.url("/slow"), webhook_events=["started", "completed"]
        )
        done = wait_status(client, created["id"], "succeeded")
        wait_for(lambda: len(receiver.at("/slow")) >= 2, 30, "both webhooks")
    started = receiver.at("/slow")[0]
    assert _ts(done["finished_at"]) < started["answered"], "the job finished while the receiver still stalled"


def test_redirects_are_not_followed(stack: Stack, receiver: Receiver) -> None:
    receiver.script["/moved"] = [302]
    with stack.client() as client:
        created = submit(client, webhook_url=receiver.url("/moved"))
        wait_status(client, created["id"], "succeeded")
        job = logged(client, created["id"], 1)
    assert stack.redis.zcard(webhook_retry_key(stack.prefix)) == 0, "a 3xx is final: no retry is pending"
    assert receiver.at("/redirected") == []
    assert [(d["outcome"], d["detail"]) for d in job["webhook"]["deliveries"]] == [("failed", "302")]


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
