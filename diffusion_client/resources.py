"""Typed views of the service's JSON: jobs, their progress and images, and served models.

Each keeps the whole JSON object in `raw`, so fields the service adds later are never lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from typing import Any, Literal, TypedDict

TERMINAL = ("succeeded", "failed", "canceled")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None


@dataclass(frozen=True)
class Progress:
    """Stage (`queued`, `loading`, `denoising`, `decoding`, `storing`, `done`), step and overall fraction."""

    stage: str
    step: int
    total_steps: int
    fraction: float


@dataclass(frozen=True)
class Image:
    """One output image: its signed URL, size, seed and reproducibility record."""

    url: str
    width: int
    height: int
    seed: int
    content_type: str
    reproducibility: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Image:
        """Build from one entry of a job's `images`."""
        return cls(
            url=data["url"],
            width=data["width"],
            height=data["height"],
            seed=data["seed"],
            content_type=data.get("content_type", "image/png"),
            reproducibility=data.get("reproducibility") or {},
        )


@dataclass(frozen=True)
class JobError:
    """Why a job failed: `type` (`invalid_input`, `out_of_memory`, `timeout`, ...) and a message."""

    type: str
    message: str


@dataclass(frozen=True)
class Job:
    """A generation job as the service reports it; `raw` has every field.

    `event_id` is the server-sent event it came with (None from a GET): pass it to `stream(...,
    last_event_id=)` to resume after it.
    """

    id: str
    status: str
    model: str
    progress: Progress
    images: list[Image]
    error: JobError | None
    cancel_reason: str | None
    queue_position: int | None
    estimated_start_at: datetime | None
    estimated_finish_at: datetime | None
    params: dict[str, Any] = field(repr=False)
    preview: str | None = field(default=None, repr=False)
    event_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        """True once the job can no longer change (succeeded, failed or canceled)."""
        return self.status in TERMINAL

    @classmethod
    def parse(cls, data: dict[str, Any], event_id: str | None = None) -> Job:
        """Build from the service's JSON job object."""
        error = data.get("error")
        return cls(
            id=data["id"],
            status=data["status"],
            model=data.get("model", ""),
            progress=Progress(**{k: data["progress"][k] for k in ("stage", "step", "total_steps", "fraction")}),
            images=[Image.parse(image) for image in data.get("images") or []],
            error=JobError(error.get("type", ""), error.get("message", "")) if isinstance(error, dict) else None,
            cancel_reason=data.get("cancel_reason"),
            queue_position=data.get("queue_position"),
            estimated_start_at=_time(data.get("estimated_start_at")),
            estimated_finish_at=_time(data.get("estimated_finish_at")),
            params=data.get("params") or {},
            preview=data.get("preview"),
            event_id=event_id,
            raw=data,
        )


@dataclass(frozen=True)
class Model:
    """A served model: its load and what its workers published (None until a worker has started)."""

    id: str
    ready_workers: int
    queue_depth: int
    pipeline: str | None
    width: int | None
    height: int | None
    default_steps: int | None
    default_guidance_scale: float | None
    scheduler: str | None
    schedulers: list[str]
    max_steps: int | None
    fixed_guidance_scale: float | None
    loras: list[str]
    max_loras: int | None
    controlnets: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Model:
        """Build from one entry of `GET /v1/models`."""
        return cls(
            id=data["id"],
            ready_workers=data.get("ready_workers", 0),
            queue_depth=data.get("queue_depth", 0),
            pipeline=data.get("pipeline"),
            width=data.get("width"),
            height=data.get("height"),
            default_steps=data.get("default_steps"),
            default_guidance_scale=data.get("default_guidance_scale"),
            scheduler=data.get("scheduler"),
            schedulers=list(data.get("schedulers") or []),
            max_steps=data.get("max_steps"),
            fixed_guidance_scale=data.get("fixed_guidance_scale"),
            loras=[lora["name"] for lora in data.get("loras") or []],
            max_loras=data.get("max_loras"),
            controlnets=list(data.get("controlnets") or []),
            raw=data,
        )


class Lora(TypedDict, total=False):
    """One LoRA adapter for a job: `name` (from `Model.loras`) and `scale` (default 1)."""

    name: str
    scale: float


# Input images: raw bytes or a path (sent base64-encoded), or a string already in base64 or a data URL.
ImageInput = bytes | str | PathLike[str]


class GenerationParams(TypedDict, total=False):
    """Optional fields of a generation; omitted ones take the model's defaults (see the README's API table)."""

    negative_prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int
    model: str
    scheduler: str
    priority: Literal["high", "normal", "low"]
    init_image: ImageInput
    strength: float
    mask_image: ImageInput
    controlnet: str
    control_image: ImageInput
    controlnet_conditioning_scale: float
    loras: list[Lora]
    output_format: Literal["png", "jpeg", "webp"]
    output_quality: int
    stream_previews: int
    deadline_seconds: int
    timeout_seconds: int
    webhook_url: str
    webhook_events: list[Literal["started", "progress", "completed"]]
