"""A denoising batch: the images of one or more compatible jobs, as the rows of one pipeline call.

Jobs batch together only when they share everything but their prompts, negative prompts, seeds and
input images (`contract.jobs.GenerationParams.batch_key`). Each row gets its own seeded CPU
generator, prompt and input image, so a job's images are the same whatever it was batched with.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL.Image import Image as PILImage

from contract.jobs import GenerationParams

DEFAULT_STRENGTH = 0.8


@dataclass(frozen=True)
class JobInput:
    """One job of a batch: its parameters and its decoded input images (`init`, `mask`, `control`)."""

    params: GenerationParams
    images: Mapping[str, PILImage] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Jobs denoised together; row order is job order, each job's images in seed order."""

    jobs: Sequence[JobInput]

    def __post_init__(self) -> None:
        keys = {job.params.batch_key() for job in self.jobs}
        if len(keys) != 1:
            raise ValueError("jobs of one batch must share their batch key")

    @property
    def params(self) -> GenerationParams:
        """Parameters of the first job: every field the batch shares is the same in all of them."""
        return self.jobs[0].params

    @property
    def size(self) -> int:
        """Rows (images) in the batch."""
        return sum(job.params.num_images for job in self.jobs)

    def offsets(self) -> list[int]:
        """The first row of each job."""
        starts, row = [], 0
        for job in self.jobs:
            starts.append(row)
            row += job.params.num_images
        return starts

    def split(self, rows: Sequence[Any]) -> list[list[Any]]:
        """Per-row results grouped back into each job's."""
        return [
            list(rows[start : start + job.params.num_images])
            for start, job in zip(self.offsets(), self.jobs, strict=True)
        ]

    def kind(self) -> str:
        """Which pipeline runs it: text, image (img2img), inpaint, or control:<name>."""
        p, images = self.params, self.jobs[0].images
        if p.controlnet is not None:
            return f"control:{p.controlnet}"
        return "inpaint" if "mask" in images else "image" if "init" in images else "text"

    def _per_row(self, value: Any) -> list[Any]:
        return [value(job.params) for job in self.jobs for _ in range(job.params.num_images)]

    def call_args(self, pipe: DiffusionPipeline) -> dict[str, Any]:
        """Keyword arguments of the pipeline call for every row of the batch."""
        p = self.params
        negatives = self._per_row(lambda q: q.negative_prompt or "")
        args: dict[str, Any] = {
            "prompt": self._per_row(lambda q: q.prompt),
            "negative_prompt": negatives if any(negatives) else None,
            "num_inference_steps": p.num_inference_steps,
            "guidance_scale": p.guidance_scale,
            "num_images_per_prompt": 1,
            # CPU generators: the same seed gives the same starting noise on every device.
            "generator": [torch.Generator("cpu").manual_seed(seed) for seed in self.seeds()],
        }
        if "width" in inspect.signature(type(pipe).__call__).parameters:
            # Some image-to-image pipelines (SD 1.x) take the size from the image; others (SD3)
            # would fall back to their native size without it.
            args |= {"width": p.width, "height": p.height}
        kind = self.kind()
        if kind in ("image", "inpaint"):
            args |= {"image": self._images("init"), "strength": p.strength or DEFAULT_STRENGTH}
            if kind == "inpaint":
                args["mask_image"] = self._images("mask")
        if p.controlnet is not None:
            args |= {"image": self._images("control"), "controlnet_conditioning_scale": p.controlnet_conditioning_scale}
        return args

    def seeds(self) -> list[int]:
        """The seed of every row."""
        return [job.params.image_seed(k) for job in self.jobs for k in range(job.params.num_images)]

    def _images(self, name: str) -> PILImage | list[PILImage]:
        rows = [job.images[name] for job in self.jobs for _ in range(job.params.num_images)]
        return rows[0] if len(rows) == 1 else rows
