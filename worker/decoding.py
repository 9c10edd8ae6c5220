"""VAE decode that cannot run out of memory on a large batch and survives fp16 overflow without upcasting
every job.

- Past `slice_pixels` (batch x width x height) the VAE decodes one image at a time (diffusers' slicing):
  the memory of decoding stays that of one image, whatever the batch.
- float16 can overflow in the VAE and give non-finite pixels. Pipelines whose VAE asks for it
  (`force_upcast`, e.g. SDXL's) would decode every job in float32; here every job decodes in the
  device dtype and only a batch whose pixels came out non-finite is decoded again in float32, from
  the final latents. If that fails too, the job fails `bad_output`: a black image is never stored.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers import DiffusionPipeline

from worker.failures import BadOutput
from worker.loading import Runtime

log = logging.getLogger(__name__)


class Decoder:
    """Decode settings of one pipeline's VAE, set per batch, and the float32 retry."""

    def __init__(self, pipe: DiffusionPipeline, runtime: Runtime, slice_pixels: int) -> None:
        self.vae = getattr(pipe, "vae", None)
        self.slice_pixels = slice_pixels
        self.half = runtime.dtype == torch.float16
        if self.vae is not None and self.half and getattr(self.vae.config, "force_upcast", False):
            # Our float32 retry replaces the pipeline's upcast of every decode.
            self.vae.register_to_config(force_upcast=False)

    def configure(self, images: int, pixels_per_image: int) -> Decoder:
        """Slice the decode of this batch when it is large."""
        if self.vae is not None and hasattr(self.vae, "use_slicing"):
            self.vae.use_slicing = images > 1 and images * pixels_per_image > self.slice_pixels
        return self

    def retry_in_float32(self, pipe: DiffusionPipeline, latents: Any) -> torch.Tensor:
        """Pixels decoded again from the final latents with a float32 VAE; BadOutput if that is impossible."""
        vae = self.vae
        if vae is None or latents is None or latents.ndim != 4 or not bool(torch.isfinite(latents).all()):
            raise BadOutput("the pipeline produced non-finite pixels (numeric overflow); try bfloat16 or float32")
        log.warning("non-finite pixels; decoding this batch again in float32")
        dtype = vae.dtype
        scaled = latents.to(torch.float32) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None) is not None:
            scaled = scaled + vae.config.shift_factor
        vae.to(torch.float32)
        try:
            decoded = vae.decode(scaled, return_dict=False)[0]
        finally:
            vae.to(dtype)
        pixels: torch.Tensor = pipe.image_processor.postprocess(decoded, output_type="pt")
        if not bool(torch.isfinite(pixels).all()):
            raise BadOutput("the pipeline produced non-finite pixels even in float32")
        return pixels
