"""API keys against the real API process: 401s, job ownership, admin, quotas, revocation, auth modes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from redis import Redis

from tests.conftest import Stack, stack_env
from tests.helpers import ROOT, RedisServer, free_port, sse, start_api, wait_for

STACK_ENV = {
    "DIFFUSION_AUTH": "required",
    "DIFFUSION_MAX_INFERENCE_STEPS": "2000",
    "DIFFUSION_CORS_ORIGINS": '["https://app.example"]',
}
STACK_MODELS = ("tiny-sd",)


def keys_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m app.keys ...` as an operator runs it."""
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "app.keys", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=60
    )


def new_key(stack: Stack, name: str, *options: str) -> str:
    """Create a key with the CLI; the key is the last line of its output."""
    done = keys_cli(stack.env, "create", "--name", name, *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def keys(stack: Stack) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {
        "a": new_key(stack, f"a-{suffix}"),
        "b": new_key(stack, f"b-{suffix}"),
        "admin": new_key(stack, f"ops-{suffix}", "--admin"),
    }


def client(stack: Stack, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=stack.base, timeout=10, headers=headers)


def submit(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/generations", json={"prompt": "p", "num_inference_steps": 2, **body})


def test_no_key_or_a_wrong_one_is_401(stack: Stack, keys: dict[str, str]) -> None:
    for key in (None, "dsk_nope_nope", keys["a"][:-2] + "xx", "not-even-a-key"):
        with client(stack, key) as http:
            for method, path in (("POST", "/v1/generations"), ("GET", "/v1/generations"), ("GET", "/v1/models")):
                response = http.request(method, path, json={"prompt": "p"} if method == "POST" else None)
                assert response.status_code == 401, (key, path, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"]["type"] == "unauthorized"
    with client(stack, None) as http:
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        assert http.get("/playground").status_code == 200
        assert http.get("/metrics").status_code == 401


def test_jobs_belong_to_their_key(stack: Stack, keys: dict[str, str]) -> None:
    with client(stack, keys["a"]) as a, client(stack, keys["b"]) as b, client(stack, keys["admin"]) as admin:
        mine = submit(a, num_inference_steps=1500).json()
        other = submit(b).json()
        wait_for(lambda: a.get(f"/v1/generations/{mine['id']}").json()["status"] == "running", 60, "a running job")
        job = f"/v1/generations/{mine['id']}"
        for method, path in (
            ("GET", job),
            ("GET", f"{job}/events"),
            ("POST", f"{job}/cancel"),
            ("DELETE", job),
            ("POST", f"{job}/replay"),
        ):
            refused = b.request(method, path)
            assert refused.status_code == 404, (method, path, refused.text)
        assert mine["id"] not in [j["id"] for j in b.get("/v1/generations").json()["data"]]
        assert other["id"] in [j["id"] for j in b.get("/v1/generations").json()["data"]]
        seen = {j["id"] for j in admin.get("/v1/generations?limit=100").json()["data"]}
        assert {mine["id"], other["id"]} <= seen, "an admin key sees every caller's jobs"
        assert admin.post(f"{job}/cancel").status_code == 202, "and manages them"
        assert a.get(job).json()["status"] == "canceled"
        assert a.get(f"/v1/generations/{other['id']}").status_code == 404


def test_idempotency_keys_are_per_api_key(stack: Stack, keys: dict[str, str]) -> None:
    headers = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    with client(stack, keys["a"]) as a, client(stack, keys["b"]) as b:
        first = a.post("/v1/generations", json={"prompt": "same"}, headers=headers)
        again = a.post("/v1/generations", json={"prompt": "same"}, headers=headers)
        theirs = b.post("/v1/generations", json={"prompt": "same"}, headers=headers)
    assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]


def test_requests_per_minute_quota_gives_429_with_retry_after(stack: Stack) -> None:
    key = new_key(stack, f"slow-{uuid.uuid4().hex[:6]}", "--requests-per-minute", "3")
    with client(stack, key) as http:
        accepted = [submit(http).status_code for _ in range(3)]
        refused = submit(http)
        reading = http.get("/v1/generations")
    assert accepted == [202, 202, 202]
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert reading.status_code == 200, "reads do not count against the job-request quota"
    assert len(reading.json()["data"]) == 3, "nothing was queued for the refused request"


def test_active_jobs_quota(stack: Stack) -> None:
    key = new_key(stack, f"busy-{uuid.uuid4().hex[:6]}", "--max-active-jobs", "1")
    with client(stack, key) as http:
        running = submit(http, num_inference_steps=1500).json()
        refused = submit(http)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limited"
        assert refused.headers["retry-after"]
        http.post(f"/v1/generations/{running['id']}/cancel")
        wait_for(lambda: submit(http).status_code == 202, 30, "a slot to free up after the cancel")


def test_revoked_key_is_refused_on_its_next_request(stack: Stack) -> None:
    name = f"gone-{uuid.uuid4().hex[:6]}"
    key = new_key(stack, name)
    with client(stack, key) as http:
        assert http.get("/v1/generations").status_code == 200
        listed = keys_cli(stack.env, "list")
        assert name in listed.stdout and key not in listed.stdout, "list shows names, never keys"
        assert keys_cli(stack.env, "revoke", name).returncode == 0
        assert http.get("/v1/generations").status_code == 401
    assert keys_cli(stack.env, "revoke", name).returncode == 1


def test_openai_sdk_sends_its_api_key(stack: Stack, keys: dict[str, str]) -> None:
    sdk = openai.OpenAI(base_url=f"{stack.base}/v1", api_key=keys["a"], max_retries=0)
    result = sdk.images.generate(prompt="a red circle", n=1, size="64x64", response_format="url")
    image = httpx.get(result.data[0].url or "")
    assert image.status_code == 200, "signed image URLs need no key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{stack.base}/v1", api_key="wrong", max_retries=0).images.generate(prompt="p")


def test_metrics_need_an_admin_key(stack: Stack, keys: dict[str, str]) -> None:
    with client(stack, keys["a"]) as user, client(stack, keys["admin"]) as admin:
        assert user.get("/metrics").status_code == 404
        scraped = admin.get("/metrics")
    assert scraped.status_code == 200 and "diffusion_http_requests_total" in scraped.text
    assert keys["admin"] not in scraped.text and keys["a"] not in scraped.text, "metrics name keys, never show them"


def test_sse_stream_of_own_job(stack: Stack, keys: dict[str, str]) -> None:
    with client(stack, keys["a"]) as http:
        created = submit(http).json()
        events = sse(http, created["id"])
    assert events[-1][1]["status"] == "succeeded"


def test_cors_only_for_configured_origins(stack: Stack) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{stack.base}/v1/generations",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )

    allowed, other = preflight("https://app.example"), preflight("https://evil.example")
    assert allowed.headers.get("access-control-allow-origin") == "https://app.example"
    assert "authorization" in allowed.headers.get("access-control-allow-headers", "").lower()
    assert "access-control-allow-origin" not in other.headers


@pytest.fixture
def bare_api(redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield stack_env(redis_server.url, f"q{uuid.uuid4().hex[:8]}", tmp_path / "images")


@pytest.mark.parametrize(("host", "needs_key"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_auto_mode_requires_keys_unless_on_loopback(
    bare_api: dict[str, str], tmp_path: Path, host: str, needs_key: bool
) -> None:
    port = free_port()
    api = start_api({**bare_api, "DIFFUSION_AUTH": "auto"}, tmp_path / "api.log", host=host, port=port)
    try:
        status = httpx.get(f"http://127.0.0.1:{port}/v1/generations").status_code
        assert status == (401 if needs_key else 200)
    finally:
        api.stop()
    Redis.from_url(bare_api["REDIS_URL"]).close()
