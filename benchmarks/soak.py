"""Soak: N jobs from C concurrent clients against the real stack, then the API under long-polls and streams.

`python benchmarks/soak.py [--jobs 5000] [--clients 16] [--steps 2]` (`make soak`) starts a private
redis-server with the shipped config (AOF), the API and two workers on the embedded `shapes` model, all
on this machine, and prints:

- accepted jobs, 429s (the client waits the Retry-After and sends the same job again), 5xx, transport errors;
- submit latency p50/p99, and the p99 of GETs of accepted jobs made while the submissions go on;
- /healthz p50/p99 while `--long-polls` OpenAI-style requests (POST /v1/images/generations, each waiting for
  its job) and `--streams` event streams are open at once;
- once everything ended: lost (an accepted job that did not end, or whose record is gone) and duplicated
  (more than one terminal event, or more stored images than asked for) jobs, and re-run ones (attempts > 1).

Every request goes to 127.0.0.1; every loop is bounded in count and time. Goals (issue 11): 0 lost,
0 duplicated, 0 5xx; submit p99 < 50 ms with the workers busy; /healthz p99 < 100 ms under the long-polls
and streams. docs/benchmarks.md ("Soak") records the figures with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.records import JobStore
from tests.helpers import RedisServer, Service, start_api, start_worker, wait_ready

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "worker" / "models" / "shapes"
MODEL = "shapes"


def pct(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float], q: float) -> str:
    """The q-quantile in milliseconds, for printing."""
    return f"{pct(values, q) * 1e3:.1f} ms"


@dataclass
class Tally:
    """What the clients saw."""

    accepted: list[str] = field(default_factory=list)
    submit_seconds: list[float] = field(default_factory=list)
    get_seconds: list[float] = field(default_factory=list)
    too_many: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def saw(self, status: int) -> None:
        """Count a response status."""
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500:
            self.server_errors += 1


@dataclass
class Stack:
    """The processes under test."""

    redis_server: RedisServer
    api: Service
    workers: list[Service]
    prefix: str
    storage: Path

    @property
    def base(self) -> str:
        """The API's base URL."""
        return f"http://127.0.0.1:{self.api.port}"

    def stop(self) -> None:
        """Stop everything."""
        for service in [*self.workers, self.api]:
            service.stop()
        self.redis_server.stop()


def start_stack(tmp: Path) -> Stack:
    """Redis (shipped config), the API and two workers on the embedded model, each warm."""
    redis_server = RedisServer(tmp / "redis", shipped_config=True).start()
    prefix = f"soak{uuid.uuid4().hex[:6]}"
    env = {
        "REDIS_URL": redis_server.url,
        "DIFFUSION_KEY_PREFIX": prefix,
        "DIFFUSION_STORAGE_URL": str(tmp / "images"),
        "DIFFUSION_URL_SIGNING_SECRET": "soak",
        "DIFFUSION_DEFAULT_MODEL": MODEL,
    }
    workers = []
    for name in ("w1", "w2"):
        worker_env = {**env, "DIFFUSION_WORKER_ID": f"{prefix}-{name}", "DIFFUSION_CPU_THREADS": "1"}
        workers.append(start_worker(SHAPES, worker_env, tmp / f"{name}.log", name=MODEL))
    api = start_api(env, tmp / "api.log")
    redis = Redis.from_url(redis_server.url)
    for name, worker in zip(("w1", "w2"), workers, strict=True):
        wait_ready(worker, redis, f"{prefix}.generate.{MODEL}", f"{prefix}-{name}")
    return Stack(redis_server, api, workers, prefix, tmp / "images")


async def client_loop(http: httpx.AsyncClient, jobs: list[int], steps: int, tally: Tally, deadline: float) -> None:
    """One client: submit its jobs one after another (waiting out 429s), and after each accepted one GET a
    job it submitted before (what a polling client does while the service is loaded)."""
    own: list[str] = []
    for index in jobs:
        body = {"prompt": f"a red circle {index}", "num_inference_steps": steps, "seed": index}
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await http.post("/v1/generations", json=body)
            except httpx.HTTPError:
                tally.transport_errors += 1
                await asyncio.sleep(1)
                continue
            tally.saw(response.status_code)
            if response.status_code == 202:
                tally.submit_seconds.append(time.perf_counter() - started)
                own.append(response.json()["id"])
                tally.accepted.append(own[-1])
                break
            if response.status_code == 429:
                tally.too_many += 1
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                continue
            await asyncio.sleep(1)  # 5xx or an unexpected 4xx: counted; try the same job again
        if own:
            started = time.perf_counter()
            try:
                response = await http.get(f"/v1/generations/{random.choice(own)}")
                tally.saw(response.status_code)
                tally.get_seconds.append(time.perf_counter() - started)
            except httpx.HTTPError:
                tally.transport_errors += 1


