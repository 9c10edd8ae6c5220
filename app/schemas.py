"""Request and response bodies of the public API (pydantic v2, unknown fields refused)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.jobs import SEED_MODULUS, CancelReason, JobErrorType, JobStatus, Priority, Stage, WebhookEvent


class LoraRequest(BaseModel):
    """One LoRA adapter for this job and its scale."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    scale: float = Field(default=1.0, ge=-4, le=4)


class GenerationCreate(BaseModel):
    """Body of `POST /v1/generations`. Omitted fields take the model's defaults; limits are configured."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    prompt: str = Field(min_length=1, description="What to draw.")
    negative_prompt: str | None = Field(default=None, description="What to steer away from.")
    width: int | None = Field(default=None, description="Pixels, a multiple of 8; default: the model's native size.")
    height: int | None = Field(default=None, description="Pixels, a multiple of 8; default: the model's native size.")
    num_inference_steps: int | None = Field(default=None, ge=1, description="Denoising steps.")
    guidance_scale: float | None = Field(
        default=None, ge=0, description="Classifier-free guidance; 1 or less disables it."
    )
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=SEED_MODULUS,
        description="Seed of image 0; image k uses seed+k. Picked and returned when absent.",
    )
    num_images: int = Field(default=1, ge=1, description="Images in this request.")
    init_image: str | None = Field(
        default=None,
        description="Image-to-image: PNG, JPEG or WebP, base64 or a data URL; its size is the output size.",
    )
    strength: float | None = Field(
        default=None, gt=0, le=1, description="With init_image: 0 keeps it, 1 ignores it; default 0.8."
    )
    mask_image: str | None = Field(
        default=None,
        description="Inpainting, with init_image: white pixels are "
        "repainted, black ones kept; same size as init_image.",
    )
    controlnet: str | None = Field(
        default=None,
        max_length=100,
        description="A ControlNet of the model (see GET /v1/models), steered by control_image.",
    )
    control_image: str | None = Field(
        default=None,
        description="Conditioning image of the ControlNet (PNG, JPEG "
        "or WebP, base64 or a data URL); its size is the output size.",
    )
    controlnet_conditioning_scale: float = Field(default=1.0, ge=0, le=2, description="Strength of the ControlNet.")
    loras: list[LoraRequest] | None = Field(
        default=None, description="Adapters (see GET /v1/models) active for this job only, each with its scale."
    )
    output_format: Literal["png", "jpeg", "webp"] = Field(default="png", description="Encoding of the images.")
    output_quality: int = Field(default=90, ge=1, le=100, description="Quality of jpeg and webp (1-100).")
    scheduler: str | None = Field(
        default=None,
        max_length=40,
        description="Sampler by name (euler, euler_a, "
        "dpmpp_2m, dpmpp_2m_karras, ddim, unipc; flow_euler for flow-matching models); "
        "default: the model's own.",
    )
    model: str | None = Field(default=None, description="Model name; default: the configured default model.")
    priority: Priority = Field(default=Priority.NORMAL, description="high jobs are taken before normal, then low.")
    deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        description="Time-to-start: if the job has not "
        "started this many seconds after submission it ends `canceled` (deadline).",
    )
    timeout_seconds: int | None = Field(default=None, ge=1, description="Running-time limit, checked every step.")
    stream_previews: int | None = Field(
        default=None,
        ge=1,
        description="Every this many steps, a small preview "
        "of the current latents (a JPEG data URL) rides on the progress event.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Called (signed, Standard Webhooks) on the events in `webhook_events`.",
    )
    webhook_events: list[WebhookEvent] | None = Field(default=None, max_length=3, description='Default: ["completed"].')


class ResolvedParams(BaseModel):
    """The parameters the job runs with, every default filled in."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int
    scheduler: str | None
    output_format: str
    output_quality: int
    strength: float | None = None
    loras: list[dict[str, Any]] = Field(default_factory=list)
    controlnet: str | None = None
    control_image: str | None = None
    controlnet_conditioning_scale: float = 1.0
    init_image: str | None = Field(default=None, description="`provided` when the job had an input image.")
    mask_image: str | None = None


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
    params: ResolvedParams
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
