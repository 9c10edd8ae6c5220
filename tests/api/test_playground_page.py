"""The playground's files: served by the API itself, nothing from elsewhere, only the files it names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.playground import ASSETS, STATIC
from tests.helpers import RedisServer


@pytest.fixture
def client(
    redis_server: RedisServer, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The API in-process, configured through the environment as in production."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("DIFFUSION_KEY_PREFIX", prefix)
    monkeypatch.setenv("DIFFUSION_MAX_PROMPT_CHARS", "77")
    monkeypatch.chdir(tmp_path)  # the default image directory is relative: keep it out of the checkout
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client


def test_landing_links_the_playground(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and 'href="/playground"' in response.text


def test_page_embeds_the_limits_and_forbids_other_origins(client: TestClient) -> None:
    response = client.get("/playground")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "default-src 'none'" in policy
    limits = json.loads(re.search(r'id="limits">(.*?)</script>', response.text).group(1))  # type: ignore[union-attr]
    assert limits["max_prompt_chars"] == 77


def test_every_referenced_file_is_served_and_nothing_else(client: TestClient) -> None:
    sources = [STATIC / "index.html", *(STATIC / name for name in ASSETS)]
    referenced = set()
    for source in sources:
        text = source.read_text()
        referenced |= set(re.findall(r'(?:src|href)="/playground/([\w.]+)"', text))
        referenced |= set(re.findall(r'from "\./([\w.]+)"', text))
        assert not re.search(r'(?:src|href)="https?://', text), f"{source.name} loads from another origin"
    assert referenced <= set(ASSETS), referenced - set(ASSETS)
    for name in ASSETS:
        response = client.get(f"/playground/{name}")
        assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
    for name in ("index.html", "landing.html", "..%2Fplayground.py", "nope.js"):
        response = client.get(f"/playground/{name}")
        assert response.status_code == 404 and response.json()["error"]["type"] == "not_found"
