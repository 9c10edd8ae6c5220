"""The worker path on CUDA in its automatic dtype (bf16 where the GPU has it, else fp16), with and without
torch.compile. Skipped where there is no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contract.jobs import GenerationParams
from worker.batch import Batch, JobInput
from worker.loading import auto_dtype, load, pick_runtime
from worker.pipeline import WarmPipeline
from worker.settings import WorkerSettings

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("compile_", [False, True])
def test_generation_on_cuda(tiny_sd: Path, compile_: bool) -> None:
    settings = WorkerSettings(model_source=str(tiny_sd), device="cuda", compile=compile_)
    runtime = pick_runtime(settings)
    assert runtime.dtype == auto_dtype("cuda", torch.cuda.is_bf16_supported(including_emulation=False))
    warm = WarmPipeline(load(settings, runtime), runtime, settings)
    warm.warm_up()
    steps: list[float] = []
    warm.observe_step = steps.append
    params = GenerationParams(
        prompt="a red circle", width=64, height=64, num_inference_steps=10, guidance_scale=7.5, seed=1, num_images=2
    )
    [images] = warm.generate(Batch([JobInput(params)]), lambda done, total: True)
    assert len(steps) == 10 and all(s > 0 for s in steps)
    assert images[0].shape == (64, 64, 3) and not np.array_equal(images[0], images[1])
    assert warm.memory()["allocated"] > 0


def test_compiled_lora_hot_swap_on_cuda(tiny_sd: Path, lora_dir: Path) -> None:
    from worker.metrics import REGISTRY

    settings = WorkerSettings(
        model_source=str(tiny_sd), device="cuda", compile=True, lora_dir=lora_dir, model_name="cuda-hotswap"
    )
    runtime = pick_runtime(settings)
    warm = WarmPipeline(load(settings, runtime), runtime, settings)
    warm.warm_up()
    outputs = []
    for loras in (
        [],
        [{"name": "sd-a", "scale": 1.0}],
        [{"name": "sd-b", "scale": 0.5}],
        [{"name": "sd-a", "scale": 0.7}, {"name": "sd-b", "scale": 1.0}],
        [],
    ):
        params = GenerationParams(
            prompt="a red circle",
            width=64,
            height=64,
            num_inference_steps=6,
            guidance_scale=7.5,
            seed=3,
            num_images=1,
            loras=loras,
        )
        outputs.append(warm.generate(Batch([JobInput(params)]), lambda *_: True)[0][0])
    labels = {"model": "cuda-hotswap", "phase": "serving"}
    assert (REGISTRY.get_sample_value("diffusion_torch_compilations_total", labels) or 0) == 0
    assert np.array_equal(outputs[0], outputs[-1])
    assert len({image.tobytes() for image in outputs[:-1]}) == 4
