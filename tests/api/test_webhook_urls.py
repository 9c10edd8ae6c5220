"""Webhook URLs are checked against server-side request forgery at submit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ApiSettings
from tests.helpers import RedisServer, models_file


@pytest.fixture
def client(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = ApiSettings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        models_file=models_file(tmp_path),
        webhook_secret="whsec_c2VjcmV0",
        require_ready_worker=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/hook",
        "http://user:pw@93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "http://no-such-host.invalid/hook",
    ],
)
def test_non_public_or_malformed_webhook_urls_are_refused(client: TestClient, url: str) -> None:
    response = client.post("/v1/generations", json={"prompt": "p", "webhook_url": url})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "webhook_url"


def test_public_address_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/v1/generations",
        json={"prompt": "p", "webhook_url": "https://93.184.216.34/hook", "webhook_events": ["started", "completed"]},
    )
    assert response.status_code == 202, response.text
    assert response.json()["webhook"] == {
        "url": "https://93.184.216.34/hook",
        "events": ["started", "completed"],
        "deliveries": [],
    }


def test_events_without_url_and_unknown_events_are_refused(client: TestClient) -> None:
    assert (
        client.post("/v1/generations", json={"prompt": "p", "webhook_events": ["completed"]}).json()["error"]["param"]
        == "webhook_events"
    )
    bad = client.post(
        "/v1/generations", json={"prompt": "p", "webhook_url": "https://93.184.216.34/", "webhook_events": ["exploded"]}
    )
    assert bad.status_code == 422 and bad.json()["error"]["param"].startswith("webhook_events")


def test_webhooks_need_a_configured_secret(redis_server: RedisServer, prefix: str, tmp_path: Path) -> None:
    settings = ApiSettings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        models_file=models_file(tmp_path),
        require_ready_worker=False,
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/generations", json={"prompt": "p", "webhook_url": "https://93.184.216.34/"})
    assert response.status_code == 422 and "not enabled" in response.json()["error"]["message"]
