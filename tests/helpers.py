"""Shared test helpers: real processes (a private redis-server, the API under uvicorn, `python -m worker`),
jobs over HTTP against them, and the warm pipeline in-process."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from PIL import Image
from redis import Redis

if TYPE_CHECKING:
    from contract.jobs import GenerationParams
    from worker.pipeline import WarmPipeline

ROOT = Path(__file__).resolve().parent.parent


def models_file(folder: Path, side: int = 512, model: str = "shapes") -> Path:
    """A models file giving a model a native size, as ops write for models no worker has published yet
    (the API guesses no size)."""
    path = folder / "models.json"
    path.write_text(json.dumps({model: {"width": side, "height": side}}))
    return path


# Ports for the servers tests start: below the kernel's ephemeral range (32768-60999 on Linux), so no outgoing
# connection takes one between our pick and the server's bind, and a band of each xdist process's own, walked
# upward, so two processes never pick the same port and a server restarted on its port (a killed Redis) finds
# it still free. Picking with bind(("", 0)) hands out ephemeral ports, which raced with both.
PORT_BAND = 2500
PORT_BASE = 12000
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_band = int(_worker[2:]) % 8 if _worker[2:].isdigit() else 0
_next_port = PORT_BASE + _band * PORT_BAND + (os.getpid() % 50) * 40
_port_lock = threading.Lock()


def free_port() -> int:
    """A TCP port nobody listens on right now, from this process's band (see PORT_BAND)."""
    global _next_port
    low = PORT_BASE + _band * PORT_BAND
    with _port_lock:
        for _ in range(PORT_BAND):
            port = _next_port
            _next_port = low + (_next_port + 1 - low) % PORT_BAND
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free port in {low}-{low + PORT_BAND - 1}")


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    """Poll until `condition()` is truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class RedisServer:
    """A private redis-server on a free port: no persistence, or the shipped production config (AOF)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    shipped_config: bool = False

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart on the same port, with what it persisted) and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = []
        if self.shipped_config:  # the production file as it is, but its data directory (/data) is ours
            shipped = (ROOT / "deploy" / "redis.conf").read_text()
            lines = [f"dir {self.workdir}" if line.startswith("dir ") else line for line in shipped.splitlines()]
            (self.workdir / "redis.conf").write_text("\n".join(lines) + "\n")
            config = [str(self.workdir / "redis.conf")]
        persistence = [] if self.shipped_config else ["--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(
            [
                "redis-server",
                *config,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                *persistence,
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 10, "redis-server to answer")
        return self

    def signal(self, sig: int) -> None:
        """Send a signal (SIGKILL, SIGSTOP, SIGCONT) to the server; reap it after SIGKILL."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@dataclass
class Service:
    """A service subprocess with its log file; `stop()` sends SIGTERM then SIGKILL."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def logs(self) -> str:
        """Everything the process printed."""
        return self.log.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal (default: kill -9) and reap the process."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        """Graceful stop, forced after 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def spawn(args: list[str], env: dict[str, str], log: Path, port: int, cwd: Path = ROOT) -> Service:
    """Start `python <args>` in `cwd` (the repository root unless given) with `env` added to the environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    if cwd != ROOT:  # this checkout's packages still come first
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=full_env, stdout=handle, stderr=subprocess.STDOUT)
    return Service(proc, log, port)


def start_api(
    env: dict[str, str], log: Path, cwd: Path = ROOT, host: str = "127.0.0.1", port: int | None = None
) -> Service:
    """The API under uvicorn (on a free port unless given); returns once /healthz answers."""
    port = port or free_port()
    service = spawn(["-m", "app", "--host", host, "--port", str(port)], env, log, port, cwd)

    def up() -> bool:
        if service.proc.poll() is not None:
            raise AssertionError(f"API exited:\n{service.logs()}")
        if f"Uvicorn running on http://{host}:{port}" not in service.logs():
            return False  # not bound yet: a /healthz answer now would come from someone else's server
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, "the API to start")
    return service


def start_worker(
    model: Path,
    env: dict[str, str],
    log: Path,
    *,
    name: str | None = None,
    from_models_file: bool = False,
    cwd: Path = ROOT,
) -> Service:
    """`python -m worker` on a model folder (or its models-file entry) with its own metrics port; no waiting."""
    port = free_port()
    args = ["-m", "worker", "--metrics-port", str(port)]
    if not from_models_file:
        args += ["--model", str(model)]
    if name:
        args += ["--name", name]
    return spawn(args, {"DIFFUSION_CPU_THREADS": "1", **env}, log, port, cwd)


def log_tail(service: Service, lines: int = 40) -> str:
    """The last lines a service printed, for assertion messages."""
    return "\n".join(service.logs().splitlines()[-lines:])


def wait_ready(
    service: Service, redis: Redis, queue: str, worker_id: str, stall: float = 120, timeout: float = 900
) -> None:
    """Wait until the worker registered on its queue with RQ (it does so only once warm).

    A worker that compiles its denoiser logs every graph before and after compiling it (tens of
    seconds each on 2 cores with an empty inductor cache), so the wait lasts as long as the worker
    keeps printing: it fails once the log has been silent for `stall` seconds, or after `timeout`
    in all, and then shows the log's tail.
    """
    from rq import Queue, Worker

    started = time.monotonic()
    last_size, last_change = -1, started
    while True:
        if service.proc.poll() is not None:
            raise AssertionError(f"worker exited with {service.proc.returncode}:\n{log_tail(service)}")
        if any(w.name == worker_id for w in Worker.all(queue=Queue(queue, connection=redis))):
            return
        now = time.monotonic()
        size = service.log.stat().st_size if service.log.exists() else 0
        if size != last_size:
            last_size, last_change = size, now
        if now - last_change > stall or now - started > timeout:
            quiet = now - last_change
            raise AssertionError(
                f"worker {worker_id} not ready after {now - started:.0f}s (log silent for "
                f"{quiet:.0f}s):\n{log_tail(service)}"
            )
        time.sleep(0.2)


# Jobs over HTTP against a running API.


def run_job(client: httpx.Client, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Submit and poll until the job ends; returns the final job object."""
    response = client.post("/v1/generations", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/generations/{response.json()['id']}"
    location = response.headers["location"]

    def finished() -> dict[str, Any] | None:
        job = client.get(location).json()
        return job if job["status"] in ("succeeded", "failed", "canceled") else None

    return wait_for(finished, timeout, "the job to finish", interval=0.05)  # type: ignore[return-value]


def fetch_pixels(client: httpx.Client, url: str) -> np.ndarray:
    """Download an image by its signed URL and decode it."""
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)


def run_job_by_id(client: httpx.Client, job_id: str) -> dict[str, Any]:
    done = wait_for(
        lambda: (j := client.get(f"/v1/generations/{job_id}").json())["status"] == "succeeded" and j,
        60,
        "the replay to finish",
    )
    return done  # type: ignore[return-value]


def encoded(image: Image.Image) -> str:

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/generations", json={"prompt": "p", "num_inference_steps": 2, **body})
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/generations/{job_id}").json()  # type: ignore[no-any-return]


def wait_status(client: httpx.Client, job_id: str, *statuses: str, timeout: float = 60) -> dict[str, Any]:
    found = wait_for(
        lambda: (j := job(client, job_id))["status"] in statuses and j,
        timeout,
        f"job to reach {statuses}",
        interval=0.03,
    )
    return found  # type: ignore[return-value]


def wait_step(client: httpx.Client, job_id: str, step: int) -> dict[str, Any]:
    found = wait_for(
        lambda: (j := job(client, job_id))["progress"]["step"] >= step and j, 60, f"step {step}", interval=0.02
    )
    return found  # type: ignore[return-value]


def sse(
    client: httpx.Client, job_id: str, last_event_id: str | None = None, stop_after: int | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Read the event stream: (event id, job object) pairs, until it closes or `stop_after` events."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[tuple[str, dict[str, Any]]] = []
    event_id = ""
    with client.stream("GET", f"/v1/generations/{job_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                events.append((event_id, json.loads(line[6:])))
                if stop_after is not None and len(events) >= stop_after:
                    break
    return events


def unsigned(view: dict[str, Any]) -> dict[str, Any]:
    """A job object without its image URLs, which are signed afresh (new expiry) on every read."""
    images = [{k: v for k, v in image.items() if k not in ("url", "url_expires_at")} for image in view["images"]]
    return {**view, "images": images}


# The warm pipeline in-process.


def warm(model: Path, **overrides: object) -> WarmPipeline:
    """A warm pipeline on the CPU over a model folder, with settings overrides."""
    from worker.loading import load, pick_runtime
    from worker.pipeline import WarmPipeline
    from worker.settings import WorkerSettings

    settings = WorkerSettings(model_source=str(model), device="cpu", **overrides)  # type: ignore[arg-type]
    runtime = pick_runtime(settings)
    return WarmPipeline(load(settings, runtime), runtime, settings)


def params(**overrides: object) -> GenerationParams:
    """Resolved parameters of a small job (64x64, 3 steps), with overrides."""
    from contract.jobs import GenerationParams

    base: dict[str, object] = {
        "prompt": "a red circle",
        "width": 64,
        "height": 64,
        "num_inference_steps": 3,
        "guidance_scale": 6.0,
        "seed": 10,
        "num_images": 1,
    }
    return GenerationParams(**(base | overrides))  # type: ignore[arg-type]


# Tiny real HTTP servers standing in for a receiver or an API.


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on a free port running `handler` in threads; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send_json(
    handler: BaseHTTPRequestHandler, status: int, body: object, headers: dict[str, str] | None = None
) -> None:
    """Answer a request with a JSON body (for handlers of `http_server`)."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    for name, value in {"content-type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def job_object(job_id: str, status: str, step: int = 0, total: int = 4) -> dict[str, object]:
    """A minimal job object as the API renders it (for tiny servers standing in for the API)."""
    stage = {"queued": "queued", "running": "denoising"}.get(status, "done")
    fraction = 1.0 if stage == "done" else step / total
    return {
        "id": job_id,
        "object": "generation",
        "status": status,
        "model": "m",
        "progress": {"stage": stage, "step": step, "total_steps": total, "fraction": fraction},
        "images": [],
        "params": {},
    }


def generate(
    pipeline: WarmPipeline, p: GenerationParams, on_step: Callable[[int, int], bool] | None = None
) -> list[np.ndarray]:
    """The images of one job generated alone on a warm pipeline."""
    from worker.batch import Batch, JobInput

    return pipeline.generate(Batch([JobInput(p)]), on_step or (lambda done, total: True))[0]
