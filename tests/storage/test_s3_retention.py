"""Retention on an object store: once a job's record expires, the sweeper deletes its objects from the bucket,
and objects no record knows (an API that died between upload and queueing) go once they are past retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import RedisServer, encoded, run_job, wait_for
from tests.storage.conftest import MotoServer, S3Stack, keys, start_s3_stack

RETENTION_SECONDS = 3


@pytest.fixture(scope="module")
def s3(
    redis_server: RedisServer, moto: MotoServer, tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Stack]:
    bucket = f"ret-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)
    stack = start_s3_stack(
        tmp_path_factory.mktemp("s3-retention"),
        redis_server,
        moto,
        bucket,
        tiny_sd,
        {"proxy": {}},
        DIFFUSION_JOB_RETENTION_SECONDS=str(RETENTION_SECONDS),
        DIFFUSION_SWEEP_INTERVAL_SECONDS="1",
    )
    yield stack
    stack.stop()


def test_retention_removes_a_jobs_objects(s3: S3Stack, moto: MotoServer) -> None:
    with httpx.Client(base_url=s3.base("proxy"), timeout=10) as api:
        picture = encoded(Image.new("RGB", (64, 64), (0, 0, 255)))
        job = run_job(api, {"prompt": "p", "num_inference_steps": 2, "init_image": picture, "strength": 0.5})
        assert job["status"] == "succeeded", job
        prefix = f"images/{job['id']}/"
        assert keys(moto, s3.bucket, prefix) == [f"{prefix}0-1.png", f"{prefix}init.png"]
        wait_for(lambda: api.get(f"/v1/generations/{job['id']}").status_code == 404, 30, "the record to expire")
    wait_for(lambda: keys(moto, s3.bucket, prefix) == [], 30, "the sweeper to delete the job's objects")


def test_objects_no_record_knows_are_swept_past_retention(s3: S3Stack, moto: MotoServer) -> None:
    orphan = uuid.uuid4().hex
    client = moto.client()
    client.put_object(Bucket=s3.bucket, Key=f"images/{orphan}/init.png", Body=b"left behind")
    client.put_object(Bucket=s3.bucket, Key="images/not-ours/0.png", Body=b"someone else's")
    wait_for(lambda: keys(moto, s3.bucket, f"images/{orphan}/") == [], 30, "the sweeper to delete the orphan")
    assert keys(moto, s3.bucket, "images/not-ours/") == ["images/not-ours/0.png"], "only our key shapes are touched"
