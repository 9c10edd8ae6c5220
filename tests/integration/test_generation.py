"""End to end over real HTTP: API -> Redis/RQ -> warm worker -> storage -> signed image URL."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import Stack
from tests.helpers import encoded, fetch_pixels, run_job, run_job_by_id, wait_for


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sd3"])
def test_generation_succeeds_and_images_download(stack: Stack, model: str) -> None:
    with stack.client() as client:
        job = run_job(
            client,
            {
                "prompt": "a red circle on a blue background",
                "model": model,
                "width": 64,
                "height": 96,
                "num_inference_steps": 4,
                "num_images": 2,
                "seed": 1234,
            },
        )
        assert job["status"] == "succeeded", job
        assert job["model"] == model
        assert job["params"]["seed"] == 1234 and job["params"]["num_images"] == 2
        assert job["started_at"] and job["finished_at"] and job["created_at"] <= job["started_at"]
        assert [im["seed"] for im in job["images"]] == [1234, 1235]
        for image in job["images"]:
            assert (image["width"], image["height"], image["content_type"]) == (64, 96, "image/png")
            assert fetch_pixels(client, image["url"]).shape == (96, 64, 3)


def test_each_image_regenerates_alone_from_its_seed(stack: Stack) -> None:
    body = {"prompt": "a green square", "num_inference_steps": 3, "guidance_scale": 5.0}
    with stack.client() as client:
        pair = run_job(client, {**body, "num_images": 2, "seed": 77})
        first, second = (fetch_pixels(client, im["url"]) for im in pair["images"])
        assert np.abs(first - second).max() > 10, "two images of one request must differ"
        alone = run_job(client, {**body, "num_images": 1, "seed": pair["images"][1]["seed"]})
        again = fetch_pixels(client, alone["images"][0]["url"])
    # Batched arithmetic may round differently from batch size 1 (README: Reproducibility).
    assert np.abs(again - second).max() <= 1


def test_omitted_seed_is_picked_and_returned(stack: Stack) -> None:
    with stack.client() as client:
        job = run_job(client, {"prompt": "a blue triangle", "num_inference_steps": 2})
    assert job["status"] == "succeeded"
    assert isinstance(job["params"]["seed"], int)
    assert job["images"][0]["seed"] == job["params"]["seed"]
    assert (job["params"]["width"], job["params"]["height"]) == (64, 64), "defaults to the model's native size"


def test_progress_is_visible_while_running(stack: Stack) -> None:
    with stack.client() as client:
        created = client.post("/v1/generations", json={"prompt": "slow", "num_inference_steps": 60}).json()
        seen: list[dict[str, Any]] = []

        def progressed() -> bool:
            job = client.get(f"/v1/generations/{created['id']}").json()
            if job["status"] == "running" and job["progress"]:
                seen.append(job["progress"])
            return job["status"] == "succeeded"

        wait_for(progressed, 60, "the job to finish", interval=0.02)
    assert seen, "progress was never observed while running"
    assert all(p["total_steps"] == 60 for p in seen)
    assert any(0 < p["step"] < 60 for p in seen)


def test_step_histogram_counts_every_step(stack: Stack) -> None:
    def step_count() -> float:
        text = httpx.get(f"http://127.0.0.1:{stack.workers['tiny-sd'].port}/metrics").text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("diffusion_denoise_step_duration_seconds_count{") and 'model="tiny-sd"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    before = step_count()
    with stack.client() as client:
        job = run_job(client, {"prompt": "count my steps", "num_inference_steps": 7, "num_images": 2})
    assert job["status"] == "succeeded"
    # One observation per step of the whole batch (the label batch_size says how many images it carried).
    assert step_count() - before == 7


def test_queue_position_and_readiness(stack: Stack) -> None:
    with stack.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready_workers"] == 1
        # Step counts differ, so no two of them can share a batch: each waits for its own turn.
        jobs = [
            client.post("/v1/generations", json={"prompt": "queued", "num_inference_steps": steps}).json()
            for steps in (30, 31, 32)
        ]
        positions = [client.get(f"/v1/generations/{j['id']}").json().get("queue_position") for j in jobs]
        assert positions[-1] is not None and positions[-1] >= 1, positions
        for job in jobs:
            wait_for(
                lambda j=job: client.get(f"/v1/generations/{j['id']}").json()["status"] == "succeeded",
                60,
                "queued jobs to finish",
            )


def test_metrics_endpoints_expose_documented_names(stack: Stack) -> None:
    api = httpx.get(f"{stack.base}/metrics").text
    assert "diffusion_queue_depth{" in api and "diffusion_workers_ready{" in api
    worker = httpx.get(f"http://127.0.0.1:{stack.workers['tiny-sd'].port}/metrics").text
    assert "diffusion_model_info{" in worker and 'pipeline="StableDiffusionPipeline"' in worker


def test_scheduler_by_name_is_resolved_and_validated_per_model(stack: Stack) -> None:
    with stack.client() as client:
        default = run_job(client, {"prompt": "a circle", "num_inference_steps": 3})
        assert default["params"]["scheduler"] == "euler"
        dpm = run_job(client, {"prompt": "a circle", "num_inference_steps": 3, "scheduler": "dpmpp_2m"})
        assert dpm["status"] == "succeeded" and dpm["params"]["scheduler"] == "dpmpp_2m"
        refused = client.post("/v1/generations", json={"prompt": "p", "model": "tiny-sd3", "scheduler": "ddim"})
        assert refused.status_code == 422
        assert refused.json()["error"]["param"] == "scheduler" and "flow_euler" in refused.json()["error"]["message"]
        flow = run_job(client, {"prompt": "a circle", "model": "tiny-sd3", "num_inference_steps": 3})
        assert flow["params"]["scheduler"] == "flow_euler"


@pytest.mark.parametrize(
    ("fmt", "content_type", "pil"), [("jpeg", "image/jpeg", "JPEG"), ("webp", "image/webp", "WEBP")]
)
def test_lossy_output_formats(stack: Stack, fmt: str, content_type: str, pil: str) -> None:
    with stack.client() as client:
        job = run_job(client, {"prompt": "x", "num_inference_steps": 2, "output_format": fmt, "output_quality": 50})
        image = job["images"][0]
        assert image["content_type"] == content_type and image["url"].split("?")[0].endswith(f".{fmt}")
        response = client.get(image["url"])
    assert response.headers["content-type"] == content_type
    assert Image.open(io.BytesIO(response.content)).format == pil


def test_png_metadata_reproducibility_record_and_replay(stack: Stack) -> None:
    with stack.client() as client:
        job = run_job(
            client,
            {
                "prompt": "a red circle",
                "negative_prompt": "blue",
                "num_inference_steps": 3,
                "seed": 31,
                "scheduler": "ddim",
            },
        )
        image = job["images"][0]
        png = client.get(image["url"]).content
        text = Image.open(io.BytesIO(png)).text  # type: ignore[attr-defined]
        assert text["prompt"] == "a red circle" and text["negative_prompt"] == "blue"
        assert (text["seed"], text["steps"], text["scheduler"], text["model"], text["size"]) == (
            "31",
            "3",
            "ddim",
            "tiny-sd",
            "64x64",
        )
        record = image["reproducibility"]
        assert record["model"] == "tiny-sd" and record["model_revision"].startswith("sha256:")
        assert record["scheduler"]["class"] == "DDIMScheduler" and "beta_schedule" in record["scheduler"]["config"]
        assert record["seed"] == 31 and record["dtype"] == "float32" and record["device"] == "cpu"
        assert record["torch"] and record["diffusers"] and record["loras"] == []
        replayed = client.post(f"/v1/generations/{job['id']}/replay")
        assert replayed.status_code == 202 and replayed.json()["id"] != job["id"]
        assert replayed.json()["params"] == job["params"]
        again = run_job_by_id(client, replayed.json()["id"])
        assert client.get(again["images"][0]["url"]).content == png, "same request, same bytes"


def test_models_endpoint_lists_served_models(stack: Stack) -> None:
    models = {m["id"]: m for m in httpx.get(f"{stack.base}/v1/models").json()["data"]}
    assert list(models) == ["tiny-sd", "tiny-sd3"]
    sd, sd3 = models["tiny-sd"], models["tiny-sd3"]
    assert sd["pipeline"] == "StableDiffusionPipeline" and sd3["pipeline"] == "StableDiffusion3Pipeline"
    assert (sd["width"], sd["height"], sd["ready_workers"]) == (64, 64, 1)
    assert "dpmpp_2m_karras" in sd["schedulers"] and sd3["schedulers"] == ["flow_euler"]
    assert sd["device"] == "cpu" and sd["dtype"] == "float32"


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sd3"])
def test_image_to_image_and_inpainting_run(stack: Stack, model: str) -> None:
    init = Image.new("RGB", (64, 96), (30, 70, 220))
    mask = Image.new("L", (64, 96), 0)
    mask.paste(255, (16, 16, 48, 48))
    body = {"prompt": "a red circle", "model": model, "num_inference_steps": 10, "seed": 3, "init_image": encoded(init)}
    with stack.client() as client:
        low = run_job(client, {**body, "strength": 0.3})
        high = run_job(client, {**body, "strength": 0.9})
        inpaint = run_job(client, {**body, "mask_image": encoded(mask)})
        for job in (low, high, inpaint):
            assert job["status"] == "succeeded", job
            assert (job["params"]["width"], job["params"]["height"]) == (64, 96)
        # Fewer steps run at low strength: the pipeline starts from the partly noised input.
        assert low["progress"]["total_steps"] == 10
        pixels = [fetch_pixels(client, j["images"][0]["url"]) for j in (low, high, inpaint)]
    assert pixels[0].shape == (96, 64, 3)
    assert np.abs(pixels[0] - pixels[1]).max() > 0, "strength changes the output"


def test_controlnet_steers_the_image(stack: Stack) -> None:
    white, black = Image.new("RGB", (64, 64), (255, 255, 255)), Image.new("RGB", (64, 64), (0, 0, 0))
    body = {"prompt": "a red circle", "num_inference_steps": 4, "seed": 8, "controlnet": "edges"}
    with stack.client() as client:
        jobs = [
            run_job(client, {**body, "control_image": encoded(white)}),
            run_job(client, {**body, "control_image": encoded(black)}),
            run_job(client, {**body, "control_image": encoded(white), "controlnet_conditioning_scale": 0}),
            run_job(client, {key: value for key, value in body.items() if key != "controlnet"}),
        ]
        assert all(j["status"] == "succeeded" for j in jobs), jobs
        pixels = [fetch_pixels(client, j["images"][0]["url"]) for j in jobs]
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        foreign = client.post("/v1/generations", json={**body, "model": "tiny-sd3", "control_image": encoded(white)})
        missing = client.post("/v1/generations", json=body)
    assert np.abs(pixels[0] - pixels[1]).max() > 0, "the control image changes the output"
    assert np.abs(pixels[2] - pixels[3]).max() <= 1, "at scale 0 the ControlNet does nothing"
    assert models["tiny-sd"]["controlnets"] == ["edges"] and models["tiny-sd3"]["controlnets"] == []
    assert foreign.status_code == 422 and foreign.json()["error"]["param"] == "controlnet"
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "control_image"
