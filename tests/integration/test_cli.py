"""The `diffusion` command against the running service: output for terminals and for scripts, exit codes."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from PIL import Image as PILImage

from diffusion_client import DiffusionClient
from tests.conftest import Stack
from tests.helpers import ROOT, free_port, wait_for

STACK_ENV = {"DIFFUSION_MAX_INFERENCE_STEPS": "100000"}
STACK_MODELS = ("tiny-sd",)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m diffusion_client ARGS` with pipes (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "diffusion_client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DIFFUSION_API_KEY": ""},
    )


def test_generate_prints_plain_lines_when_not_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    result = cli("--url", stack.base, "generate", "a blue square", "-o", str(out), "--steps", "6", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "\x1b" not in result.stderr, "no bar redraws in logs"
    lines = result.stderr.splitlines()
    assert lines[0].startswith("job ") and "queued" in lines[0]
    assert any("running: denoising step" in line for line in lines), lines
    assert lines[-1].endswith("succeeded")
    assert result.stdout.startswith(f"saved {out} (64x64, seed 1)")
    assert PILImage.open(out).size == (64, 64)


def test_json_output_dir_get_and_replay(stack: Stack, tmp_path: Path) -> None:
    args = ["-n", "2", "--steps", "3", "--seed", "9", "--json", "--output-dir", str(tmp_path / "a")]
    result = cli("--url", stack.base, "generate", "a red circle", *args)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and [im["seed"] for im in job["images"]] == [9, 10]
    assert job["files"] == [str(tmp_path / "a" / f"{job['id']}-{k}.png") for k in (0, 1)]

    got = cli("--url", stack.base, "get", job["id"], "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == job["id"]
    plain = cli("--url", stack.base, "status", job["id"])
    assert plain.stdout.startswith(f"{job['id']} succeeded") and "/v1/images/" in plain.stdout

    replay = cli("--url", stack.base, "replay", job["id"], "--output-dir", str(tmp_path / "b"), "--json")
    assert replay.returncode == 0, replay.stderr
    again = json.loads(replay.stdout)
    for original, replayed in zip(job["files"], again["files"], strict=True):
        assert Path(original).read_bytes() == Path(replayed).read_bytes()

    models = cli("--url", stack.base, "models")
    assert models.returncode == 0 and models.stdout.startswith("tiny-sd: 1 ready, 0 queued, 64x64")


def test_errors_are_one_line_with_distinct_exit_codes(stack: Stack) -> None:
    dead = cli("--url", f"http://127.0.0.1:{free_port()}", "get", "0" * 32)
    assert dead.returncode == 4
    assert dead.stderr.count("\n") == 1 and dead.stderr.startswith("error: cannot reach the service")
    invalid = cli("--url", stack.base, "generate", "x", "--width", "13")
    assert invalid.returncode == 3
    assert invalid.stderr.startswith("error: 422 invalid_request:") and "(field width)" in invalid.stderr
    missing = cli("--url", stack.base, "cancel", "0" * 32)
    assert missing.returncode == 3 and missing.stderr.startswith("error: 404 not_found")
    for result in (dead, invalid, missing):
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_canceled_job_exits_1_and_a_timeout_exits_4(stack: Stack) -> None:
    following = subprocess.Popen(
        [sys.executable, "-m", "diffusion_client", "--url", stack.base, "generate", "long", "--steps", "100000"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert following.stderr is not None
    job_id = following.stderr.readline().split()[1]  # "job <id> queued (...)"
    # The worker is busy with that job: its replay stays queued past the 1 s timeout.
    waited = cli("--url", stack.base, "replay", job_id, "--timeout", "1")
    assert waited.returncode == 4, waited.stderr
    assert waited.stderr.splitlines()[-1].startswith("error: ") and "1 s timeout" in waited.stderr
    with DiffusionClient(stack.base) as client:
        client.cancel(waited.stderr.split()[1])
        wait_for(lambda: client.get(job_id).status == "running", 30, "the long job to start")
        client.cancel(job_id)
    _, stderr = following.communicate(timeout=30)
    assert following.returncode == 1, stderr
    assert stderr.splitlines()[-1] == f"error: job {job_id} canceled (client)"
    assert "Traceback" not in stderr + waited.stderr


def test_progress_bar_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    main, child = pty.openpty()
    args = ["--url", stack.base, "generate", "a green circle", "--steps", "30", "-o", str(tmp_path / "t.png")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffusion_client", *args],
        cwd=ROOT,
        stdin=child,
        stdout=child,
        stderr=child,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(child)
    output = b""
    while True:
        ready, _, _ = select.select([main], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(30) == 0
    text = output.decode(errors="replace")
    assert "\r" in text or "\x1b[" in text, "the bar is redrawn in place"
    assert "100%" in text and "saved" in text
