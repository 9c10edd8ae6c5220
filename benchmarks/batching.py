"""Cross-request batching on the CPU with the default model: what it gains, and what it must not cost.

Three figures, each a ratio of rounds interleaved in one run (so a machine whose load drifts affects
both sides of a ratio alike), through the real service (API, Redis, `python -m worker`):

- throughput: 16 compatible single-image jobs queued at once for one worker, images/s with
  `DIFFUSION_MAX_BATCH_IMAGES=8` over the same with `1` (goal >= 2.5x), beside the ceiling: what the
  bare pipeline itself gains from one call of 8 images over 8 calls of one;
- serving efficiency: per-image time of a bare diffusers loop (the same pipeline folder, the same
  thread count, in this process) over the per-image time of a job through the service, one job at a
  time (goal >= 0.95);
- a lone job's latency (created -> finished, from its record) with batching on over batching off
  (goal within 5 %).

`make bench-batching`, or `python benchmarks/batching.py [--steps 20] [--rounds 12] [--threads 1]`;
docs/benchmarks.md records the figures with the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.jobs import JobRecord, JobStatus
from contract.records import JobStore
from tests.helpers import RedisServer, Service, start_api, start_worker, wait_ready
from worker.settings import DEFAULT_MODEL_SOURCE

BATCHED, ALONE = "b8", "b1"  # model names of the two workers: DIFFUSION_MAX_BATCH_IMAGES 8 and 1
QUEUED_JOBS = 16
FINAL = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


class Bench:
    """An API and two workers of the default model (batching on and off) on a private Redis."""

    def __init__(self, tmp: Path, threads: int, steps: int) -> None:
        self.steps = steps
        self.server = RedisServer(tmp / "redis").start()
        self.redis = Redis.from_url(self.server.url)
        self.prefix = f"b{uuid.uuid4().hex[:8]}"
        env = {
            "REDIS_URL": self.server.url,
            "DIFFUSION_KEY_PREFIX": self.prefix,
            "DIFFUSION_STORAGE_URL": str(tmp / "images"),
            "DIFFUSION_URL_SIGNING_SECRET": "bench",
            "DIFFUSION_DEFAULT_MODEL": BATCHED,
            "DIFFUSION_SERVED_MODELS": f'["{ALONE}"]',
            "DIFFUSION_CPU_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
        }
        self.store = JobStore(self.redis, self.prefix, 3600)
        self.api = start_api(env, tmp / "api.log")
        self.workers: dict[str, Service] = {}
        for name, limit in ((BATCHED, 8), (ALONE, 1)):
            own = {"DIFFUSION_WORKER_ID": f"{self.prefix}-{name}", "DIFFUSION_MAX_BATCH_IMAGES": str(limit)}
            self.workers[name] = start_worker(
                Path(DEFAULT_MODEL_SOURCE), {**env, **own}, tmp / f"{name}.log", name=name
            )
        for name in self.workers:
            wait_ready(self.workers[name], self.redis, f"{self.prefix}.generate.{name}", f"{self.prefix}-{name}")
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.api.port}", timeout=30)

    def submit(self, model: str, seed: int) -> str:
        """One single-image job of `steps` steps at the native size; its id."""
        body = {"prompt": f"a red circle on a blue background {seed}", "seed": seed, "model": model}
        response = self.client.post("/v1/generations", json={**body, "num_inference_steps": self.steps})
        response.raise_for_status()
        return str(response.json()["id"])

    def finished(self, ids: list[str]) -> list[JobRecord]:
        """The jobs' records once every one is final (polled in Redis, lightly: timings come from the records)."""
        while True:
            records = [r for r in self.store.get_many(ids) if r is not None and r.status in FINAL]
            if len(records) == len(ids):
                bad = [r.id for r in records if r.status != JobStatus.SUCCEEDED]
                assert not bad, f"jobs did not succeed: {bad}"
                return records
            time.sleep(0.05)

    def queued_at_once(self, model: str, round_: int) -> float:
        """Images/s of QUEUED_JOBS jobs that reach the worker together (it is stopped while they are submitted)."""
        worker = self.workers[model].proc
        worker.send_signal(signal.SIGSTOP)
        try:
            ids = [self.submit(model, 1000 * round_ + i) for i in range(QUEUED_JOBS)]
        finally:
            released = time.time()
            worker.send_signal(signal.SIGCONT)
        records = self.finished(ids)
        return QUEUED_JOBS / (max(r.finished_at or 0.0 for r in records) - released)

    def lone_job(self, model: str, seed: int) -> float:
        """Seconds from submission to the stored image of one job on an idle worker (its record's timestamps)."""
        [record] = self.finished([self.submit(model, seed)])
        assert record.finished_at is not None
        return record.finished_at - record.created_at

    def close(self) -> None:
        """Stop everything this bench started."""
        self.client.close()
        for worker in self.workers.values():
            worker.stop()
        self.api.stop()
        self.server.stop()


