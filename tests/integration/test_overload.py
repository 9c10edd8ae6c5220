"""An API that cannot be starved: waits hold no thread, streams share one Redis reader, both are capped."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from tests.conftest import Stack
from tests.helpers import submit, wait_for

STACK_ENV = {
    "DIFFUSION_MAX_LONG_POLLS": "2",
    "DIFFUSION_MAX_EVENT_STREAMS": "3",
    "DIFFUSION_MAX_INFERENCE_STEPS": "2000",
    "DIFFUSION_SSE_KEEPALIVE_SECONDS": "1",
}
STACK_MODELS = ("tiny-sd",)
OPENAI = "/v1/images/generations"


def long_poll(stack: Stack, results: list[Any], **body: Any) -> threading.Thread:
    def call() -> None:
        try:
            results.append(httpx.post(f"{stack.base}{OPENAI}", json={"prompt": "p", **body}, timeout=120))
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_waiting_requests_are_capped_and_hold_no_thread(stack: Stack) -> None:
    with stack.client() as client:
        blocker = submit(client, num_inference_steps=1500)  # keeps the worker busy: the long-polls wait
        results: list[Any] = []
        threads = [long_poll(stack, results) for _ in range(2)]

        def both_waiting() -> bool:
            queued = client.get("/v1/generations?status=queued").json()["data"]
            return len([j for j in queued if j["id"] != blocker["id"]]) == 2

        # Both long-polls hold their slots before the third asks (the blocker alone is queued at first too:
        # waiting for "any queued job" let the third overtake a long-poll and wait in its place).
        wait_for(both_waiting, 30, "the two long-polls' jobs")
        third = httpx.post(f"{stack.base}{OPENAI}", json={"prompt": "p"}, timeout=10)
        assert third.status_code == 429 and third.headers["retry-after"]
        assert third.json()["error"]["type"] == "rate_limit_exceeded", "OpenAI's error shape"
        started = time.monotonic()
        for _ in range(20):
            assert client.get("/healthz").status_code == 200
            assert client.get(f"/v1/generations/{blocker['id']}").status_code == 200
        assert time.monotonic() - started < 5, "the API answers while requests wait"
        client.post(f"/v1/generations/{blocker['id']}/cancel")
        for thread in threads:
            thread.join(120)
    assert [r.status_code for r in results] == [200, 200]


def test_a_client_that_goes_away_cancels_its_job(stack: Stack) -> None:
    with stack.client() as client:
        blocker = submit(client, num_inference_steps=1500)  # the OpenAI job waits behind it
        impatient = httpx.Client(base_url=stack.base, timeout=httpx.Timeout(10, read=1.5))
        try:
            impatient.post(OPENAI, json={"prompt": "never read", "size": "64x64"})
        except httpx.ReadTimeout:
            impatient.close()  # the client gives up and closes its connection
        job = next(j for j in client.get("/v1/generations").json()["data"] if j["params"]["prompt"] == "never read")
        ended = wait_for(
            lambda: (j := client.get(f"/v1/generations/{job['id']}").json())["status"] != "queued" and j,
            15,
            "the abandoned request's job to end",
        )
        client.post(f"/v1/generations/{blocker['id']}/cancel")
    assert ended["status"] == "canceled" and ended["cancel_reason"] == "client", "nobody would read its images"


def test_streams_are_capped_and_stay_open_past_five_seconds(stack: Stack) -> None:
    with stack.client() as client:
        blocker = submit(client, num_inference_steps=1500)
        queued = submit(client)
        lines: list[list[str]] = [[] for _ in range(3)]

        def follow(index: int) -> None:
            with httpx.stream("GET", f"{stack.base}/v1/generations/{queued['id']}/events", timeout=30) as r:
                for line in r.iter_lines():
                    lines[index].append(line)
                    if '"status":"succeeded"' in line or '"status":"canceled"' in line:
                        return

        threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(3)]
        for thread in threads:
            thread.start()
        wait_for(lambda: all(lines), 10, "three streams open")
        fourth = client.get(f"/v1/generations/{queued['id']}/events")
        assert fourth.status_code == 429 and fourth.json()["error"]["type"] == "overloaded"
        # Idle for longer than redis-py's default 5 s read timeout: keep-alives every second, no error.
        wait_for(lambda: all(sum(ln.startswith(": keep-alive") for ln in got) >= 7 for got in lines), 20, "7 s idle")
        client.post(f"/v1/generations/{blocker['id']}/cancel")
        for thread in threads:
            thread.join(60)
    assert all(any('"status":"succeeded"' in line for line in got) for got in lines)
