"""The API's input checks and error envelope, against a real Redis (in-process ASGI client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from app.main import create_app
from app.settings import ApiSettings
from contract.models import LoraInfo, ModelInfo
from tests.helpers import RedisServer, models_file

VALID = {"prompt": "a red circle on a blue background"}


def make_client(redis_url: str, prefix: str, tmp_path: Path, **overrides: Any) -> TestClient:
    settings = ApiSettings(
        redis_url=redis_url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        models_file=models_file(tmp_path),
        **{"require_ready_worker": False, **overrides},
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[TestClient]:
    with make_client(redis_server.url, prefix, tmp_path, max_queue_depth=3, max_body_bytes=64 * 1024) as client:
        yield client


def job_keys(redis: Redis, prefix: str) -> list[bytes]:
    return list(redis.scan_iter(f"{prefix}:job:*"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", ""),
        ("prompt", "x" * 2001),
        ("prompt", 12),
        ("negative_prompt", "x" * 2001),
        ("width", 100),
        ("width", 56),
        ("width", 4096),
        ("height", 70),
        ("height", "big"),
        ("num_inference_steps", 0),
        ("num_inference_steps", 101),
        ("guidance_scale", -1),
        ("guidance_scale", 31),
        ("seed", -1),
        ("seed", 2**32),
        ("num_images", 0),
        ("num_images", 9),
        ("model", "no-such-model"),
        ("unknown_field", 1),
        # Strict types: no silent coercion.
        ("width", "64"),
        ("num_images", True),
        ("guidance_scale", "5"),
        ("num_inference_steps", 20.0),
        # Text that is not text.
        ("prompt", "   \n\t"),
        ("prompt", "a red\x00 circle"),
        ("negative_prompt", "blue\x1b[0m"),
        # Every number has a published bound.
        ("deadline_seconds", 10**19),
        ("timeout_seconds", 10**9),
        ("stream_previews", 10**6),
        ("num_inference_steps", 10**6),
        ("output_quality", 101),
    ],
)
def test_bad_field_gives_422_naming_it(
    client: TestClient, redis: Redis, prefix: str, field: str, value: object
) -> None:
    response = client.post("/v1/generations", json={**VALID, field: value})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert error["param"] == field
    assert "Traceback" not in response.text
    assert job_keys(redis, prefix) == [], "nothing may be written for a refused request"


def test_pixel_cap_names_width(client: TestClient) -> None:
    response = client.post("/v1/generations", json={**VALID, "width": 2048, "height": 2048})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "width"
    assert "pixels" in response.json()["error"]["message"]


def test_missing_prompt_and_malformed_json(client: TestClient) -> None:
    missing = client.post("/v1/generations", json={"width": 64})
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "prompt"
    broken = client.post("/v1/generations", content=b"{not json", headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"]["type"] == "invalid_request"
    # Not even UTF-8 (found by tests/api/test_schema_fuzz.py): the same 422, not an undocumented 400.
    garbled = client.post("/v1/generations", content=b"7\xe9e", headers={"content-type": "application/json"})
    assert garbled.status_code == 422 and garbled.json()["error"]["param"] == "body"


def test_openai_route_names_the_field_our_rules_refuse(client: TestClient) -> None:
    # Fields OpenAI's schema allows and ours refuse (found by the fuzz test as 500s): 400 naming the field.
    for body, param in (
        ({"prompt": "a\x13b"}, "prompt"),
        ({"prompt": "p", "output_compression": 0}, "output_compression"),
    ):
        response = client.post("/v1/images/generations", json=body)
        assert response.status_code == 400, response.text
        assert (
            response.json()["error"]["param"] == param and response.json()["error"]["type"] == "invalid_request_error"
        )


def test_body_over_limit_gives_413(client: TestClient, redis: Redis, prefix: str) -> None:
    big = {"prompt": "x" * 70_000}
    response = client.post("/v1/generations", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold for chunked bodies too
        yield b'{"prompt": "'
        for _ in range(80):
            yield b"x" * 1000
        yield b'"}'

    chunked = client.post("/v1/generations", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert job_keys(redis, prefix) == []


def test_accepted_job_is_recorded_and_queued(client: TestClient, redis: Redis, prefix: str) -> None:
    response = client.post("/v1/generations", json={**VALID, "seed": 5, "num_images": 2})
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "queued" and job["queue_position"] == 0
    assert job["params"]["seed"] == 5 and job["params"]["num_inference_steps"] == 25
    assert client.get(response.headers["location"]).json()["id"] == job["id"]
    assert redis.llen(f"rq:queue:{prefix}.generate.shapes") == 1


def test_queue_full_gives_429_with_retry_after(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/v1/generations", json=VALID).status_code == 202
    response = client.post("/v1/generations", json=VALID)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "queue_full"
    assert int(response.headers["retry-after"]) > 0


def test_unknown_job_and_route_give_404_envelopes(client: TestClient) -> None:
    for path in ("/v1/generations/" + "0" * 32, "/v1/generations/not-an-id", "/v1/nothing"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"
    assert client.delete("/v1/generations").status_code == 405


def test_redis_down_gives_503_then_recovers(tmp_path: Path, prefix: str) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        with make_client(server.url, prefix, tmp_path, redis_timeout_seconds=0.5) as client:
            assert client.post("/v1/generations", json=VALID).status_code == 202
            server.stop()
            down = client.post("/v1/generations", json=VALID)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["type"] == "service_unavailable"
            assert "Redis" in down.json()["error"]["message"]
            assert client.get("/readyz").status_code == 503
            assert client.get("/healthz").status_code == 200
            server.start()
            again = client.post("/v1/generations", json=VALID)
            assert again.status_code == 202, again.text
            assert client.get(again.headers["location"]).status_code == 200
    finally:
        server.stop()


def test_known_model_without_ready_worker_gives_503(redis_server: RedisServer, prefix: str, tmp_path: Path) -> None:
    with make_client(redis_server.url, prefix, tmp_path, require_ready_worker=True) as client:
        response = client.post("/v1/generations", json=VALID)
    assert response.status_code == 503
    assert response.json()["error"]["param"] == "model" and "no worker" in response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) > 0


def test_openapi_documents_every_error_status(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    create = spec["paths"]["/v1/generations"]["post"]["responses"]
    assert {"202", "413", "422", "429", "503"} <= set(create)
    assert {"200", "404"} <= set(spec["paths"]["/v1/generations/{job_id}"]["get"]["responses"])
    assert {"200", "403", "404"} <= set(spec["paths"]["/v1/images/{job_id}/{name}"]["get"]["responses"])
    assert client.get("/docs").status_code == 200


def test_lora_count_is_capped_by_the_models_hot_swap_slots(client: TestClient, redis: Redis, prefix: str) -> None:
    # What a compiled worker with two hot-swap slots publishes for the default model.
    loras = [LoraInfo(name=n, sha256="0" * 64) for n in ("a", "b", "c")]
    ModelInfo(
        pipeline="StableDiffusionPipeline",
        width=64,
        height=64,
        default_steps=20,
        default_guidance_scale=5.0,
        scheduler="euler",
        schedulers=["euler"],
        device="cpu",
        dtype="float32",
        loras=loras,
        max_loras=2,
    ).publish(redis, prefix, "shapes")
    two = client.post("/v1/generations", json={**VALID, "loras": [{"name": "a"}, {"name": "b"}]})
    assert two.status_code == 202, two.text
    three = client.post("/v1/generations", json={**VALID, "loras": [{"name": n} for n in "abc"]})
    assert three.status_code == 422
    assert three.json()["error"]["param"] == "loras" and "at most 2" in three.json()["error"]["message"]
    assert client.get("/v1/models").json()["data"][0]["max_loras"] == 2


def test_the_schema_publishes_every_numeric_bound(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["GenerationCreate"]["properties"]
    for name, spec in schema.items():
        options = spec.get("anyOf", [spec])
        numeric = [o for o in options if o.get("type") in ("integer", "number")]
        for option in numeric:
            assert "maximum" in option or "exclusiveMaximum" in option, f"{name} has no upper bound"


def test_listing_survives_a_record_it_cannot_read(client: TestClient, redis: Redis, prefix: str) -> None:
    created = client.post("/v1/generations", json=VALID).json()
    redis.hset(f"{prefix}:job:{created['id']}", "params", '{"not": "params"}')  # e.g. written by another version
    good = client.post("/v1/generations", json=VALID).json()
    listed = client.get("/v1/generations")
    assert listed.status_code == 200
    assert [j["id"] for j in listed.json()["data"]] == [good["id"]]
    assert client.get(f"/v1/generations/{created['id']}").status_code == 404


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    response = client.put("/v1/generations", json=VALID)
    assert response.status_code == 405 and response.json()["error"]["type"] == "method_not_allowed"
    assert response.headers["allow"] == "GET, POST"
