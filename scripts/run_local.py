"""`make run`: Redis (a private one unless REDIS_URL is set), one worker on the default model, and the API.

Once the worker is warm it runs the service's main job once, a text-to-image generation through
the HTTP API, saves the image under var/, prints how to call the API, and keeps serving until
Ctrl-C. `--once` exits after that first generation (used to check a fresh clone).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
PROMPT = "a red circle on a blue background"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT)


def wait_ready(base: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a process exited early ({' '.join(map(str, proc.args))}); see var/*.log")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service was not ready after {timeout:.0f}s; see var/*.log")


def demo(base: str) -> Path:
    with httpx.Client(base_url=base, timeout=30) as client:
        job = client.post("/v1/generations", json={"prompt": PROMPT, "seed": 42}).json()
        while job["status"] in ("queued", "running"):
            time.sleep(0.1)
            job = client.get(f"/v1/generations/{job['id']}").json()
        if job["status"] != "succeeded":
            raise SystemExit(f"demo generation {job['status']}: {job.get('error')}")
        out = VAR / "demo.png"
        out.write_bytes(client.get(job["images"][0]["url"]).content)
        seconds = datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
        print(f"generated '{PROMPT}' (seed 42, job {job['id']}) in {seconds.total_seconds():.2f} s -> {out}")
        return out


def start_redis(procs: list[subprocess.Popen[bytes]]) -> str:
    """A private redis-server for the demo (no persistence); returns its URL."""
    port = free_port()
    (VAR / "redis").mkdir(exist_ok=True)
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(VAR / "redis")]
    procs.append(start(["redis-server", *args], {}, VAR / "redis.log"))
    return f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DIFFUSION_PORT", "8000")))
    parser.add_argument("--model", help="model folder or hub id (default: the embedded default model)")
    parser.add_argument("--once", action="store_true", help="exit after the first generation")
    args = parser.parse_args()
    VAR.mkdir(exist_ok=True)
    py = sys.executable
    procs: list[subprocess.Popen[bytes]] = []
    # Leave a core to Redis and the API: OpenMP threads that compete for every core spin and stall.
    threads = os.environ.get("DIFFUSION_CPU_THREADS", str(max(1, (os.cpu_count() or 2) - 1)))
    env = {
        "DIFFUSION_STORAGE_URL": str(VAR / "images"),
        "DIFFUSION_CPU_THREADS": threads,
        "DIFFUSION_URL_SIGNING_SECRET": os.environ.get("DIFFUSION_URL_SIGNING_SECRET", "local-dev-secret"),
    }
    try:
        if "REDIS_URL" not in os.environ:
            env["REDIS_URL"] = start_redis(procs)
        env.setdefault(
            "DIFFUSION_MODELS_FILE", os.environ.get("DIFFUSION_MODELS_FILE", str(ROOT / "deploy" / "models.json"))
        )
        model = ["--model", args.model] if args.model else []
        procs.append(start([py, "-m", "worker", *model], env, VAR / "worker.log"))
        procs.append(start([py, "-m", "app", "--port", str(args.port)], env, VAR / "api.log"))
        base = f"http://127.0.0.1:{args.port}"
        print(
            f"starting Redis ({env['REDIS_URL']}), a worker on {args.model or 'the default model'} and the API "
            f"on {base} ..."
        )
        wait_ready(base, procs, timeout=300)
        demo(base)
        if args.once:
            return
        print(f"""
ready: API {base} (docs {base}/docs), worker metrics http://127.0.0.1:9101/metrics, logs in var/*.log
  curl -s -X POST {base}/v1/generations -H 'content-type: application/json' \\
       -d '{{"prompt": "{PROMPT}"}}'
  curl -s {base}/v1/generations/<id>        # poll until "status": "succeeded", then fetch images[0].url
Ctrl-C stops everything.""")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(proc.poll() is None for proc in procs):
            time.sleep(0.5)
        print("a process exited; stopping the rest (see var/*.log)")
    except KeyboardInterrupt:
        pass
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
