"""The access log: one line per request with id, method, route template, status, duration and key name; never a
prompt, never a signed query string."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import Depends, Request
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import ApiSettings
from contract.logs import JsonFormatter
from tests.helpers import RedisServer, models_file

PROMPT = "a lighthouse only the tester knows about 7f3a"


@pytest.fixture
def client(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = ApiSettings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        default_model="tiny-sd",
        models_file=models_file(tmp_path, 64, "tiny-sd"),
        require_ready_worker=False,
        log_format="json",
    )
    app = create_app(settings)

    # What authentication does (contract in app/accesslog.py): set request.state.key_name while handling.
    def authenticated(request: Request) -> None:
        request.state.key_name = "ci-key"

    app.add_api_route("/test/authenticated", lambda: {"ok": True}, dependencies=[Depends(authenticated)])
    with TestClient(app) as client:
        yield client


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The access log's lines as the JSON formatter writes them (bound fields included)."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "diffusion.access"]


def test_one_json_line_per_request_without_the_prompt(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer = client.post(
        "/v1/generations", json={"prompt": PROMPT, "num_inference_steps": 2}, headers={"X-Request-ID": "req-42"}
    )
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    client.get(f"/v1/generations/{job_id}?probe={PROMPT[:9]}")
    client.get(f"/v1/images/{job_id}/0.png?expires=1&sig=deadbeefcafe")
    client.get("/test/authenticated")
    lines = access_lines(caplog)
    assert [(line["method"], line["route"], line["status"]) for line in lines] == [
        ("POST", "/v1/generations", 202),
        ("GET", "/v1/generations/{job_id}", 200),
        ("GET", "/v1/images/{job_id}/{name}", 403),
        ("GET", "/test/authenticated", 200),
    ]
    first = lines[0]
    assert first["request_id"] == "req-42" and first["logger"] == "diffusion.access"
    assert isinstance(first["duration_ms"], float) and 0 < first["duration_ms"] < 10_000
    assert "key_name" not in first, "no key: auth is off"
    assert lines[-1]["key_name"] == "ci-key"
    assert all(len(str(line["request_id"])) == 32 for line in lines[1:]), "generated ids otherwise"
    # Every line the server side logged, whatever the logger (the test's HTTP client logs its own URLs).
    server = [r for r in caplog.records if not r.name.startswith("httpx")]
    everything = "\n".join(logging.Formatter().format(r) + json.dumps(r.__dict__, default=str) for r in server)
    assert PROMPT not in everything and PROMPT[:9] not in everything, "the prompt reached a log"
    assert "deadbeefcafe" not in everything, "a signature reached a log"


def test_probes_are_debug_and_failures_are_info(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/healthz")
    client.get("/v1/nothing-here")
    client.post("/v1/generations", json={"prompt": ""})
    levels = [(r.levelname, r.route, r.status) for r in caplog.records if r.name == "diffusion.access"]  # type: ignore[attr-defined]
    assert levels == [("DEBUG", "/healthz", 200), ("INFO", "unmatched", 404), ("INFO", "/v1/generations", 422)]
