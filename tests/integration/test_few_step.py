"""A few-step, guidance-free model (LCM-style): its own limits are published by its worker and enforced."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
from redis import Redis

from tests.conftest import stack_env
from tests.helpers import RedisServer, run_job, start_api, start_worker, wait_ready


def test_lcm_model_runs_in_four_steps_with_fixed_guidance(
    redis_server: RedisServer, tiny_sd: Path, tmp_path: Path
) -> None:
    prefix = f"f{uuid.uuid4().hex[:10]}"
    # The models file names the model, its weights and its limits, for the API and the worker alike.
    models = tmp_path / "models.json"
    models.write_text(
        json.dumps(
            {
                "tiny-lcm": {
                    "source": str(tiny_sd),
                    "default_scheduler": "lcm",
                    "max_steps": 4,
                    "fixed_guidance_scale": 0,
                    "default_steps": 4,
                }
            }
        )
    )
    env = stack_env(
        redis_server.url,
        prefix,
        tmp_path / "images",
        DIFFUSION_DEFAULT_MODEL="tiny-lcm",
        DIFFUSION_SERVED_MODELS="[]",
        DIFFUSION_MODELS_FILE=str(models),
    )
    api = start_api(env, tmp_path / "api.log")
    worker = start_worker(
        Path("unused-overridden-below"),
        {**env, "DIFFUSION_WORKER_ID": f"{prefix}-w"},
        tmp_path / "worker.log",
        name="tiny-lcm",
        from_models_file=True,
    )
    try:
        wait_ready(worker, Redis.from_url(redis_server.url), f"{prefix}.generate.tiny-lcm", f"{prefix}-w")
        with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
            job = run_job(client, {"prompt": "a red circle", "seed": 1})
            assert job["status"] == "succeeded"
            assert job["params"]["num_inference_steps"] == 4 and job["params"]["guidance_scale"] == 0
            assert job["params"]["scheduler"] == "lcm"
            assert job["images"][0]["reproducibility"]["scheduler"]["class"] == "LCMScheduler"
            one = run_job(client, {"prompt": "a red circle", "num_inference_steps": 1})
            assert one["status"] == "succeeded"
            too_many = client.post("/v1/generations", json={"prompt": "p", "num_inference_steps": 8})
            assert too_many.status_code == 422 and too_many.json()["error"]["param"] == "num_inference_steps"
            guided = client.post("/v1/generations", json={"prompt": "p", "guidance_scale": 7})
            assert guided.status_code == 422 and guided.json()["error"]["param"] == "guidance_scale"
            model = client.get("/v1/models").json()["data"][0]
            assert (model["id"], model["scheduler"], model["default_steps"]) == ("tiny-lcm", "lcm", 4)
    finally:
        worker.stop()
        api.stop()
