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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)

from contract.failpoints import failpoint
from contract.jobs import GenerationParams, LoraSpec
from worker import provenance, schedulers
from worker.batch import Batch, JobInput
from worker.compiling import compile_denoiser
from worker.decoding import Decoder
from worker.failures import InvalidInput
from worker.hotswap import HotswapLoras
from worker.loading import Runtime, denoiser_of, load_controlnets, native_size
from worker.loras import LoraLibrary
from worker.settings import WorkerSettings
from worker.stepclock import Observe, StepClock

log = logging.getLogger(__name__)

StepHook = Callable[[int, int], bool]  # (steps done, total steps) -> keep going?
PreviewHook = Callable[[int, Any], None]  # (steps done, latents of the batch)


class WarmPipeline:
    """A loaded pipeline that turns `GenerationParams` into images, reporting each step."""

    def __init__(self, pipe: DiffusionPipeline, runtime: Runtime, settings: WorkerSettings) -> None:
        self.pipe = pipe
        self.runtime = runtime
        self.settings = settings
        self.width, self.height = native_size(pipe)
        self.last_scheduler: Any = pipe.scheduler
        self.fingerprint = provenance.model_fingerprint(settings.model_source, settings.local_model)
        self.clock = StepClock(runtime.device)
        self.observe_step: Observe = lambda seconds: None  # where step durations go (the runner's metrics)
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
        self.decoder = Decoder(pipe, runtime, settings.decode_slice_pixels)
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
        """Run short generations per warm-up size, compiling each bucket; returns the seconds spent.

        Compiled, each size runs with one image and with the largest batch a worker takes
        (`max_batch_images`), so every batch size in between runs without a recompile.
        """
        started = time.perf_counter()
        s = self.settings
        counts = sorted({1, max(s.max_batch_images, 2)}) if s.compile and s.batch_images else [1]
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
            self.generate(Batch([JobInput(params)]), lambda done, total: True)
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
        self, batch: Batch, on_step: StepHook, on_preview: PreviewHook | None = None
    ) -> list[list[np.ndarray]]:
        """Denoise and decode a batch; returns each job's HxWx3 uint8 images. `on_step` returning False
        stops the whole batch at that step; `on_preview` gets the batch's latents after every step."""
        self.loras.activate(list(batch.params.loras))
        try:
            if self.settings.batch_images:
                return batch.split(self._run(batch, on_step, on_preview))
            # One image per pipeline call: each image is bit-identical to itself generated alone.
            rows = [
                row
                for job in batch.jobs
                for k in range(job.params.num_images)
                for row in self._run(Batch([JobInput(_single(job.params, k), job.images)]), on_step, on_preview)
            ]
            return batch.split(rows)
        finally:
            self.loras.deactivate()  # the next job sees the base model, exactly

    def _run(self, batch: Batch, on_step: StepHook, on_preview: PreviewHook | None) -> list[np.ndarray]:
        kind = batch.kind()
        if kind.startswith("control:") and kind.split(":", 1)[1] not in self.controlnets:
            raise InvalidInput(f"ControlNet {batch.params.controlnet!r} is not loaded on this worker")
        pipe = self._job_pipeline(kind, batch.params.scheduler)
        final: dict[str, Any] = {}

        def callback(p: DiffusionPipeline, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            self.clock.lap(self.observe_step)
            total = int(getattr(p, "_num_timesteps", None) or batch.params.num_inference_steps)
            final["latents"] = tensors.get("latents")
            if index + 1 == total and self.phase == "serving":
                failpoint("decode")  # the VAE decode comes next
            if not on_step(index + 1, total):
                p._interrupt = True
            elif on_preview is not None and index + 1 < total:
                on_preview(index + 1, tensors.get("latents"))
            return tensors

        self.clock.reset()
        decoder = self.decoder.configure(batch.size, batch.params.width * batch.params.height)
        with torch.inference_mode():
            # Pixels stay on the device until they are 8-bit: the host gets a quarter of the bytes and
            # never spends a batch's worth of float arithmetic while the device waits for the next batch.
            result = pipe(**batch.call_args(pipe), output_type="pt", callback_on_step_end=callback)
            self.clock.flush()
            pixels = result.images
            if not bool(torch.isfinite(pixels).all()):
                pixels = decoder.retry_in_float32(pipe, final.get("latents"))
            eight_bit = (pixels * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        self.last_scheduler = pipe.scheduler
        return list(eight_bit)

    def reproducibility(self, model: str, seed: int, loras: list[LoraSpec], batch_size: int) -> dict[str, Any]:
        """The record that lets image `seed` of the last batch be regenerated (`batch_size`: images it ran with)."""
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
        record["batch_size"] = batch_size
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


def _single(params: GenerationParams, index: int) -> GenerationParams:
    """Image `index` of a job as a job of its own (same pixels, when images are not batched)."""
    return params.model_copy(update={"seed": params.image_seed(index), "num_images": 1})
