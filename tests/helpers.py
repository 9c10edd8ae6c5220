"""Real processes for tests: a private redis-server, the API under uvicorn, `python -m worker`."""

from __future__ import annotations

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

import httpx
from redis import Redis

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    """A private redis-server on a free port, with no persistence."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart on the same port) and wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 10, "redis-server to answer")
        return self

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


def spawn(args: list[str], env: dict[str, str], log: Path, port: int) -> Service:
    """Start `python <args>` from the repository root with `env` added to the environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("wb")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=full_env, stdout=handle, stderr=subprocess.STDOUT)
    return Service(proc, log, port)


def start_api(env: dict[str, str], log: Path) -> Service:
    """The API under uvicorn on a free port; returns once /healthz answers."""
    port = free_port()
    service = spawn(["-m", "app", "--host", "127.0.0.1", "--port", str(port)], env, log, port)

    def up() -> bool:
        if service.proc.poll() is not None:
            raise AssertionError(f"API exited:\n{service.logs()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, "the API to start")
    return service


def start_worker(
    model: Path, env: dict[str, str], log: Path, *, name: str | None = None, from_models_file: bool = False
) -> Service:
    """`python -m worker` on a model folder (or its models-file entry) with its own metrics port; no waiting."""
    port = free_port()
    args = ["-m", "worker", "--metrics-port", str(port)]
    if not from_models_file:
        args += ["--model", str(model)]
    if name:
        args += ["--name", name]
    return spawn(args, {"DIFFUSION_CPU_THREADS": "1", **env}, log, port)


def wait_ready(service: Service, redis: Redis, queue: str, worker_id: str, timeout: float = 90) -> None:
    """Wait until the worker registered on its queue with RQ (it does so only once warm)."""
    from rq import Queue, Worker

    def registered() -> bool:
        if service.proc.poll() is not None:
            raise AssertionError(f"worker exited with {service.proc.returncode}:\n{service.logs()}")
        return any(w.name == worker_id for w in Worker.all(queue=Queue(queue, connection=redis)))

    wait_for(registered, timeout, f"worker {worker_id} to be ready", interval=0.2)


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
