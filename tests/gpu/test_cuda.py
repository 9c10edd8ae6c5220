"""The worker path on CUDA: fp16, with and without torch.compile. Skipped where there is no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from contract.jobs import GenerationParams
from worker.config import WorkerSettings
from worker.pipeline import WarmPipeline, load, pick_runtime

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("compile_", [False, True])
def test_fp16_generation_on_cuda(tiny_sd: Path, compile_: bool) -> None:
    settings = WorkerSettings(model_source=str(tiny_sd), device="cuda", compile=compile_)
    runtime = pick_runtime(settings)
    assert runtime.dtype == torch.float16
    warm = WarmPipeline(load(settings, runtime), runtime, settings)
    warm.warm_up()
    steps: list[float] = []
    params = GenerationParams(prompt="a red circle", width=64, height=64, num_inference_steps=10,
                              guidance_scale=7.5, seed=1, num_images=2)
    images = warm.generate(params, lambda d, t, s: steps.append(s) is None)
    assert len(steps) == 10 and all(s > 0 for s in steps)
    assert images[0].shape == (64, 64, 3) and not np.array_equal(images[0], images[1])
    assert warm.memory()["allocated"] > 0