async def load(base: str, jobs: int, clients: int, steps: int, tally: Tally, limit_seconds: float) -> float:
    """All clients at once; returns the wall-clock seconds they took."""
    deadline = time.monotonic() + limit_seconds
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        started = time.monotonic()
        shares = [list(range(c, jobs, clients)) for c in range(clients)]
        await asyncio.gather(*(client_loop(http, share, steps, tally, deadline) for share in shares))
        return time.monotonic() - started


async def stream(http: httpx.AsyncClient, job_id: str, opened: asyncio.Event, ends: list[str], seen: set[str]) -> None:
    """Follow a job's events until the stream closes; `opened` is set at its first event (or its end), and the
    last status seen goes to `ends`."""
    last = ""
    try:
        async with http.stream("GET", f"/v1/generations/{job_id}/events") as response:
            if response.status_code != 200:
                last = f"http {response.status_code}"
            else:
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        last = json.loads(line[6:])["status"]
                        seen.add(job_id)
                        opened.set()
    except httpx.HTTPError as exc:
        last = f"{last or 'no event'}, then {type(exc).__name__}"
    opened.set()
    ends.append(last)


async def long_poll(http: httpx.AsyncClient, index: int, results: list[tuple[int, str]]) -> None:
    """One OpenAI-style request; records its status and the job id in its image URL."""
    try:
        response = await http.post("/v1/images/generations", json={"prompt": f"a blue square {index}"})
    except httpx.HTTPError as exc:
        results.append((0, type(exc).__name__))
        return
    job_id = ""
    if response.status_code == 200:
        job_id = response.json()["data"][0]["url"].split("/v1/images/")[1].split("/")[0]
    results.append((response.status_code, job_id))


async def held_open(
    base: str, stack: Stack, streams: int, long_polls: int, blocker_steps: int, samples: int, tally: Tally
) -> dict[str, Any]:
    """Open `streams` event streams on busy jobs and `long_polls` waiting requests; time /healthz meanwhile."""
    limits = httpx.Limits(max_connections=streams + long_polls + 20, max_keepalive_connections=streams + 20)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        blockers = []
        for index in range(streams):  # jobs long enough to keep both workers busy while we measure
            body = {"prompt": f"a green triangle {index}", "num_inference_steps": blocker_steps, "seed": index}
            response = await http.post("/v1/generations", json=body)
            tally.saw(response.status_code)
            if response.status_code == 202:
                blockers.append(response.json()["id"])
        tally.accepted += blockers
        opened = [asyncio.Event() for _ in blockers]
        ends: list[str] = []
        seen: set[str] = set()
        results: list[tuple[int, str]] = []
        tasks = [asyncio.create_task(stream(http, j, e, ends, seen)) for j, e in zip(blockers, opened, strict=True)]
        tasks += [asyncio.create_task(long_poll(http, i, results)) for i in range(long_polls)]
        started = time.monotonic()
        await asyncio.wait(
            [asyncio.create_task(e.wait()) for e in opened], timeout=120, return_when=asyncio.ALL_COMPLETED
        )
        opening = time.monotonic() - started
        streamed = len(seen)
        waiting = await wait_long_polls(stack, long_polls)
        healthz: list[float] = []
        for _ in range(samples):
            started = time.perf_counter()
            response = await http.get("/healthz")
            healthz.append(time.perf_counter() - started)
            tally.saw(response.status_code)
            await asyncio.sleep(0.01)
        still_open = len(blockers) - len(ends)
        polls_open = long_polls - len(results)
        await asyncio.wait_for(asyncio.gather(*tasks), 900)
    for status, _ in results:
        tally.saw(status)
    tally.accepted += [job_id for status, job_id in results if status == 200]
    return {
        "opening_seconds": opening,
        "streams_started": streamed,
        "healthz": healthz,
        "streams_open": still_open,
        "long_polls_open": polls_open,
        "long_polls_queued": waiting,
        "stream_ends": ends,
        "long_poll_statuses": [s for s, _ in results],
    }


async def wait_long_polls(stack: Stack, count: int) -> int:
    """Wait (up to 30 s) until the long-polls' jobs are queued: the jobs whose prompt is theirs."""
    redis = Redis.from_url(stack.redis_server.url)
    store = JobStore(redis, stack.prefix, 3600)
    deadline = time.monotonic() + 30
    found = 0
    while time.monotonic() < deadline:
        ids = [m.decode() for m in redis.zrevrange(f"{stack.prefix}:jobs", 0, count * 2)]  # type: ignore[union-attr]
        found = sum(1 for r in store.get_many(ids) if r and r.params.prompt.startswith("a blue square"))
        if found >= count:
            break
        await asyncio.sleep(0.2)
    return found


