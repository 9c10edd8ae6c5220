"""Measurements through the worker's own code: WarmPipeline (its StepClock times every step with CUDA events),
compile_denoiser's recompile counter, Batch/JobInput as the runner builds them, the Decoder's VAE settings."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from contract.jobs import GenerationParams
from worker.batch import Batch, JobInput
from worker.metrics import REGISTRY
from worker.pipeline import WarmPipeline

PROMPT = "a red circle on a blue background"
GUIDANCES = (0.0, 1.0, 7.5)  # off (0 and 1: no classifier-free guidance) and on
MATRIX_STEPS = 2


def keep_going(done: int, total: int) -> bool:
    """A step hook that never stops the batch."""
    return True


def params(side: int, steps: int, images: int, seed: int = 0, **extra: Any) -> GenerationParams:
    """A text-to-image job at `side`² with classifier-free guidance unless `extra` says otherwise."""
    fields: dict[str, Any] = {"guidance_scale": 7.5, **extra}
    return GenerationParams(
        prompt=f"{PROMPT} ({seed})",
        width=side,
        height=side,
        num_inference_steps=steps,
        seed=seed,
        num_images=images,
        **fields,
    )


def timed_runs(warm: WarmPipeline, side: int, steps: int, images: int, runs: int) -> dict[str, Any]:
    """Per-step device time (StepClock: first denoiser call of a step to the step's end, both CFG halves and
    the scheduler step) and whole-call throughput (text encoding, steps, VAE decode, pixels on the host)."""
    laps: list[float] = []
    walls: list[float] = []
    warm.observe_step = laps.append
    try:
        for run in range(runs):
            started = time.perf_counter()
            warm.generate(Batch([JobInput(params(side, steps, images, seed=run))]), keep_going)
            walls.append(time.perf_counter() - started)
    finally:
        warm.observe_step = lambda seconds: None
    laps.sort()
    return {
        "ms_per_step": round(statistics.median(laps) * 1e3, 3),
        "ms_per_step_p90": round(laps[math.ceil(0.9 * len(laps)) - 1] * 1e3, 3),  # nearest rank
        "images_per_s": round(images / statistics.median(walls), 3),
        "call_seconds": round(statistics.median(walls), 3),
        "steps": steps,
        "runs": runs,
    }


def compilations(model: str, phase: str) -> int:
    """Denoiser graphs compiled so far for `model` in `phase` (`warmup` or `serving`), from the worker's counter."""
    value = REGISTRY.get_sample_value("diffusion_torch_compilations_total", {"model": model, "phase": phase})
    return int(value or 0)


def matrix_batches(schedulers: list[str], side: int, max_images: int) -> list[Batch]:
    """Every scheduler the model publishes, guidance 0 / 1 / 7.5 with every image count 1..max, and
    cross-request batches of every size 2..max (several jobs in one call): all at MATRIX_STEPS steps."""

    def job(images: int, scheduler: str, guidance: float, seed: int) -> JobInput:
        return JobInput(params(side, MATRIX_STEPS, images, seed, scheduler=scheduler, guidance_scale=guidance))

    batches = [Batch([job(1 + i % max_images, name, 7.5, i)]) for i, name in enumerate(schedulers)]
    for g, guidance in enumerate(GUIDANCES):
        for images in range(1, max_images + 1):
            scheduler = schedulers[(images + g) % len(schedulers)]
            batches.append(Batch([job(images, scheduler, guidance, 100 + 10 * g + images)]))
    for size in range(2, max_images + 1):
        counts = [1] * size if size <= 3 else [1, 2, size - 3]
        guidance = GUIDANCES[size % 2 * 2]  # alternately 0 and 7.5
        batches.append(Batch([job(n, schedulers[0], guidance, 200 + 10 * size + j) for j, n in enumerate(counts)]))
    return batches


def recompile_matrix(warm: WarmPipeline, side: int) -> dict[str, Any]:
    """Serving compilations while running the matrix on a warmed, compiled pipeline (must stay 0)."""
    model = warm.settings.name
    before = compilations(model, "serving")
    batches = matrix_batches(warm.scheduler_names, side, warm.settings.max_batch_images)
    started = time.perf_counter()
    for batch in batches:
        warm.generate(batch, keep_going)
    return {
        "calls": len(batches),
        "schedulers": warm.scheduler_names,
        "guidances": list(GUIDANCES),
        "serving_compilations_during": compilations(model, "serving") - before,
        "serving_compilations_total": compilations(model, "serving"),
        "warmup_compilations": compilations(model, "warmup"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def batched_vs_alone(warm: WarmPipeline, side: int, steps: int, images: int = 8) -> dict[str, Any]:
    """Pixels of images generated as one batch of `images` against the same seeds generated alone."""
    job = params(side, steps, images, seed=1234)
    [together] = warm.generate(Batch([JobInput(job)]), keep_going)
    worst, means = 0, []
    for k in sorted({0, images // 2, images - 1}):
        single = job.model_copy(update={"seed": job.image_seed(k), "num_images": 1})
        [[alone]] = warm.generate(Batch([JobInput(single)]), keep_going)
        diff = np.abs(together[k].astype(np.int16) - alone.astype(np.int16))
        worst, means = max(worst, int(diff.max())), [*means, float(diff.mean())]
    return {
        "max_abs_diff": worst,
        "mean_abs_diff": round(statistics.mean(means), 4),
        "unit": "uint8 levels (0-255)",
        "batch": images,
        "compared_images": 3,
    }


def device_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median milliseconds of `fn` after one untimed call (CUDA events on a GPU, the host clock on the CPU)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def vae_decode(warm: WarmPipeline, side: int, repeats: int = 3) -> dict[str, Any]:
    """VAE decode time per image at batch 1 and 8, with the worker's slicing decision for each batch."""
    vae, runtime = warm.pipe.vae, warm.runtime
    factor = int(getattr(warm.pipe, "vae_scale_factor", 8))
    result: dict[str, Any] = {}
    for images in (1, 8):
        latents = torch.randn(images, 4, side // factor, side // factor, device=runtime.device, dtype=runtime.dtype)
        warm.decoder.configure(images, side * side)
        with torch.inference_mode():
            ms = device_ms(lambda latents=latents: vae.decode(latents, return_dict=False), runtime.device, repeats)
        result[f"batch_{images}_ms_per_image"] = round(ms / images, 3)
        result[f"batch_{images}_sliced"] = bool(getattr(vae, "use_slicing", False))
    return result
