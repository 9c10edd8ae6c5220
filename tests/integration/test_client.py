"""The Python client and the `diffusion` command line against the running service."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image as PILImage

from diffusion_client import ApiError, DiffusionClient
from tests.conftest import Stack
from tests.helpers import ROOT, free_port

STACK_ENV = {"DIFFUSION_MAX_INFERENCE_STEPS": "2000"}
STACK_MODELS = ("tiny-sd",)


def test_submit_wait_stream_and_download(stack: Stack) -> None:
    with DiffusionClient(stack.base) as client:
        job = client.submit("a red circle", num_inference_steps=8, num_images=2, seed=5)
        states = list(client.stream(job.id))
        assert states[-1].status == "succeeded" and len(states) >= 8
        assert [s.progress.fraction for s in states] == sorted(s.progress.fraction for s in states)
        polled = client.wait(client.submit("again", num_inference_steps=2).id, poll_interval=0.05)
        assert polled.status == "succeeded"
        final = client.wait(job.id)
        assert [im.seed for im in final.images] == [5, 6]
        png = PILImage.open(io.BytesIO(client.download(final.images[1])))
        assert png.size == (64, 64)


def test_cancel_and_errors(stack: Stack) -> None:
    with DiffusionClient(stack.base) as client:
        job = client.submit("long", num_inference_steps=1500)
        assert client.cancel(job.id).status == "canceled"
        with pytest.raises(ApiError) as conflict:
            client.cancel(job.id)
        assert conflict.value.status == 409
        with pytest.raises(ApiError) as invalid:
            client.submit("bad", width=13)
        assert (invalid.value.status, invalid.value.param) == (422, "width")


@pytest.fixture
def flaky_server() -> Iterator[tuple[str, list[str]]]:
    """Answers 429 (Retry-After: 0) then 503, then a job object; records Idempotency-Keys it saw."""
    keys: list[str] = []
    answers = [429, 503]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            keys.append(self.headers["idempotency-key"])
            status = answers.pop(0) if answers else 202
            body = (
                (
                    b'{"id": "x", "status": "queued", "progress": {"stage": "queued", "step": 0, '
                    b'"total_steps": 2, "fraction": 0.0}, "images": []}'
                )
                if status == 202
                else b"{}"
            )
            self.send_response(status)
            self.send_header("retry-after", "0")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}", keys
    server.shutdown()


def test_retries_429_and_503_with_one_idempotency_key(flaky_server: tuple[str, list[str]]) -> None:
    url, keys = flaky_server
    with DiffusionClient(url) as client:
        assert client.submit("p").id == "x"
    assert len(keys) == 3 and len(set(keys)) == 1, "retries reuse the key: never two jobs"


def test_cli_generates_with_progress_bar(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffusion_client",
            "--url",
            stack.base,
            "generate",
            "a blue square",
            "-o",
            str(out),
            "--steps",
            "6",
            "--seed",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "100% done" in result.stderr and "step" in result.stderr
    assert PILImage.open(out).size == (64, 64)
    job_id = result.stderr.split("job ", 1)[1].split()[0]
    status = subprocess.run(
        [sys.executable, "-m", "diffusion_client", "--url", stack.base, "status", job_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "succeeded" in status.stdout
    cancel = subprocess.run(
        [sys.executable, "-m", "diffusion_client", "--url", stack.base, "cancel", job_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cancel.returncode == 2 and "409" in cancel.stderr
