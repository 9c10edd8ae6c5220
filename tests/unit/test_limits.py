"""The service's and the model's limits: each violation names its field."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.limits import check_limits, check_loras, check_model_limits
from app.settings import ApiSettings
from contract.jobs import LoraSpec
from contract.models import LoraInfo, ModelInfo
from tests.helpers import params

SETTINGS = ApiSettings(max_prompt_chars=10, max_inference_steps=50, max_images_per_request=4, max_guidance_scale=20)
INFO = ModelInfo(
    pipeline="StableDiffusionPipeline",
    width=64,
    height=64,
    default_steps=20,
    default_guidance_scale=5.0,
    scheduler="euler",
    schedulers=["euler", "ddim"],
    device="cpu",
    dtype="float32",
    controlnets=["edges"],
    loras=[LoraInfo(name=n, sha256="0" * 64) for n in ("a", "b", "c")],
    max_steps=8,
)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prompt": "x" * 11}, "prompt"),
        ({"negative_prompt": "x" * 11}, "negative_prompt"),
        ({"width": 60}, "width"),
        ({"height": 4096}, "height"),
        ({"width": 2048, "height": 2048}, "width"),
        ({"num_inference_steps": 51}, "num_inference_steps"),
        ({"guidance_scale": 20.5}, "guidance_scale"),
        ({"num_images": 5}, "num_images"),
    ],
)
def test_each_service_limit_names_its_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_limits(params(**{"prompt": "ok", **overrides}), SETTINGS)
    assert caught.value.param == field


def test_within_limits_passes() -> None:
    check_limits(params(prompt="ok", num_images=4, num_inference_steps=50), SETTINGS)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"num_inference_steps": 9}, "num_inference_steps"),
        ({"scheduler": "lcm"}, "scheduler"),
        ({"controlnet": "depth"}, "controlnet"),
    ],
)
def test_model_limits_name_their_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_model_limits(params(**overrides), "m", INFO)
    assert caught.value.param == field


def test_fixed_guidance_and_unpublished_model() -> None:
    fixed = INFO.model_copy(update={"fixed_guidance_scale": 0.0})
    with pytest.raises(InvalidRequest, match=r"guidance_scale 0\.0 only"):
        check_model_limits(params(guidance_scale=1.0), "m", fixed)
    check_model_limits(params(guidance_scale=0.0), "m", fixed)
    check_model_limits(params(num_inference_steps=99, scheduler="anything"), "m", None)  # nothing published yet


def test_loras_count_duplicates_and_fit() -> None:
    check_loras([LoraSpec(name="a"), LoraSpec(name="b")], "m", INFO, 4)
    with pytest.raises(InvalidRequest, match="at most 2"):
        check_loras([LoraSpec(name=n) for n in "abc"], "m", INFO.model_copy(update={"max_loras": 2}), 4)
    with pytest.raises(InvalidRequest, match="named twice"):
        check_loras([LoraSpec(name="a"), LoraSpec(name="a")], "m", INFO, 4)
    with pytest.raises(InvalidRequest) as caught:
        check_loras([LoraSpec(name="a"), LoraSpec(name="zz")], "m", INFO, 4)
    assert caught.value.param == "loras.1.name"
