"""Input images are decoded safely at the API: every bad one is a 422 naming its field, nothing is queued."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

from app.main import create_app
from app.settings import ApiSettings
from tests.helpers import RedisServer, models_file


def b64(image: Image.Image, fmt: str = "PNG", **save: object) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return base64.b64encode(buffer.getvalue()).decode()


RGB = Image.new("RGB", (64, 64), (200, 30, 30))
GOOD = b64(RGB)


@pytest.fixture
def client(redis_server: RedisServer, prefix: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = ApiSettings(
        redis_url=redis_server.url,
        key_prefix=prefix,
        storage_url=str(tmp_path),
        url_signing_secret="s",
        models_file=models_file(tmp_path),
        require_ready_worker=False,
        max_image_pixels=512 * 512,
        max_body_bytes=4 * 1024 * 1024,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def animated_png() -> str:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return base64.b64encode(buffer.getvalue()).decode()


def truncated() -> str:
    noisy = Image.effect_noise((64, 64), 64).convert("RGB")
    raw = base64.b64decode(b64(noisy))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"init_image": "not base64!"}, "init_image"),
        ({"init_image": b64(RGB, "GIF")}, "init_image"),
        ({"init_image": b64(RGB, "BMP")}, "init_image"),
        ({"init_image": "data:image/gif;base64," + b64(RGB, "GIF")}, "init_image"),
        ({"init_image": animated_png()}, "init_image"),
        ({"init_image": truncated()}, "init_image"),
        ({"init_image": b64(Image.new("RGB", (1024, 1024)))}, "init_image"),  # over the pixel cap (from the header)
        ({"init_image": b64(Image.new("RGB", (60, 64)))}, "init_image"),  # not a multiple of 8
        ({"init_image": GOOD, "width": 128}, "width"),
        ({"init_image": GOOD, "mask_image": b64(Image.new("L", (32, 32)))}, "mask_image"),
        ({"mask_image": GOOD}, "mask_image"),
        ({"strength": 0.5}, "strength"),
        ({"init_image": GOOD, "strength": 0}, "strength"),
    ],
)
def test_bad_input_images_are_422_naming_the_field(
    client: TestClient, redis: Redis, prefix: str, body: dict[str, object], field: str
) -> None:
    response = client.post("/v1/generations", json={"prompt": "p", **body})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == field
    assert list(redis.scan_iter(f"{prefix}:job:*")) == []


def test_decompression_bomb_is_refused_before_decoding(client: TestClient) -> None:
    # 20000x20000 zeros compress to a few hundred KB; the header alone must stop it.
    bomb = b64(Image.new("L", (20000, 20000)), compress_level=9)
    response = client.post("/v1/generations", json={"prompt": "p", "init_image": bomb})
    assert response.status_code == 422 and response.json()["error"]["param"] == "init_image"


def test_body_over_limit_is_413(client: TestClient) -> None:
    noise = Image.effect_noise((1500, 1500), 100).convert("RGB")
    response = client.post("/v1/generations", json={"prompt": "p", "init_image": b64(noise)})
    assert response.status_code == 413


def test_good_inputs_are_stored_for_the_worker(client: TestClient, tmp_path: Path) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    response = client.post(
        "/v1/generations",
        json={
            "prompt": "p",
            "init_image": "data:image/png;base64," + GOOD,
            "mask_image": b64(mask, "WEBP", lossless=True),
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["params"]["width"] == 64 and job["params"]["strength"] == 0.8
    assert job["params"]["init_image"] == "provided" and job["params"]["mask_image"] == "provided"
    stored = Image.open(tmp_path / job["id"] / "init.png")
    assert stored.getpixel((5, 5)) == (200, 30, 30)
    assert Image.open(tmp_path / job["id"] / "mask.png").mode == "L"
