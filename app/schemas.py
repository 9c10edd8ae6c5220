"""Request and response bodies of the public API (pydantic v2, unknown fields refused)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, StrictFloat, StrictInt

from contract.jobs import (
    SEED_MODULUS,
    CancelReason,
    GenerationInputs,
    GenerationParams,
    JobErrorType,
    JobStatus,
    Priority,
    Stage,
    WebhookEvent,
)

MAX_SIDE = 16384  # the schema's bound; DIFFUSION_MAX_IMAGE_SIDE is the configured one


class GenerationCreate(GenerationInputs):
    """Body of `POST /v1/generations`. Omitted fields take the model's defaults; limits are configured."""

    width: StrictInt | None = Field(
        default=None, ge=8, le=MAX_SIDE, description="Pixels, a multiple of 8; default: the model's native size."
    )
    height: StrictInt | None = Field(
        default=None, ge=8, le=MAX_SIDE, description="Pixels, a multiple of 8; default: the model's native size."
    )
    num_inference_steps: StrictInt | None = Field(default=None, ge=1, le=100_000, description="Denoising steps.")
    guidance_scale: StrictFloat | None = Field(
        default=None, ge=0, le=100, description="Classifier-free guidance; 1 or less disables it."
    )
    seed: StrictInt | None = Field(
        default=None,
        ge=0,
        lt=SEED_MODULUS,
        description="Seed of image 0; image k uses seed+k. Picked and returned when absent.",
    )
    num_images: StrictInt = Field(default=1, ge=1, le=64, description="Images in this request.")
    init_image: str | None = Field(
        default=None,
        description="Image-to-image: PNG, JPEG or WebP, base64 or a data URL; its size is the output size.",
    )
    mask_image: str | None = Field(
        default=None,
        description="Inpainting, with init_image: white pixels are repainted, black ones kept; same size as "
        "init_image.",
    )
    control_image: str | None = Field(
        default=None,
        description="Conditioning image of the ControlNet (PNG, JPEG or WebP, base64 or a data URL); its size is the "
        "output size.",
    )
    model: str | None = Field(
        default=None, max_length=64, description="Model name; default: the configured default model."
    )
    priority: Priority = Field(default=Priority.NORMAL, description="high jobs are taken before normal, then low.")
    deadline_seconds: StrictInt | None = Field(
        default=None,
        ge=1,
        le=7 * 24 * 3600,
        description="Time-to-start: if the job has not "
        "started this many seconds after submission it ends `canceled` (deadline).",
    )
    timeout_seconds: StrictInt | None = Field(
        default=None, ge=1, le=24 * 3600, description="Running-time limit, checked every step."
    )
    stream_previews: StrictInt | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Every this many steps, a small preview "
        "of the current latents (a JPEG data URL) rides on the progress event.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Called (signed, Standard Webhooks) on the events in `webhook_events`.",
    )
    webhook_events: list[WebhookEvent] | None = Field(default=None, max_length=3, description='Default: ["completed"].')


class ProgressView(BaseModel):
    """Where the job is: stage, denoising step, and the overall fraction done."""

    stage: Stage
    step: int
    total_steps: int
    fraction: float


class ImageView(BaseModel):
    """One output image; `url` is signed and expires at `url_expires_at`."""

    url: str
    url_expires_at: datetime
    width: int
    height: int
    seed: int
    content_type: str
    reproducibility: dict[str, Any] = Field(
        default_factory=dict,
        description="Model revision, scheduler class and config, seed, dtype, device, library versions.",
    )


class ErrorView(BaseModel):
    """Why the job failed."""

    type: JobErrorType
    message: str


class JobView(BaseModel):
    """A generation job as clients see it."""

    id: str
    object: str = "generation"
    status: JobStatus
    model: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    priority: Priority = Priority.NORMAL
    queue_position: int | None = Field(default=None, description="Jobs ahead of this one, while queued.")
    estimated_start_at: datetime | None = Field(
        default=None, description="While queued, from measured step latency of this model and the work ahead."
    )
    estimated_finish_at: datetime | None = None
    deadline_at: datetime | None = Field(default=None, description="Must start by then, else canceled.")
    progress: ProgressView
    params: GenerationParams = Field(
        description="The parameters the job runs with, every default filled in; input images show as `provided`."
    )
    images: list[ImageView] = Field(default_factory=list)
    error: ErrorView | None = None
    cancel_reason: CancelReason | None = None
    webhook: WebhookView | None = None
    preview: str | None = Field(default=None, description="Latest latent preview (data URL), with stream_previews.")


class WebhookDelivery(BaseModel):
    """One delivery attempt and its outcome."""

    webhook_id: str
    event: WebhookEvent
    attempt: int
    at: datetime
    outcome: str
    detail: str


class WebhookView(BaseModel):
    """The job's webhook and its delivery log."""

    url: str
    events: list[WebhookEvent]
    deliveries: list[WebhookDelivery] = Field(default_factory=list)


class JobList(BaseModel):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    object: str = "list"
    data: list[JobView]
    next_cursor: str | None = None


def timestamp(seconds: float) -> datetime:
    """Epoch seconds as an aware UTC datetime (serialised as ISO 8601)."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def maybe_timestamp(seconds: float | None) -> datetime | None:
    """`timestamp` for optional times."""
    return None if seconds is None else timestamp(seconds)
