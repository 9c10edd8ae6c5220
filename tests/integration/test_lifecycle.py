"""Job lifecycle over real HTTP: SSE progress, cancel, idempotency, priorities, deadlines, listing, deletion."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from contract.records import JobStore
from tests.conftest import Stack
from tests.helpers import job, run_job, sse, submit, unsigned, wait_for, wait_status, wait_step

STACK_ENV = {"DIFFUSION_MAX_INFERENCE_STEPS": "2000", "DIFFUSION_SSE_KEEPALIVE_SECONDS": "0.5"}
STACK_MODELS = ("tiny-sd",)
LONG = 1500  # steps: tens of seconds on the tiny model, so a job stays queued or running while we act


@pytest.fixture
def blocker(stack: Stack) -> Iterator[dict[str, Any]]:
    """A long job occupying the only worker; canceled afterwards so the worker is free for the next test."""
    with stack.client() as client:
        long_job = submit(client, num_inference_steps=LONG)
        wait_step(client, long_job["id"], 1)
        yield long_job
        client.post(f"/v1/generations/{long_job['id']}/cancel")


def test_sse_streams_every_state_and_closes_after_terminal(stack: Stack) -> None:
    with stack.client() as client:
        created = submit(client, num_inference_steps=12)
        events = [e for _, e in sse(client, created["id"])]
    statuses = [e["status"] for e in events]
    assert statuses[0] in ("queued", "running") and statuses[-1] == "succeeded"
    assert statuses.count("succeeded") == 1
    stages = [e["progress"]["stage"] for e in events]
    assert "denoising" in stages and "storing" in stages and stages[-1] == "done"
    fractions = [e["progress"]["fraction"] for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    steps = [e["progress"]["step"] for e in events if e["progress"]["stage"] == "denoising"]
    assert steps == sorted(steps) and len(set(steps)) >= 10, "one event per step"
    assert events[-1]["images"] and events[-1]["images"][0]["url"]
    assert unsigned(events[-1]) == unsigned(job(stack.client(), created["id"])), "SSE and GET: the same object"


def test_sse_reconnect_with_last_event_id_gets_the_terminal_event(stack: Stack) -> None:
    with stack.client() as client:
        created = submit(client, num_inference_steps=120)
        first = sse(client, created["id"], stop_after=3)  # then the client drops
        last_id = first[-1][0]
        rest = sse(client, created["id"], last_event_id=last_id)
    assert rest[0][0] > last_id and all(e[0] != last_id for e in rest), "resumes after the last event seen"
    assert rest[-1][1]["status"] == "succeeded"


def test_a_burst_of_streams_all_open_and_a_resumed_ended_stream_closes_at_once(stack: Stack) -> None:
    # 60 clients open the same job's stream at once (found by benchmarks/soak.py: the event hub's 8-connection
    # pool answered "Too many connections", a 503 or a stream cut after its start).
    with stack.client() as client:
        created = submit(client, num_inference_steps=40)

        async def burst() -> list[list[str]]:
            async with httpx.AsyncClient(base_url=stack.base, timeout=60) as http:

                async def one() -> list[str]:
                    async with http.stream("GET", f"/v1/generations/{created['id']}/events") as response:
                        assert response.status_code == 200, await response.aread()
                        return [line async for line in response.aiter_lines() if line.startswith("id: ")]

                return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(60))), 60)

        streams = asyncio.run(burst())
        assert all(ids and ids[-1] == streams[0][-1] for ids in streams), "every stream ran to the terminal event"
        # An EventSource reconnects after the terminal event, with its id: nothing more, the stream ends.
        resumed = sse(client, created["id"], last_event_id=streams[0][-1][4:])
    assert resumed == []


def test_cancel_queued_job_never_runs(stack: Stack, blocker: dict[str, Any]) -> None:
    store = JobStore(stack.redis, stack.prefix, 3600)
    with stack.client() as client:
        victim, bystander = submit(client, prompt="victim"), submit(client, prompt="bystander")
        response = client.post(f"/v1/generations/{victim['id']}/cancel")
        assert response.status_code == 202
        assert response.json()["status"] == "canceled" and response.json()["cancel_reason"] == "client"
        client.post(f"/v1/generations/{blocker['id']}/cancel")
        assert wait_status(client, bystander["id"], "succeeded")["status"] == "succeeded"
    record = store.get(victim["id"])
    assert record and record.status == "canceled" and record.attempts == 0 and record.started_at is None


def test_cancel_running_job_stops_within_a_step(stack: Stack) -> None:
    store = JobStore(stack.redis, stack.prefix, 3600)
    with stack.client() as client:
        running = submit(client, num_inference_steps=LONG)
        queued_next = submit(client, prompt="next")
        at = wait_step(client, running["id"], 5)["progress"]["step"]
        response = client.post(f"/v1/generations/{running['id']}/cancel")
        assert response.status_code == 202 and response.json()["status"] == "canceled"
        cancel_seen = job(client, running["id"])["progress"]["step"]
        # The worker moves on to the next job once it stopped.
        assert wait_status(client, queued_next["id"], "succeeded")["status"] == "succeeded"
        final = job(client, running["id"])
    record = store.get(running["id"])
    assert final["status"] == "canceled" and final["images"] == []
    assert record and record.progress
    # Stopped at the first step boundary after the cancel: at most one step past what the API saw.
    assert at <= record.progress.step <= cancel_seen + 1 < LONG
    assert not (stack.storage / running["id"]).exists()


def test_cancel_finished_job_is_409(stack: Stack) -> None:
    with stack.client() as client:
        done = run_job(client, {"prompt": "done", "num_inference_steps": 2})
        response = client.post(f"/v1/generations/{done['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "conflict" and "succeeded" in response.json()["error"]["message"]


def test_idempotent_submits_run_once(stack: Stack) -> None:
    body = {"prompt": "once", "num_inference_steps": 3, "seed": 9}
    headers = {"Idempotency-Key": "order-123"}
    results: list[httpx.Response] = []

    def post() -> None:
        with stack.client() as client:
            results.append(client.post("/v1/generations", json=body, headers=headers))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {r.status_code for r in results} == {202}
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in results) == 5
    job_id = results[0].json()["id"]
    with stack.client() as client:
        wait_status(client, job_id, "succeeded")
        again = client.post("/v1/generations", json=body, headers=headers)
        assert again.json()["id"] == job_id and again.json()["status"] == "succeeded"
        other = client.post("/v1/generations", json={**body, "seed": 10}, headers=headers)
        assert other.status_code == 409 and other.json()["error"]["param"] == "Idempotency-Key"
    record = JobStore(stack.redis, stack.prefix, 3600).get(job_id)
    assert record and record.attempts == 1


def test_high_priority_overtakes_queued_normal_jobs(stack: Stack, blocker: dict[str, Any]) -> None:
    with stack.client() as client:
        normal = [submit(client, prompt=f"n{i}") for i in range(3)]
        low = submit(client, prompt="low", priority="low")
        high = submit(client, prompt="high", priority="high")
        assert job(client, high["id"])["queue_position"] == 0
        assert job(client, low["id"])["queue_position"] == 4
        client.post(f"/v1/generations/{blocker['id']}/cancel")
        finished = [wait_status(client, j["id"], "succeeded") for j in (high, *normal, low)]
    started = [j["started_at"] for j in finished]
    assert started == sorted(started), "order: high, then normal in submission order, then low"


def test_deadline_expiry_never_starts_the_job(stack: Stack, blocker: dict[str, Any]) -> None:
    store = JobStore(stack.redis, stack.prefix, 3600)
    with stack.client() as client:
        late = submit(client, deadline_seconds=1)
        assert late["deadline_at"]
        # Canceled by the API's housekeeping as the deadline passes, with nobody asking about it.
        wait_for(
            lambda: (r := store.get(late["id"])) is not None and r.status == "canceled",
            10,
            "the deadline to cancel the job",
            interval=0.1,
        )
        ended = job(client, late["id"])
        assert ended["cancel_reason"] == "deadline"
        client.post(f"/v1/generations/{blocker['id']}/cancel")
        after = submit(client, prompt="after")
        wait_status(client, after["id"], "succeeded")
    record = store.get(late["id"])
    assert record and record.started_at is None and record.attempts == 0


def test_timeout_seconds_stops_a_long_job(stack: Stack) -> None:
    with stack.client() as client:
        ended = run_job(client, {"prompt": "slow", "num_inference_steps": LONG, "timeout_seconds": 1})
    assert ended["status"] == "failed" and ended["error"]["type"] == "timeout"
    assert ended["progress"]["step"] < LONG


def test_list_newest_first_with_status_filter_and_cursor(stack: Stack) -> None:
    with stack.client() as client:
        made = [run_job(client, {"prompt": f"list {i}", "num_inference_steps": 2})["id"] for i in range(3)]
        page = client.get("/v1/generations", params={"limit": 2}).json()
        assert [j["id"] for j in page["data"]] == made[::-1][:2]
        rest = client.get("/v1/generations", params={"limit": 2, "cursor": page["next_cursor"]}).json()
        assert rest["data"][0]["id"] == made[0]
        canceled = client.get("/v1/generations", params={"status": "canceled", "limit": 100}).json()["data"]
        assert all(j["status"] == "canceled" for j in canceled)
        assert client.get("/v1/generations", params={"status": "bogus"}).status_code == 422


def test_delete_removes_job_and_images(stack: Stack) -> None:
    with stack.client() as client:
        done = run_job(client, {"prompt": "delete me", "num_inference_steps": 2})
        assert (stack.storage / done["id"]).is_dir()
        assert client.delete(f"/v1/generations/{done['id']}").status_code == 204
        assert client.get(f"/v1/generations/{done['id']}").status_code == 404
        assert client.get(done["images"][0]["url"]).status_code == 404
        assert not (stack.storage / done["id"]).exists()
        running = submit(client, num_inference_steps=LONG)
        wait_step(client, running["id"], 1)
        assert client.delete(f"/v1/generations/{running['id']}").status_code == 409
        client.post(f"/v1/generations/{running['id']}/cancel")


def test_queued_job_has_an_eta_after_measurements(stack: Stack) -> None:
    with stack.client() as client:
        run_job(client, {"prompt": "measure me", "num_inference_steps": 5})  # the worker measures its step cost
        long_job = submit(client, num_inference_steps=LONG)
        wait_step(client, long_job["id"], 1)
        first, second = submit(client, num_inference_steps=20), submit(client, num_inference_steps=21)
        # The same as the first but for its seed: a worker claims it into the first one's batch, ahead of the second.
        third = submit(client, num_inference_steps=20)
        a, b, c = (job(client, queued["id"]) for queued in (first, second, third))
        client.post(f"/v1/generations/{long_job['id']}/cancel")
    assert a["estimated_start_at"] and b["estimated_start_at"] and c["estimated_start_at"]
    assert a["estimated_start_at"] < b["estimated_start_at"] < b["estimated_finish_at"]
    assert c["estimated_start_at"] < b["estimated_start_at"], "the ETA counts the batch the third job joins"


def test_stream_previews_ride_on_progress_events(stack: Stack) -> None:
    import base64
    import io

    from PIL import Image

    with stack.client() as client:
        created = submit(client, num_inference_steps=10, stream_previews=2)
        events = [e for _, e in sse(client, created["id"])]
    previews = [(e["progress"]["step"], e["preview"]) for e in events if e.get("preview")]
    assert [step for step, _ in previews] == [2, 4, 6, 8]
    header, data = previews[0][1].split(",", 1)
    assert header == "data:image/jpeg;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (32, 32)  # the 64 px model's 32x32 latents
    assert events[-1]["preview"] is None