def drain(stack: Stack, job_ids: list[str], limit_seconds: float) -> dict[str, int]:
    """Wait until every accepted job ended (or the limit); then count lost, duplicated and re-run jobs."""
    redis = Redis.from_url(stack.redis_server.url)
    store = JobStore(redis, stack.prefix, 3600)
    deadline = time.monotonic() + limit_seconds
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        chunk = list(pending)[:2000]
        for job_id, record in zip(chunk, store.get_many(chunk), strict=True):
            if record is None or record.status.terminal:
                pending.discard(job_id)
        if pending:
            time.sleep(1)
    counts = {"lost": 0, "duplicated": 0, "rerun": 0, "failed": 0}
    for start in range(0, len(job_ids), 1000):
        chunk = job_ids[start : start + 1000]
        for job_id, record in zip(chunk, store.get_many(chunk), strict=True):
            if record is None or not record.status.terminal:
                counts["lost"] += 1
                continue
            counts["failed"] += record.status.value != "succeeded"
            counts["rerun"] += record.attempts > 1
            events = redis.xrange(store.events(job_id))
            terminal = sum(1 for _, f in events if json.loads(f[b"state"])["status"] in ("succeeded", "failed"))  # type: ignore[union-attr]
            folder = stack.storage / job_id
            stored = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
            counts["duplicated"] += terminal > 1 or stored > record.params.num_images
    return counts


def machine() -> str:
    """Cores and load average, for the record."""
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{os.cpu_count()} cores, load average {load}"


def main() -> None:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of the soak's jobs")
    parser.add_argument("--long-polls", type=int, default=60)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--blocker-steps", type=int, default=60, help="steps of the jobs the streams follow")
    parser.add_argument("--healthz-samples", type=int, default=300)
    parser.add_argument("--limit-seconds", type=float, default=1800, help="bound on each phase")
    parser.add_argument("--workdir", type=Path, help="keep Redis's data, images and the processes' logs here")
    args = parser.parse_args()
    print(f"machine: {machine()} (before start)")
    with tempfile.TemporaryDirectory() as tmp_dir:
        workdir = args.workdir or Path(tmp_dir)
        print(f"logs: {workdir}")
        stack = start_stack(workdir)
        try:
            tally = Tally()
            seconds = asyncio.run(load(stack.base, args.jobs, args.clients, args.steps, tally, args.limit_seconds))
            print(f"machine: {machine()} (after the submissions)")
            print(
                f"submissions: {args.jobs} jobs of {args.steps} steps from {args.clients} clients in {seconds:.1f} s: "
                f"accepted {len(tally.accepted)}, 429s {tally.too_many}, 5xx {tally.server_errors}, "
                f"transport errors {tally.transport_errors}; submit p50 {ms(tally.submit_seconds, 0.5)}, "
                f"p99 {ms(tally.submit_seconds, 0.99)}; GET while loaded p50 {ms(tally.get_seconds, 0.5)}, "
                f"p99 {ms(tally.get_seconds, 0.99)} ({len(tally.get_seconds)} GETs)"
            )
            held = asyncio.run(
                held_open(
                    stack.base,
                    stack,
                    args.streams,
                    args.long_polls,
                    args.blocker_steps,
                    args.healthz_samples,
                    tally,
                )
            )
            print(f"machine: {machine()} (after the long-polls)")
            print(
                f"{held['streams_started']} of {args.streams} event streams had their first event after "
                f"{held['opening_seconds']:.1f} s; "
                f"/healthz with {held['streams_open']} of {args.streams} event streams and "
                f"{held['long_polls_open']} of {args.long_polls} long-polls open "
                f"({held['long_polls_queued']} of their jobs seen queued): "
                f"p50 {ms(held['healthz'], 0.5)}, p99 {ms(held['healthz'], 0.99)}, max {ms(held['healthz'], 1)} "
                f"({len(held['healthz'])} requests); streams ended on "
                f"{dict((s, held['stream_ends'].count(s)) for s in set(held['stream_ends']))}; long-polls answered "
                f"{dict((s, held['long_poll_statuses'].count(s)) for s in set(held['long_poll_statuses']))}"
            )
            counts = drain(stack, tally.accepted, args.limit_seconds)
            print(
                f"audit of {len(tally.accepted)} accepted jobs: lost {counts['lost']}, duplicated "
                f"{counts['duplicated']}, re-run {counts['rerun']}, failed {counts['failed']}; 5xx in all "
                f"{tally.server_errors}; statuses {dict(sorted(tally.statuses.items()))}"
            )
            print(f"machine: {machine()} (at the end)")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
