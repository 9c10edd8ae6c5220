"""Per-step latency through the pipeline alone, and end-to-end latency through the running service.

Prints figures (medians and p95 over the runs); docs/benchmarks.md records them with the machine.
`python benchmarks/latency.py [--model DIR] [--steps 20] [--runs 10]`; without --model it benchmarks
the tiny UNet and transformer pipelines, built from configs in a temp dir.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import torch
from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.jobs import GenerationParams
from tests.helpers import RedisServer, start_api, start_worker, wait_ready
from worker.loading import load, pick_runtime
from worker.pipeline import WarmPipeline
from worker.settings import WorkerSettings
from worker.tiny import build_sd, build_sd3


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_pipeline(model: Path, steps: int, runs: int, device: str, compile_: bool = False) -> None:
    settings = WorkerSettings(model_source=str(model), device=device, compile=compile_)
    runtime = pick_runtime(settings)
    warm = WarmPipeline(load(settings, runtime), runtime, settings)
    started = time.perf_counter()
    warm.warm_up()
    warm_seconds = time.perf_counter() - started
    step_times: list[float] = []
    totals: list[float] = []
    for run in range(runs):
        params = GenerationParams(
            prompt="a red circle on a blue background",
            width=warm.width,
            height=warm.height,
            num_inference_steps=steps,
            guidance_scale=7.5,
            seed=run,
            num_images=1,
        )
        started = time.perf_counter()
        warm.generate(params, lambda done, total, seconds: step_times.append(seconds) is None)
        totals.append(time.perf_counter() - started)
    print(
        f"pipeline {warm.pipeline_class} {warm.width}x{warm.height} {steps} steps, batch 1, {runtime.device} "
        f"{str(runtime.dtype).removeprefix('torch.')}{', compiled' if compile_ else ''} "
        f"(warm-up {warm_seconds:.1f} s), {torch.get_num_threads()} threads: "
        f"step median {statistics.median(step_times) * 1e3:.2f} ms, "
        f"p95 {pct(step_times, 0.95) * 1e3:.2f} ms; whole call median {statistics.median(totals) * 1e3:.1f} ms, "
        f"p95 {pct(totals, 0.95) * 1e3:.1f} ms "
        f"(text encoding + {steps} steps + VAE decode)"
    )


def bench_service(model: Path, steps: int, runs: int, tmp: Path) -> None:
    server = RedisServer(tmp / "redis").start()
    prefix = f"b{uuid.uuid4().hex[:8]}"
    env = {
        "REDIS_URL": server.url,
        "DIFFUSION_KEY_PREFIX": prefix,
        "DIFFUSION_STORAGE_URL": str(tmp / "img"),
        "DIFFUSION_URL_SIGNING_SECRET": "bench",
        "DIFFUSION_CPU_THREADS": "0",
        "DIFFUSION_DEFAULT_MODEL": "bench",
    }
    api = start_api(env, tmp / "api.log")
    worker = start_worker(
        model, {**env, "DIFFUSION_WORKER_ID": f"{prefix}-w", "DIFFUSION_CPU_THREADS": "0"}, tmp / "worker.log"
    )
    try:
        wait_ready(worker, Redis.from_url(server.url), f"{prefix}.generate.bench", f"{prefix}-w")
        observed, inside = [], []
        with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=30) as client:
            for run in range(runs):
                started = time.perf_counter()
                job = client.post(
                    "/v1/generations", json={"prompt": "a red circle", "seed": run, "num_inference_steps": steps}
                ).json()
                while job["status"] in ("queued", "running"):
                    time.sleep(0.005)
                    job = client.get(f"/v1/generations/{job['id']}").json()
                assert job["status"] == "succeeded", job
                client.get(job["images"][0]["url"]).raise_for_status()
                observed.append(time.perf_counter() - started)
                inside.append(_seconds(job["finished_at"]) - _seconds(job["created_at"]))
            eta_errors = measure_eta(client, runs)
        print(
            f"ETA at submission for {len(eta_errors)} jobs queued behind each other (steps 5..40 mixed): "
            f"finish error median {statistics.median(abs(e) for e, _ in eta_errors) * 1e3:.0f} ms, "
            f"p95 {pct([abs(e) for e, _ in eta_errors], 0.95) * 1e3:.0f} ms; relative to the wait, median "
            f"{statistics.median(abs(r) for _, r in eta_errors):.1%} (positive = finished later than estimated: "
            f"{', '.join(f'{e * 1e3:+.0f}' for e, _ in eta_errors)} ms)"
        )
        print(
            f"service end to end ({runs} jobs one after another, {steps} steps): client-observed submit -> "
            f"image downloaded median {statistics.median(observed) * 1e3:.1f} ms, "
            f"p95 {pct(observed, 0.95) * 1e3:.1f} ms; "
            f"created -> finished median {statistics.median(inside) * 1e3:.1f} ms"
        )
    finally:
        worker.stop()
        api.stop()
        server.stop()


def measure_eta(client: httpx.Client, count: int) -> list[tuple[float, float]]:
    """Queue `count` jobs of mixed sizes at once; compare each one's ETA at submission with its real finish."""
    steps = [5 + (7 * i) % 36 for i in range(count)]
    submitted = []
    for n in steps:
        job = client.post("/v1/generations", json={"prompt": "eta", "num_inference_steps": n}).json()
        submitted.append((job["id"], job["estimated_finish_at"], _seconds(job["created_at"])))
    errors = []
    for job_id, estimate, created in submitted:
        job = client.get(f"/v1/generations/{job_id}").json()
        while job["status"] in ("queued", "running"):
            time.sleep(0.01)
            job = client.get(f"/v1/generations/{job_id}").json()
        if estimate is None:
            continue  # the job started at once: no estimate was made
        error = _seconds(job["finished_at"]) - _seconds(estimate)
        errors.append((error, error / max(1e-3, _seconds(job["finished_at"]) - created)))
    return errors


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        action="append",
        help="model folder (repeatable; default: the embedded shapes model and the tiny pipelines)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-service", action="store_true", help="pipeline figures only")
    parser.add_argument("--compile", action="store_true", help="also time each model with torch.compile")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}, cuda {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        default = Path(__file__).resolve().parent.parent / "worker" / "models" / "shapes"
        models = args.model or [default, build_sd(tmp / "tiny-sd"), build_sd3(tmp / "tiny-sd3")]
        for model in models:
            bench_pipeline(model, args.steps, args.runs, args.device)
            if args.compile:
                bench_pipeline(model, args.steps, args.runs, args.device, compile_=True)
        if not args.no_service:
            bench_service(models[0], args.steps, args.runs, tmp)


if __name__ == "__main__":
    main()
