"""The worker health check (image HEALTHCHECK, compose, Kubernetes readiness) passes only once the worker is warm.

A real worker whose warm-up is made to last seconds: its metrics endpoint answers during loading and
warm-up while the check fails, and the check first passes no earlier than the worker logs
"pipeline warm". If the worker ever exported diffusion_model_info before warming up, this fails.
"""

from __future__ import annotations

import importlib.util
import os
import time
import uuid
from datetime import datetime
from pathlib import Path
from types import ModuleType
from unittest import mock

import httpx

from tests.conftest import stack_env
from tests.deploy.tools import DEPLOY
from tests.helpers import RedisServer, start_worker, wait_for


def healthcheck_module() -> ModuleType:
    """deploy/healthcheck.py, imported from its file."""
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_worker_is_healthy_only_once_warm(redis_server: RedisServer, tiny_sd: Path, tmp_path: Path) -> None:
    check = healthcheck_module()
    # A warm-up of seconds, so the window between "metrics answer" and "warm" is wide.
    env = stack_env(redis_server.url, f"h{uuid.uuid4().hex[:10]}", tmp_path / "images", DIFFUSION_WARMUP_STEPS="40")
    worker = start_worker(tiny_sd, env, tmp_path / "worker.log", name="tiny-sd")
    answered_cold = 0
    try:
        with mock.patch.dict(os.environ, {"DIFFUSION_METRICS_PORT": str(worker.port)}):
            deadline = time.monotonic() + 120
            while (problem := check.check_worker()) is not None:
                assert worker.proc.poll() is None, worker.logs()
                assert time.monotonic() < deadline, f"never healthy: {problem}"
                if "still loading" in problem:
                    answered_cold += 1
                time.sleep(0.02)
            healthy_at = datetime.now()
        assert answered_cold > 0, "the metrics endpoint never answered before the worker was warm"
        wait_for(lambda: "pipeline warm" in worker.logs(), 10, "the warm log line")
        line = next(line for line in worker.logs().splitlines() if "pipeline warm" in line)
        warm_at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        # The sample is set just before that log line: healthy can precede it by a hair, not by a warm-up.
        assert (warm_at - healthy_at).total_seconds() < 0.2, (warm_at, healthy_at)
        assert httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=5).status_code == 200
    finally:
        worker.stop()
