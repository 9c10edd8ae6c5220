"""The warm pipeline on real tiny diffusers pipelines (UNet and transformer families), in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import generate, params, warm
from worker.loading import ModelLoadError
from worker.pipeline import WarmPipeline


@pytest.fixture(scope="module", params=["sd", "sd3"])
def pipeline(request: pytest.FixtureRequest, tiny_sd: Path, tiny_sd3: Path) -> WarmPipeline:
    return warm(tiny_sd if request.param == "sd" else tiny_sd3)


def test_loads_through_diffusers_and_knows_native_size(pipeline: WarmPipeline) -> None:
    assert pipeline.pipeline_class in ("StableDiffusionPipeline", "StableDiffusion3Pipeline")
    assert (pipeline.width, pipeline.height) == (64, 64)


def test_same_request_gives_identical_pixels(pipeline: WarmPipeline) -> None:
    first = generate(pipeline, params(num_images=2))
    second = generate(pipeline, params(num_images=2))
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert first[0].shape == (64, 64, 3) and first[0].dtype == np.uint8
    assert not np.array_equal(first[0], first[1])


def test_image_k_regenerates_alone(pipeline: WarmPipeline) -> None:
    batch = generate(pipeline, params(num_images=3, seed=500))
    alone = generate(pipeline, params(num_images=1, seed=502))
    # Batched GEMMs may round differently from batch size 1: at most one level of 255.
    assert np.abs(batch[2].astype(int) - alone[0].astype(int)).max() <= 1


def test_unbatched_mode_is_bit_identical(tiny_sd: Path) -> None:
    sequential = warm(tiny_sd, batch_images=False)
    batch = generate(sequential, params(num_images=2, seed=900))
    alone = generate(sequential, params(num_images=1, seed=901))
    assert np.array_equal(batch[1], alone[0])


def test_step_hook_sees_every_step_and_can_stop(pipeline: WarmPipeline) -> None:
    seen: list[tuple[int, int]] = []
    durations: list[float] = []
    pipeline.observe_step = durations.append
    generate(pipeline, params(num_inference_steps=5), lambda d, t: seen.append((d, t)) is None)
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert len(durations) == 5 and all(s > 0 for s in durations), "every step is timed"

    stopped: list[int] = []
    generate(pipeline, params(num_inference_steps=8), lambda d, t: stopped.append(d) is None and d < 2)
    # Stops at the step boundary after the hook said so: the denoiser runs no further step.
    assert stopped == [1, 2]


def test_each_job_gets_a_fresh_scheduler(pipeline: WarmPipeline) -> None:
    shared = pipeline.pipe.scheduler
    config = dict(shared.config)
    generate(pipeline, params(num_inference_steps=4))
    assert pipeline.pipe.scheduler is shared
    assert dict(shared.config) == config
    assert getattr(shared, "num_inference_steps", None) is None, "the shared scheduler was stepped"


def test_guidance_and_negative_prompt_change_the_image(pipeline: WarmPipeline) -> None:
    base = generate(pipeline, params())[0]
    assert not np.array_equal(base, generate(pipeline, params(guidance_scale=1.0))[0])
    assert not np.array_equal(base, generate(pipeline, params(negative_prompt="blue"))[0])


def test_missing_model_gives_actionable_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="DIFFUSION_ALLOW_DOWNLOAD"):
        warm(Path("no-such-org/no-such-model"))


@pytest.mark.parametrize("name", ["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "unipc"])
def test_each_named_scheduler_runs_and_matters(tiny_sd: Path, name: str) -> None:
    pipeline = warm(tiny_sd)
    assert pipeline.default_scheduler == "euler"
    assert name in pipeline.scheduler_names
    image = generate(pipeline, params(scheduler=name, num_inference_steps=4))[0]
    again = generate(pipeline, params(scheduler=name, num_inference_steps=4))[0]
    assert np.array_equal(image, again), "same scheduler and seed: same pixels"
    if name != "euler":
        euler = generate(pipeline, params(scheduler="euler", num_inference_steps=4))[0]
        assert not np.array_equal(image, euler)
    assert type(pipeline.pipe.scheduler).__name__ == "EulerDiscreteScheduler", "the shared one is untouched"


def test_flow_models_take_only_flow_schedulers(tiny_sd3: Path) -> None:
    from worker.schedulers import UnknownScheduler

    pipeline = warm(tiny_sd3)
    assert pipeline.scheduler_names == ["flow_euler"] and pipeline.default_scheduler == "flow_euler"
    with pytest.raises(UnknownScheduler, match="valid: flow_euler"):
        generate(pipeline, params(scheduler="dpmpp_2m"))


def test_the_float32_retry_decodes_what_the_pipeline_decodes(tiny_sd: Path) -> None:
    """The overflow fallback: the same latents decoded by our float32 path give the pipeline's own pixels."""
    import torch

    from worker.failures import BadOutput

    pipeline = warm(tiny_sd)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = pipeline.decoder.retry_in_float32(pipeline.pipe, latents)
        scaled = latents / pipeline.pipe.vae.config.scaling_factor
        theirs = pipeline.pipe.image_processor.postprocess(pipeline.pipe.vae.decode(scaled).sample, output_type="pt")
        assert ours.shape == (1, 3, 64, 64) and torch.allclose(ours, theirs)
        with pytest.raises(BadOutput):
            pipeline.decoder.retry_in_float32(pipeline.pipe, latents * float("nan"))
