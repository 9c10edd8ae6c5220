"""The service on an object store: a worker and the API in separate working directories, sharing nothing but
Redis and an S3 bucket (moto's server over HTTP), once per image delivery mode."""

from __future__ import annotations

import calendar
import io
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from app.signing import UrlSigner
from tests.conftest import SECRET
from tests.helpers import RedisServer, encoded, run_job
from tests.storage.conftest import MotoServer, S3Stack, keys, local_files, start_s3_stack

DELIVERY = {
    "proxy": {},
    "redirect": {"DIFFUSION_IMAGE_DELIVERY": "redirect"},
    "presigned": {"DIFFUSION_IMAGE_DELIVERY": "presigned"},
}


@pytest.fixture(scope="module")
def s3(
    redis_server: RedisServer, moto: MotoServer, tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Stack]:
    bucket = f"svc-{uuid.uuid4().hex[:12]}"
    moto.client().create_bucket(Bucket=bucket)
    stack = start_s3_stack(tmp_path_factory.mktemp("s3"), redis_server, moto, bucket, tiny_sd, DELIVERY)
    yield stack
    stack.stop()


def client(s3: S3Stack, api: str) -> httpx.Client:
    return httpx.Client(base_url=s3.base(api), timeout=10)


def stored(moto: MotoServer, s3: S3Stack, key: str) -> bytes:
    return moto.client().get_object(Bucket=s3.bucket, Key=f"images/{key}")["Body"].read()  # type: ignore[no-any-return]


@pytest.mark.parametrize("delivery", list(DELIVERY))
def test_image_downloads_through_its_url_in_each_delivery_mode(s3: S3Stack, moto: MotoServer, delivery: str) -> None:
    with client(s3, delivery) as api:
        job = run_job(api, {"prompt": "a red circle", "num_inference_steps": 2, "seed": 5})
        assert job["status"] == "succeeded", job
        url = job["images"][0]["url"]
        direct = httpx.get(url, follow_redirects=False, timeout=10)
    in_bucket = stored(moto, s3, f"{job['id']}/0-1.png")
    assert in_bucket.startswith(b"\x89PNG")
    if delivery == "proxy":
        assert url.startswith(s3.base(delivery)) and direct.status_code == 200
        assert direct.content == in_bucket and direct.headers["content-type"] == "image/png"
    elif delivery == "redirect":
        assert url.startswith(s3.base(delivery)) and direct.status_code == 307
        location = direct.headers["location"]
        assert location.startswith(f"{moto.endpoint}/{s3.bucket}/images/{job['id']}/0-1.png?")
        assert "X-Amz-Signature=" in location
        assert httpx.get(url, follow_redirects=True, timeout=10).content == in_bucket
    else:
        assert url.startswith(f"{moto.endpoint}/{s3.bucket}/images/{job['id']}/0-1.png?")
        assert direct.status_code == 200 and direct.content == in_bucket
        assert direct.headers["content-type"] == "image/png"
    assert local_files(s3) == [], "nothing was written to a local disk"


def test_image_to_image_input_goes_through_the_bucket(s3: S3Stack, moto: MotoServer) -> None:
    picture = Image.new("RGB", (64, 64), (20, 200, 40))
    with client(s3, "proxy") as api:
        job = run_job(api, {"prompt": "p", "num_inference_steps": 4, "init_image": encoded(picture), "strength": 0.5})
        assert job["status"] == "succeeded", job
        # The input the API uploaded is in the bucket, where the worker read it; it is never served.
        assert keys(moto, s3.bucket, f"images/{job['id']}/") == [
            f"images/{job['id']}/0-1.png",
            f"images/{job['id']}/init.png",
        ]
        with Image.open(io.BytesIO(stored(moto, s3, f"{job['id']}/init.png"))) as uploaded:
            assert uploaded.size == (64, 64) and uploaded.getpixel((0, 0)) == (20, 200, 40)
        expires, sig = UrlSigner(SECRET.encode(), 60).sign(f"{job['id']}/init.png")
        assert api.get(f"/v1/images/{job['id']}/init.png?expires={expires}&sig={sig}").status_code == 404
    assert local_files(s3) == []


def test_expired_urls_are_refused(s3: S3Stack) -> None:
    with client(s3, "presigned") as api:
        job = run_job(api, {"prompt": "p", "num_inference_steps": 2})
    key = f"{job['id']}/0-1.png"
    expired = int(time.time()) - 1
    signature = UrlSigner(SECRET.encode(), 60)._digest(key, expired)
    for delivery in ("proxy", "redirect"):
        response = httpx.get(f"{s3.base(delivery)}/v1/images/{key}?expires={expired}&sig={signature}")
        assert response.status_code == 403, delivery
        assert "expired" in response.json()["error"]["message"]
    # A presigned URL is refused by the store itself once X-Amz-Date + X-Amz-Expires has passed
    # (moto does not check it): that moment is the job object's url_expires_at, never later.
    image = job["images"][0]
    query = parse_qs(urlsplit(image["url"]).query)
    signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    promised = datetime.fromisoformat(image["url_expires_at"]).timestamp()
    assert promised - 1 <= signed_at + int(query["X-Amz-Expires"][0]) <= promised


def test_delete_removes_the_jobs_objects(s3: S3Stack, moto: MotoServer) -> None:
    with client(s3, "proxy") as api:
        job = run_job(api, {"prompt": "p", "num_inference_steps": 2, "num_images": 2})
        assert len(keys(moto, s3.bucket, f"images/{job['id']}/")) == 2
        assert api.delete(f"/v1/generations/{job['id']}").status_code == 204
    assert keys(moto, s3.bucket, f"images/{job['id']}/") == []