def bare_loop(threads: int, steps: int) -> Callable[[int, int], float]:
    """The same pipeline folder loaded by diffusers alone; returns a function timing one call of `count`
    images (one prompt and seed each) from a seed."""
    import diffusers
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(threads)
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_MODEL_SOURCE, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def call(seed: int, count: int = 1) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            images = pipe(
                [f"a red circle on a blue background {seed + k}" for k in range(count)],
                num_inference_steps=steps,
                guidance_scale=7.5,
                generator=[torch.Generator("cpu").manual_seed(seed + k) for k in range(count)],
            ).images
        for image in images:
            image.tobytes()
        return time.perf_counter() - started

    call(0), call(0, 8)  # the first calls allocate
    return call


def ratio_line(name: str, ratios: list[float], goal: str, detail: str) -> str:
    """One printed result: the median ratio, its spread over rounds, the goal, the absolute figures."""
    return (
        f"{name}: median {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}..{max(ratios):.3f}, "
        f"n={len(ratios)}), goal {goal}; {detail}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=12, help="interleaved rounds of the lone-job figures")
    parser.add_argument("--throughput-rounds", type=int, default=5, help="interleaved rounds of 16 queued jobs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the workers and the bare loop")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s) per process, "
        f"python {platform.python_version()}; load average before {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp), args.threads, args.steps)
        try:
            one = bare_loop(args.threads, args.steps)
            for model in (BATCHED, ALONE):  # first jobs of a fresh worker allocate: not measured
                bench.lone_job(model, 1)
            results = measure(bench, one, args)
        finally:
            bench.close()
    print(results, flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def measure(bench: Bench, one: Callable[[int, int], float], args: argparse.Namespace) -> str:
    """The interleaved rounds; returns the printed figures."""
    batched_ips, alone_ips, bare_gain = [], [], []
    for r in range(args.throughput_rounds):
        order = (BATCHED, ALONE) if r % 2 == 0 else (ALONE, BATCHED)
        got = {model: bench.queued_at_once(model, r) for model in order}
        batched_ips.append(got[BATCHED])
        alone_ips.append(got[ALONE])
        # The ceiling: what the bare pipeline gains from one call of 8 images over 8 calls of one.
        bare_gain.append(sum(one(500 + k, 1) for k in range(8)) / one(500, 8))
        print(f"  round {r}: {QUEUED_JOBS} queued jobs, images/s {got}; bare 8/1 {bare_gain[-1]:.2f}", flush=True)
    bare: list[float] = []
    lone: dict[str, list[float]] = {BATCHED: [], ALONE: []}
    for r in range(args.rounds):
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("bare", lambda r=r: bare.append(one(100 + r, 1))),
            (BATCHED, lambda r=r: lone[BATCHED].append(bench.lone_job(BATCHED, 200 + r))),
            (ALONE, lambda r=r: lone[ALONE].append(bench.lone_job(ALONE, 300 + r))),
        ]
        for _, run in steps[r % 3 :] + steps[: r % 3]:  # each side goes first in turn
            run()
    throughput = [b / a for b, a in zip(batched_ips, alone_ips, strict=True)]
    efficiency = [b / s for b, s in zip(bare, lone[BATCHED], strict=True)]
    efficiency_off = [b / s for b, s in zip(bare, lone[ALONE], strict=True)]
    latency = [b / a for b, a in zip(lone[BATCHED], lone[ALONE], strict=True)]
    ms = lambda values: f"{statistics.median(values) * 1e3:.0f} ms"  # noqa: E731
    return "\n".join(
        [
            ratio_line(
                f"throughput, {QUEUED_JOBS} jobs queued at once, batching 8 / 1",
                throughput,
                ">= 2.5",
                f"images/s median {statistics.median(batched_ips):.2f} (max 8) vs {statistics.median(alone_ips):.2f} "
                f"(max 1)",
            ),
            ratio_line(
                "  the bare pipeline's own gain, one call of 8 images / 8 calls of one (the ceiling)",
                bare_gain,
                "-",
                "same rounds",
            ),
            ratio_line(
                "serving efficiency, bare diffusers / service, one job at a time (worker with batching on)",
                efficiency,
                ">= 0.95",
                f"per image bare {ms(bare)}, service {ms(lone[BATCHED])} (created -> stored, from the record)",
            ),
            ratio_line(
                "serving efficiency, the same with batching off",
                efficiency_off,
                ">= 0.95",
                f"service {ms(lone[ALONE])}",
            ),
            ratio_line(
                "lone job latency, batching on / off",
                latency,
                "<= 1.05",
                f"{ms(lone[BATCHED])} vs {ms(lone[ALONE])}",
            ),
        ]
    )


if __name__ == "__main__":
    main()
