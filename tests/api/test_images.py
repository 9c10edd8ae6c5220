"""Signed image URLs: only an untampered, unexpired signature for a well-formed key reads a file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ApiSettings
from app.signing import UrlSigner
from contract.storage import LocalStorage
from tests.helpers import RedisServer

JOB = "ab" * 16
KEY = f"{JOB}/0.png"
PNG = b"\x89PNG\r\n\x1a\n" + b"fake-but-served-as-is"


@pytest.fixture
def client(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[TestClient]:
    storage = tmp_path / "images"
    LocalStorage(storage).put(KEY, PNG, "image/png")
    (tmp_path / "secret.txt").write_text("do not serve")
    settings = ApiSettings(
        redis_url=redis_server.url, key_prefix=prefix, storage_url=str(storage), url_signing_secret="secret"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def signed(key: str, secret: bytes = b"secret", ttl: int = 60) -> str:
    expires, sig = UrlSigner(secret, ttl).sign(key)
    return f"/v1/images/{key}?expires={expires}&sig={sig}"


def test_signed_url_serves_bytes_with_content_type(client: TestClient) -> None:
    response = client.get(signed(KEY))
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


def test_unsigned_tampered_and_foreign_signatures_are_refused(client: TestClient) -> None:
    assert client.get(f"/v1/images/{KEY}").status_code == 403
    url = signed(KEY)
    tampered_sig = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert client.get(tampered_sig).status_code == 403
    expires = int(url.split("expires=")[1].split("&")[0])
    assert client.get(url.replace(f"expires={expires}", f"expires={expires + 3600}")).status_code == 403
    assert client.get(signed(KEY, secret=b"other")).status_code == 403
    other_key = signed(f"{JOB}/1.png").replace("/1.png", "/0.png")
    assert client.get(other_key).status_code == 403


def test_expired_url_is_refused(client: TestClient) -> None:
    expires = int(time.time()) - 1
    sig = UrlSigner(b"secret", 60)._digest(KEY, expires)
    response = client.get(f"/v1/images/{KEY}?expires={expires}&sig={sig}")
    assert response.status_code == 403
    assert "expired" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/../secret.txt",
        "/v1/images/%2e%2e/secret.txt",
        f"/v1/images/{JOB}/..%2f..%2fsecret.txt",
        f"/v1/images/{JOB}/%2e%2e%2f%2e%2e%2fsecret.txt",
        "/v1/images/%2fetc/passwd",
        "/v1/images//etc/passwd",
        f"/v1/images/{JOB}/0.png%00.txt",
        f"/v1/images/{JOB.upper()}/0.png",
        f"/v1/images/{JOB}/0.txt",
    ],
)
def test_traversal_and_malformed_paths_never_reach_the_filesystem(client: TestClient, path: str) -> None:
    response = client.get(path + "?expires=9999999999&sig=" + "0" * 64)
    assert 400 <= response.status_code < 500
    assert b"do not serve" not in response.content


def test_signature_for_traversal_key_is_still_refused(client: TestClient) -> None:
    # Even a correctly signed URL cannot name anything but a well-formed key.
    response = client.get(signed("../secret.txt"))
    assert response.status_code in (403, 404)
    assert b"do not serve" not in response.content


def test_missing_image_is_404(client: TestClient) -> None:
    assert client.get(signed(f"{JOB}/5.png")).status_code == 404
