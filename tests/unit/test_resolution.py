"""Request resolution: which default wins, and the request-level rules (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image

from app.errors import InvalidRequest, ServiceUnavailable
from app.resolution import resolve_params
from app.schemas import GenerationCreate
from app.settings import ApiSettings
from contract.jobs import GenerationParams
from contract.models import ModelInfo
from contract.settings import ModelEntry

SETTINGS = ApiSettings(default_image_side=512, default_inference_steps=25, default_guidance_scale=7.5)
INFO = ModelInfo(
    pipeline="StableDiffusionPipeline",
    width=64,
    height=96,
    default_steps=20,
    default_guidance_scale=5.0,
    scheduler="euler",
    schedulers=["euler", "ddim"],
    device="cpu",
    dtype="float32",
)


def resolve(
    info: ModelInfo | None = INFO, images: dict[str, Image.Image] | None = None, **body: Any
) -> GenerationParams:
    return resolve_params(GenerationCreate(prompt="p", **body), "m", info, SETTINGS, images or {})


def test_model_defaults_fill_what_the_request_leaves_out() -> None:
    p = resolve()
    assert (p.width, p.height, p.num_inference_steps, p.guidance_scale, p.scheduler) == (64, 96, 20, 5.0, "euler")
    assert 0 <= p.seed < 2**32 and p.num_images == 1 and p.strength is None


def test_the_request_wins_over_the_model() -> None:
    p = resolve(width=128, height=64, num_inference_steps=7, guidance_scale=0.0, seed=5, scheduler="ddim")
    assert (p.width, p.height, p.num_inference_steps, p.guidance_scale, p.seed, p.scheduler) == (
        128,
        64,
        7,
        0.0,
        5,
        "ddim",
    )


def test_before_any_worker_published_the_models_file_gives_the_defaults() -> None:
    entry = ModelEntry(width=64, height=96, default_steps=4, fixed_guidance_scale=0.0, default_scheduler="lcm")
    p = resolve_params(GenerationCreate(prompt="p"), "m", None, SETTINGS, {}, entry)
    assert (p.width, p.height, p.num_inference_steps, p.guidance_scale, p.scheduler) == (64, 96, 4, 0.0, "lcm")
    bare = resolve_params(GenerationCreate(prompt="p", width=128, height=128), "m", None, SETTINGS, {}, None)
    assert (bare.num_inference_steps, bare.guidance_scale) == (25, 7.5), "the service's generic steps and guidance"


def test_no_size_is_ever_guessed() -> None:
    with pytest.raises(ServiceUnavailable) as caught:  # no worker published, no models-file size
        resolve(info=None)
    assert caught.value.param == "width" and caught.value.headers == {"Retry-After": "10"}


def test_input_image_sets_the_size_and_the_default_strength() -> None:
    init = Image.new("RGB", (128, 72))
    p = resolve(images={"init": init})
    assert (p.width, p.height, p.strength) == (128, 72, 0.8)
    assert resolve(images={"init": init}, strength=0.3).strength == 0.3
    with pytest.raises(InvalidRequest) as caught:
        resolve(images={"init": init}, width=64)
    assert caught.value.param == "width"


def test_pass_through_fields_arrive_unchanged() -> None:
    p = resolve(negative_prompt="blue", output_format="webp", output_quality=50, loras=[], controlnet=None)
    assert (p.negative_prompt, p.output_format, p.output_quality) == ("blue", "webp", 50)


def test_request_level_rules() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve(timeout_seconds=SETTINGS.job_timeout_seconds + 1)
    assert caught.value.param == "timeout_seconds"
    with pytest.raises(InvalidRequest) as caught:
        resolve(webhook_events=["completed"])
    assert caught.value.param == "webhook_events"
    with pytest.raises(InvalidRequest) as caught:
        resolve(scheduler="unipc")  # not among the model's published schedulers
    assert caught.value.param == "scheduler"
