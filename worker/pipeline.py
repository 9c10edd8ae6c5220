"""The warm pipeline: loaded once, placed on the device, optionally compiled, warmed, then run per job.

Per job it builds a fresh scheduler and a fresh pipeline object around the shared (read-only)
components, and one seeded CPU generator per image, so no mutable state crosses jobs and image k
of any request is reproducible alone from its seed on any device.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)
from PIL.Image import Image as PILImage

from contract.jobs import GenerationParams, LoraSpec
from worker import provenance, schedulers
from worker.compiling import compile_denoiser
from worker.failures import BadOutput, InvalidInput
from worker.hotswap import HotswapLoras
from worker.loading import Runtime, denoiser_of, load_controlnets, native_size
from worker.loras import LoraLibrary
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

StepHook = Callable[[int, int, float], bool]  # (steps done, total steps, step seconds) -> keep going?
PreviewHook = Callable[[int, Any], None]  # (steps done, latents of the batch)
DEFAULT_STRENGTH = 0.8


class StepClock:
    """Times each denoising step: from the denoiser's first forward of a step to the end-of-step callback."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._started: float | None = None
        self._sync = sync

    def mark_forward(self, *_: Any) -> None:
        """Forward pre-hook: the step starts at its first denoiser call (CFG may call it twice)."""
        if self._started is None:
            self._started = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the step started; resets for the next step."""
        self._sync()
        now = time.perf_counter()
        elapsed = now - (self._started or now)
        self._started = None
        return elapsed


class WarmPipeline:
    """A loaded pipeline that turns `GenerationParams` into images, reporting each step."""

    def __init__(self, pipe: DiffusionPipeline, runtime: Runtime, settings: WorkerSettings) -> None:
        self.pipe = pipe
        self.runtime = runtime
        self.settings = settings
        self.width, self.height = native_size(pipe)
        self.last_scheduler: Any = pipe.scheduler
        self.fingerprint = provenance.model_fingerprint(settings.model_source, settings.local_model)
        self.clock = StepClock(torch.cuda.synchronize if runtime.device.type == "cuda" else lambda: None)
        if settings.default_scheduler:
            pipe.scheduler = schedulers.build(pipe.scheduler, settings.default_scheduler)
        # Text-to-image, image-to-image, inpainting and ControlNet pipelines over the same modules
        # (from_pipe shares the weights); all but the first are built on first use.
        self._variants: dict[str, DiffusionPipeline] = {"text": pipe}
        # Compiled: adapters are hot-swapped into fixed slots, so switching them never recompiles.
        self.loras = (
            HotswapLoras(pipe, settings.lora_dir, settings.max_loaded_loras, settings.lora_slots)
            if settings.compile
            else LoraLibrary(pipe, settings.lora_dir, settings.max_loaded_loras)
        )
        self.phase = "warmup"  # label of compilations: expected during warm-up, a recompile afterwards
        self.controlnets = load_controlnets(pipe, settings, runtime)
        if settings.compile:
            compile_denoiser(pipe, settings, lambda: self.phase)
        denoiser_of(self.pipe).register_forward_pre_hook(self.clock.mark_forward)

    @property
    def pipeline_class(self) -> str:
        """Class name of the loaded pipeline."""
        return type(self.pipe).__name__

    def warm_sizes(self) -> list[tuple[int, int]]:
        """Configured warm-up sizes, or the native size."""
        sizes = [tuple(int(v) for v in s.split("x")) for s in self.settings.warmup_sizes]
        return [(w, h) for w, h in sizes] or [(self.width, self.height)]

    def warm_up(self) -> float:
        """Run one short generation per warm-up size (compiling each bucket); returns the seconds spent.

        Compiled and batching, each size is also run with two images: the second batch size makes
        torch.compile build a graph with a dynamic batch dimension, so requests with any number of
        images run without a recompile (measured: 1-4 images, no compilation after warm-up).
        """
        started = time.perf_counter()
        s = self.settings
        counts = [1, 2] if s.compile and s.batch_images else [1]
        for (width, height), count in itertools.product(self.warm_sizes(), counts):
            guidance = s.default_guidance_scale if s.fixed_guidance_scale is None else s.fixed_guidance_scale
            params = GenerationParams(
                prompt="warm-up",
                width=width,
                height=height,
                guidance_scale=guidance,
                num_inference_steps=min(s.warmup_steps, s.max_steps or s.warmup_steps),
                seed=0,
                num_images=count,
            )
            began = time.perf_counter()
            self.generate(params, lambda done, total, seconds: True)
            log.info(
                "warm-up generation done",
                extra={"size": f"{width}x{height}", "images": count, "seconds": round(time.perf_counter() - began, 2)},
            )
        self.phase = "serving"
        return time.perf_counter() - started

    @property
    def scheduler_names(self) -> list[str]:
        """Schedulers a request may name for this model."""
        return list(schedulers.family(self.pipe.scheduler))

    @property
    def default_scheduler(self) -> str:
        """Name of the model's own scheduler."""
        return schedulers.name_of(self.pipe.scheduler)

    def _variant(self, kind: str) -> DiffusionPipeline:
        if kind not in self._variants:
            if kind.startswith("control:"):
                controlnet = self.controlnets[kind.split(":", 1)[1]]
                self._variants[kind] = AutoPipelineForText2Image.from_pipe(self.pipe, controlnet=controlnet)
            else:
                auto = AutoPipelineForInpainting if kind == "inpaint" else AutoPipelineForImage2Image
                self._variants[kind] = auto.from_pipe(self.pipe)
        return self._variants[kind]

    def _job_pipeline(self, kind: str, scheduler_name: str | None) -> DiffusionPipeline:
        # A new pipeline object over the same modules: its scheduler, its interrupt flag and its
        # call state belong to this job alone. Costs a few milliseconds, copies no weights.
        base = self._variant(kind)
        scheduler = schedulers.build(base.scheduler, scheduler_name)
        # Constructor flags kept in the config (e.g. requires_safety_checker) are passed again.
        accepted = inspect.signature(type(base).__init__).parameters
        flags = {k: v for k, v in base.config.items() if k in accepted and k not in base.components}
        pipe = type(base)(**{**base.components, "scheduler": scheduler}, **flags)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(
        self,
        params: GenerationParams,
        on_step: StepHook,
        on_preview: PreviewHook | None = None,
        preview_every: int = 0,
        inputs: Mapping[str, PILImage] | None = None,
    ) -> list[np.ndarray]:
        """Denoise and decode; returns HxWx3 uint8 arrays. `on_step` returning False stops at that step;
        `on_preview` gets the latents every `preview_every` steps; `inputs` holds `init` (and `mask`)."""
        seeds = [params.image_seed(k) for k in range(params.num_images)]
        batches = [seeds] if self.settings.batch_images else [[s] for s in seeds]
        images: list[np.ndarray] = []
        self.loras.activate(params.loras)
        try:
            for batch in batches:
                images.extend(self._run(params, batch, on_step, on_preview, preview_every, inputs or {}))
        finally:
            self.loras.deactivate()  # the next job sees the base model, exactly
        return images

    def _run(
        self,
        params: GenerationParams,
        seeds: list[int],
        on_step: StepHook,
        on_preview: PreviewHook | None,
        preview_every: int,
        inputs: Mapping[str, PILImage],
    ) -> list[np.ndarray]:
        kind = "inpaint" if "mask" in inputs else "image" if "init" in inputs else "text"
        if params.controlnet is not None:
            if params.controlnet not in self.controlnets:
                raise InvalidInput(f"ControlNet {params.controlnet!r} is not loaded on this worker")
            kind = f"control:{params.controlnet}"
        pipe = self._job_pipeline(kind, params.scheduler)

        def callback(p: DiffusionPipeline, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = int(getattr(p, "_num_timesteps", None) or params.num_inference_steps)
            if not on_step(index + 1, total, self.clock.lap()):
                p._interrupt = True
            elif on_preview is not None and preview_every and (index + 1) % preview_every == 0 and index + 1 < total:
                on_preview(index + 1, tensors.get("latents"))
            return tensors

        self.clock.lap()  # discard time since the last job
        with torch.inference_mode():
            result = pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                **_image_inputs(pipe, kind, params, inputs),
                num_inference_steps=params.num_inference_steps,
                guidance_scale=params.guidance_scale,
                num_images_per_prompt=len(seeds),
                # CPU generators: the same seed gives the same starting noise on every device.
                generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
                output_type="np",
                callback_on_step_end=callback,
            )
        self.last_scheduler = pipe.scheduler
        pixels = np.asarray(result.images)
        if not np.isfinite(pixels).all():
            raise BadOutput("the pipeline produced non-finite pixels (numeric overflow); try bfloat16 or float32")
        return list((pixels * 255).round().clip(0, 255).astype(np.uint8))

    def reproducibility(self, model: str, seed: int, loras: list[LoraSpec]) -> dict[str, Any]:
        """The record that lets image `seed` of the last job be regenerated exactly."""
        record = provenance.record(
            model,
            self.fingerprint,
            self.last_scheduler,
            seed,
            self.runtime.dtype,
            self.runtime.device,
            self.settings.compile,
        )
        record["loras"] = [{**lora.model_dump(), "sha256": self.loras.hashes.get(lora.name)} for lora in loras]
        return record

    def release_memory(self) -> None:
        """Return cached device memory after a stopped job (the next job allocates afresh)."""
        if self.runtime.device.type == "cuda":
            torch.cuda.empty_cache()

    def memory(self) -> dict[str, int]:
        """CUDA memory counters of the device (empty on CPU)."""
        if self.runtime.device.type != "cuda":
            return {}
        return {
            "allocated": torch.cuda.memory_allocated(self.runtime.device),
            "reserved": torch.cuda.memory_reserved(self.runtime.device),
            "peak_allocated": torch.cuda.max_memory_allocated(self.runtime.device),
        }


def _image_inputs(
    pipe: DiffusionPipeline, kind: str, params: GenerationParams, inputs: Mapping[str, PILImage]
) -> dict[str, Any]:
    """The size and input-image arguments of a pipeline call for this kind of job."""
    extra: dict[str, Any] = {}
    if "width" in inspect.signature(type(pipe).__call__).parameters:
        # Some image-to-image pipelines (SD 1.x) take the size from the image; others (SD3)
        # would fall back to their native size without it.
        extra = {"width": params.width, "height": params.height}
    if kind in ("image", "inpaint"):
        extra |= {"image": inputs["init"], "strength": params.strength or DEFAULT_STRENGTH}
        if kind == "inpaint":
            extra["mask_image"] = inputs["mask"]
    if params.controlnet is not None:
        extra |= {"image": inputs["control"], "controlnet_conditioning_scale": params.controlnet_conditioning_scale}
    return extra
