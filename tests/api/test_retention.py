"""Retention: past it a job answers 404 and the sweeper removes its images from disk."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import ApiSettings
from contract.jobs import GenerationParams, ImageRecord, JobRecord, JobStatus
from contract.records import JobStore
from contract.storage import LocalStorage, image_key
from tests.helpers import RedisServer, wait_for


def test_expired_job_is_404_and_its_images_are_swept(
    redis_server: RedisServer, prefix: str, redis: Redis, tmp_path: Path
) -> None:
    settings = ApiSettings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        job_retention_seconds=1,
        sweep_interval_seconds=1,
    )
    store = JobStore(redis, prefix, retention_seconds=1)
    job_id = uuid.uuid4().hex
    params = GenerationParams(
        prompt="p", width=64, height=64, num_inference_steps=2, guidance_scale=1.0, seed=1, num_images=1
    )
    with redis.pipeline() as pipe:
        pipe.multi()
        store.create(
            JobRecord(id=job_id, model="tiny-sd", status=JobStatus.QUEUED, params=params, created_at=time.time()), pipe
        )
        pipe.execute()
    key = image_key(job_id, 0, "png", 1)
    LocalStorage(tmp_path).put(key, b"png", "image/png")
    attempt = store.mark_running(job_id, "w", 2)
    assert attempt == 1
    image = ImageRecord(key=key, width=64, height=64, seed=1, content_type="image/png", bytes=3)
    assert store.succeed(job_id, [image], 2, attempt)
    with TestClient(create_app(settings)) as client:
        assert client.get(f"/v1/generations/{job_id}").status_code == 200
        wait_for(lambda: client.get(f"/v1/generations/{job_id}").status_code == 404, 10, "the record to expire")
        wait_for(lambda: not (tmp_path / job_id).exists(), 10, "the sweeper to delete the images")
    assert redis.zscore(f"{prefix}:jobs", job_id) is None
