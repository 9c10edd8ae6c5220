"""LoRA adapters per request through the running service."""

from __future__ import annotations

import httpx
import numpy as np

from tests.conftest import Stack
from tests.helpers import fetch_pixels, run_job

BASE = {"prompt": "a red circle", "num_inference_steps": 4, "seed": 11}


def test_models_list_the_loras_that_fit(stack: Stack) -> None:
    models = {m["id"]: m for m in httpx.get(f"{stack.base}/v1/models").json()["data"]}
    assert [lora["name"] for lora in models["tiny-sd"]["loras"]] == ["sd-a", "sd-b"]
    assert [lora["name"] for lora in models["tiny-sd3"]["loras"]] == ["sd3-a"]
    assert all(len(lora["sha256"]) == 64 for lora in models["tiny-sd"]["loras"])


def test_lora_changes_output_scale_matters_and_nothing_leaks(stack: Stack) -> None:
    with stack.client() as client:
        before = client.get(run_job(client, BASE)["images"][0]["url"]).content
        full = run_job(client, {**BASE, "loras": [{"name": "sd-a", "scale": 1.0}]})
        half = run_job(client, {**BASE, "loras": [{"name": "sd-a", "scale": 0.3}]})
        both = run_job(client, {**BASE, "loras": [{"name": "sd-a", "scale": 1.0}, {"name": "sd-b", "scale": 1.0}]})
        after = client.get(run_job(client, BASE)["images"][0]["url"]).content
        pixels = [fetch_pixels(client, j["images"][0]["url"]) for j in (full, half, both)]
        plain = fetch_pixels(client, run_job(client, BASE)["images"][0]["url"])
    assert before == after, "a job without LoRA after a LoRA job gives identical bytes"
    assert np.abs(pixels[0] - plain).max() > 0, "the LoRA changes the image"
    assert np.abs(pixels[0] - pixels[1]).max() > 0, "its scale matters"
    assert np.abs(pixels[0] - pixels[2]).max() > 0, "a second adapter adds to it"
    record = full["images"][0]["reproducibility"]["loras"]
    assert record[0]["name"] == "sd-a" and record[0]["scale"] == 1.0 and len(record[0]["sha256"]) == 64


def test_unknown_or_foreign_lora_is_422(stack: Stack) -> None:
    with stack.client() as client:
        for name in ("nope", "sd3-a"):
            response = client.post("/v1/generations", json={**BASE, "loras": [{"name": name}]})
            assert response.status_code == 422
            assert response.json()["error"]["param"] == "loras.0.name"
        too_many = client.post("/v1/generations", json={**BASE, "loras": [{"name": "sd-a"}] * 2})
        assert too_many.status_code == 422 and too_many.json()["error"]["param"] == "loras"
        flow = run_job(client, {**BASE, "model": "tiny-sd3", "loras": [{"name": "sd3-a", "scale": 0.8}]})
        assert flow["status"] == "succeeded"
