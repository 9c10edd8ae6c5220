"""Start-up of a compiled worker (DIFFUSION_COMPILE=true) with an empty inductor cache, then again with the cache
the first start left: what keeping TORCHINDUCTOR_CACHE_DIR on a volume (compose, Kubernetes) saves a restart.

Each start is `python -m worker --burst` on the default model with a private Redis and nothing queued: it
loads, compiles and warms the denoiser, registers, finds no job and exits. Printed per start: the
process's wall time, the warm-up it logged (compilation included), and the denoiser graphs it built.
`python benchmarks/compile_cache.py [--starts 3] [--sizes 64x64]`; docs/benchmarks.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import RedisServer  # noqa: E402


def start(env: dict[str, str], log: Path) -> dict[str, float]:
    """One worker start-up to exit; its wall time and what its JSON log says about the warm-up."""
    began = time.perf_counter()
    with log.open("wb") as out:
        subprocess.run(
            [sys.executable, "-m", "worker", "--burst", "--metrics-port", "0"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=1800,
        )
    wall = time.perf_counter() - began
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warm = next(line for line in lines if line.get("msg") == "pipeline warm")
    # Dynamo traces every graph again on each start; inductor then compiles it, or loads it from the cache.
    graphs = sum(1 for line in lines if line.get("msg") == "compiling a denoiser graph")
    return {"wall_s": round(wall, 1), "warmup_s": round(warm["warmup_seconds"], 1), "graphs": graphs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3, help="starts in all; the first one has an empty cache")
    parser.add_argument("--sizes", default="64x64", help="DIFFUSION_WARMUP_SIZES (JSON list or comma-separated)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    sizes = args.sizes if args.sizes.startswith("[") else json.dumps(args.sizes.split(","))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} torch thread(s); "
        f"load average before {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = RedisServer(tmp / "redis").start()
        env = {
            "REDIS_URL": server.url,
            "DIFFUSION_KEY_PREFIX": "cache",
            "DIFFUSION_STORAGE_URL": str(tmp / "images"),
            "DIFFUSION_COMPILE": "true",
            "DIFFUSION_WARMUP_SIZES": sizes,
            "DIFFUSION_CPU_THREADS": str(args.threads),
            "OMP_NUM_THREADS": str(args.threads),
            "DIFFUSION_LOG_FORMAT": "json",
            "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"),  # empty: created by the first start
        }
        try:
            results = []
            for n in range(args.starts):
                results.append(start(env, tmp / f"start-{n}.log"))
                state = "empty cache" if n == 0 else "cache of the starts before"
                print(f"start {n + 1} ({state}): {results[-1]}", flush=True)
        finally:
            server.stop()
    first, later = results[0], results[1:]  # later[0]: the second start
    if later:
        best = later[0]
        print(
            f"second start / first: wall {best['wall_s'] / first['wall_s']:.2f} ({best['wall_s']} s vs "
            f"{first['wall_s']} s), warm-up {best['warmup_s'] / max(first['warmup_s'], 1e-9):.2f} "
            f"({best['warmup_s']} s vs {first['warmup_s']} s)"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
