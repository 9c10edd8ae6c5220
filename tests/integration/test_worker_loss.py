"""A worker killed with SIGKILL mid-job: the job is noticed, re-queued and completed by another worker."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from redis import Redis

from contract.records import JobStore
from tests.conftest import stack_env
from tests.helpers import RedisServer, start_api, start_worker, wait_for, wait_ready

pytestmark = pytest.mark.slow


def test_kill_9_mid_job_completes_on_second_worker(redis_server: RedisServer, tiny_sd: Path, tmp_path: Path) -> None:
    prefix = f"k{uuid.uuid4().hex[:10]}"
    env = stack_env(
        redis_server.url,
        prefix,
        tmp_path / "images",
        DIFFUSION_MAX_INFERENCE_STEPS="2000",
        # Bounds on noticing a dead worker: entry expiry 2 s after its last step,
        # idle workers check every second.
        DIFFUSION_HEARTBEAT_TTL_SECONDS="2",
        DIFFUSION_MAINTENANCE_INTERVAL_SECONDS="1",
        DIFFUSION_WORKER_TTL_SECONDS="16",
    )
    redis = Redis.from_url(redis_server.url)
    store = JobStore(redis, prefix, 3600)
    api = start_api(env, tmp_path / "api.log")
    workers = {
        name: start_worker(tiny_sd, {**env, "DIFFUSION_WORKER_ID": name}, tmp_path / f"{name}.log")
        for name in (f"{prefix}-a", f"{prefix}-b")
    }
    try:
        for name, worker in workers.items():
            wait_ready(worker, redis, f"{prefix}.generate.tiny-sd", name)
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
            job_id = client.post(
                "/v1/generations", json={"prompt": "survive", "num_inference_steps": 300, "seed": 3}
            ).json()["id"]

            def running_with_progress() -> str | None:
                record = store.get(job_id)
                ok = record and record.status == "running" and record.progress and record.progress.step >= 3
                return record.worker if ok and record else None

            first = wait_for(running_with_progress, 60, "the job to run a few steps")
            assert isinstance(first, str)
            workers[first].kill()  # SIGKILL: no cleanup, no goodbye

            def finished() -> bool:
                return client.get(f"/v1/generations/{job_id}").json()["status"] in ("succeeded", "failed")

            wait_for(finished, 120, "the job to finish on the other worker", interval=0.2)
            job = client.get(f"/v1/generations/{job_id}").json()
        record = store.get(job_id)
        assert job["status"] == "succeeded", job
        assert record is not None and record.attempts == 2
        assert record.worker != first and record.worker in workers
        assert len(job["images"]) == 1
    finally:
        for worker in workers.values():
            worker.stop()
        api.stop()
