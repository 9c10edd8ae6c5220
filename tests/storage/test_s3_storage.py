"""S3Storage against a real S3 API over HTTP (moto's server): objects, prefixes, presigned URLs, bounded failures."""

from __future__ import annotations

import calendar
import json
import socket
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from contract.storage import InvalidKey, ObjectMissing, StorageError, image_key, input_key, open_storage
from contract.storage.s3 import S3Storage
from tests.helpers import ROOT, free_port
from tests.storage.conftest import MotoServer, keys

JOB = "0123456789abcdef" * 2
OTHER = "fedcba9876543210" * 2
README = (ROOT / "README.md").read_text()


@pytest.fixture
def storage(moto: MotoServer, bucket: str) -> S3Storage:
    return S3Storage(bucket, "some/prefix", timeout_seconds=2, retries=1)


def test_put_and_get_under_the_prefix_with_content_type(storage: S3Storage, moto: MotoServer, bucket: str) -> None:
    key = image_key(JOB, 0, "webp", 1)
    storage.put(key, b"RIFF....WEBP", "image/webp")
    assert storage.get(key) == b"RIFF....WEBP"
    assert keys(moto, bucket) == [f"some/prefix/{key}"]
    head = moto.client().head_object(Bucket=bucket, Key=f"some/prefix/{key}")
    assert head["ContentType"] == "image/webp"


def test_missing_object_is_object_missing(storage: S3Storage) -> None:
    with pytest.raises(ObjectMissing):
        storage.get(image_key(JOB, 3, "png", 1))


def test_a_missing_bucket_is_a_storage_error_not_a_missing_object(moto: MotoServer) -> None:
    storage = S3Storage("no-such-bucket-here")
    for call in (
        lambda: storage.put(image_key(JOB, 0, "png", 1), b"x", "image/png"),
        lambda: storage.get(image_key(JOB, 0, "png", 1)),
    ):
        with pytest.raises(StorageError) as caught:
            call()
        assert not isinstance(caught.value, ObjectMissing)
        assert "404" in str(caught.value)


@pytest.mark.parametrize("key", ["../x.png", f"{JOB}/../../x.png", f"/{JOB}/0.png", f"{JOB}/0.exe", ""])
def test_malformed_keys_never_reach_the_store(storage: S3Storage, moto: MotoServer, bucket: str, key: str) -> None:
    with pytest.raises(InvalidKey):
        storage.put(key, b"x", "image/png")
    with pytest.raises(InvalidKey):
        storage.get(key)
    with pytest.raises(InvalidKey):
        storage.url(key, int(time.time()) + 60)
    with pytest.raises(InvalidKey):
        storage.delete_job("../" + JOB)
    assert keys(moto, bucket) == []


def test_delete_job_removes_that_job_only(storage: S3Storage, moto: MotoServer, bucket: str) -> None:
    for key in (
        image_key(JOB, 0, "png", 1),
        image_key(JOB, 1, "png", 1),
        input_key(JOB, "init"),
        image_key(OTHER, 0, "png", 1),
    ):
        storage.put(key, b"x", "image/png")
    moto.client().put_object(Bucket=bucket, Key=f"some/prefix/{JOB}x/0.png", Body=b"not ours")
    storage.delete(image_key(JOB, 1, "png", 1))  # one object: the others stay
    assert f"some/prefix/{JOB}/1-1.png" not in keys(moto, bucket) and f"some/prefix/{JOB}/0-1.png" in keys(moto, bucket)
    storage.delete(image_key(JOB, 1, "png", 1))  # already gone: no error
    storage.delete_job(JOB)
    assert keys(moto, bucket) == [f"some/prefix/{JOB}x/0.png", f"some/prefix/{OTHER}/0-1.png"]
    storage.delete_job(JOB)  # nothing left: no error


def test_jobs_older_than_lists_every_page(moto: MotoServer, bucket: str) -> None:
    # More objects than one ListObjectsV2 page holds (1000): the job on the second page is found too.
    # Written into moto's state directly (a thousand PUTs over HTTP take seconds); listed over HTTP.
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    jobs = [uuid.uuid4().hex for _ in range(1001)]
    for job in jobs:
        backend.put_object(bucket, f"p/{job}/0.png", b"x")
    backend.put_object(bucket, "p/not-a-job/0.png", b"x")
    storage = S3Storage(bucket, "p")
    assert sorted(storage.jobs_older_than(time.time() + 5)) == sorted(jobs)
    assert list(storage.jobs_older_than(time.time() - 60)) == []


def test_presigned_url_fetches_with_plain_http_and_expires_on_time(storage: S3Storage) -> None:
    key = image_key(JOB, 0, "png", 1)
    storage.put(key, b"\x89PNG-bytes", "image/png")
    expires_at = int(time.time()) + 120
    url = storage.url(key, expires_at)
    assert url is not None
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == b"\x89PNG-bytes"
    assert response.headers["content-type"] == "image/png"
    # moto serves presigned URLs without checking their expiry; a real store refuses them once
    # X-Amz-Date + X-Amz-Expires has passed, so that sum must be the expiry we promise, never later.
    query = parse_qs(urlsplit(url).query)
    signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ"))
    assert expires_at - 1 <= signed_at + int(query["X-Amz-Expires"][0]) <= expires_at


def test_open_storage_reads_bucket_and_prefix() -> None:
    storage = open_storage("s3://my-bucket/a/b/", timeout_seconds=1, retries=0)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("my-bucket", "a/b")
    bare = open_storage("s3://my-bucket")
    assert isinstance(bare, S3Storage) and bare.prefix == ""


def test_a_stopped_store_fails_every_call_within_seconds(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server = MotoServer()
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    server.client().create_bucket(Bucket=bucket + "-x")
    storage = S3Storage(bucket + "-x", timeout_seconds=2, retries=2)
    storage.put(image_key(JOB, 0, "png", 1), b"x", "image/png")  # a keep-alive connection now exists
    server.stop()
    calls = {
        "put": lambda: storage.put(image_key(JOB, 1, "png", 1), b"x", "image/png"),
        "get": lambda: storage.get(image_key(JOB, 0, "png", 1)),
        "delete": lambda: storage.delete_job(JOB),
        "list": lambda: list(storage.jobs_older_than(time.time())),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            call()
        assert not isinstance(caught.value, ObjectMissing), name
        assert time.monotonic() - started < 5, f"{name} took {time.monotonic() - started:.1f}s"
        assert "\n" not in str(caught.value), "one line, no debug dump"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung store."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(64)
        yield port


def test_a_hung_store_fails_after_the_timeout_and_retries(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, silent_port: int
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent_port}")
    storage = S3Storage("hung", timeout_seconds=1, retries=1)
    started = time.monotonic()
    with pytest.raises(StorageError):
        storage.get(image_key(JOB, 0, "png", 1))
    # Two attempts of one second each, plus backoff: bounded, nowhere near a hang.
    assert time.monotonic() - started < 4


def test_the_readmes_lifecycle_rule_is_one_the_s3_api_accepts(moto: MotoServer, bucket: str) -> None:
    rule = next(line for line in README.splitlines() if line.startswith('{"Rules"'))
    moto.client().put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=json.loads(rule))
    stored = moto.client().get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [(r["Filter"]["Prefix"], r["Expiration"]["Days"]) for r in stored] == [("images/", 2)]
