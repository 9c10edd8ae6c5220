"""The job contract: the payload the API queues and the record both processes read and write."""

from __future__ import annotations

import hashlib
import json
import time
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationInfo, field_validator

SEED_MODULUS = 2**32
# Hard bounds the schema publishes; the service's configured limits (app.settings) are usually lower.
MAX_PROMPT_CHARS = 20_000


class JobStatus(StrEnum):
    """Lifecycle of a generation job as clients see it."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class Priority(StrEnum):
    """Queue priority: a worker takes every queued `high` job of its model before any `normal`, then `low`."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Stage(StrEnum):
    """Where a job is; one progress format for polling, SSE and webhooks."""

    QUEUED = "queued"
    LOADING = "loading"
    DENOISING = "denoising"
    DECODING = "decoding"
    STORING = "storing"
    DONE = "done"


class CancelReason(StrEnum):
    """Why a job ended `canceled`."""

    CLIENT = "client"
    DEADLINE = "deadline"


class WebhookEvent(StrEnum):
    """What a webhook subscribes to: a job's start, its progress (at most one a second), its end."""

    STARTED = "started"
    PROGRESS = "progress"
    COMPLETED = "completed"


class JobErrorType(StrEnum):
    """Closed set of reasons a job fails, shown to clients as `error.type`."""

    INVALID_INPUT = "invalid_input"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    BAD_OUTPUT = "bad_output"
    STORAGE_ERROR = "storage_error"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"


class LoraSpec(BaseModel):
    """One LoRA adapter active for a job, and its scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="An adapter of the model (GET /v1/models).")
    scale: StrictFloat = Field(default=1.0, ge=-4, le=4, description="Strength; 0 is none, negative inverts it.")


class GenerationInputs(BaseModel):
    """Fields a request gives and a job runs with unchanged.

    Declared once: the API's request body and the queued parameters both extend this class, so a
    new pass-through field is added here and read where the pipeline is called.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to draw.")
    negative_prompt: str | None = Field(
        default=None, max_length=MAX_PROMPT_CHARS, description="What to steer away from."
    )
    strength: StrictFloat | None = Field(
        default=None, gt=0, le=1, description="With init_image: 0 keeps it, 1 ignores it; default 0.8."
    )
    controlnet: str | None = Field(
        default=None,
        max_length=100,
        description="A ControlNet of the model (GET /v1/models), steered by control_image.",
    )
    controlnet_conditioning_scale: StrictFloat = Field(
        default=1.0, ge=0, le=2, description="Strength of the ControlNet."
    )
    loras: list[LoraSpec] = Field(default_factory=list, max_length=16, description="Adapters active for this job only.")
    output_format: Literal["png", "jpeg", "webp"] = Field(default="png", description="Encoding of the images.")
    output_quality: StrictInt = Field(default=90, ge=1, le=100, description="Quality of jpeg and webp (1-100).")
    scheduler: str | None = Field(
        default=None,
        max_length=40,
        description="Sampler by name (euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, unipc, lcm; flow_euler for "
        "flow-matching models); default: the model's own.",
    )

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _printable(cls, text: str | None, info: ValidationInfo) -> str | None:
        if text is None:
            return None
        if any((ord(c) < 32 and c not in "\t\n\r") or c == "\x7f" for c in text):
            raise ValueError("must not contain control characters (NUL and the like)")
        if info.field_name == "prompt" and not text.strip():
            raise ValueError("must contain more than whitespace")
        return text


class GenerationParams(GenerationInputs):
    """Fully resolved parameters of one generation: nothing is left for the worker to pick."""

    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int = Field(ge=0, lt=SEED_MODULUS)
    num_images: int = Field(ge=1)
    init_image: str | None = None  # storage key of the input image (image-to-image, inpainting)
    mask_image: str | None = None  # storage key of the inpainting mask (white = repaint)
    control_image: str | None = None  # storage key of the ControlNet's conditioning image

    def image_seed(self, index: int) -> int:
        """Seed of image `index`: image k of a request regenerates alone with `seed=image_seed(k), num_images=1`."""
        return (self.seed + index) % SEED_MODULUS

    def batch_key(self) -> str:
        """What jobs must share to be denoised as one batch: everything but prompts, seeds, image count,
        input images themselves and output encoding. Equal keys batch; a worker claims by it."""
        shared = self.model_dump(
            mode="json",
            exclude={
                "prompt",
                "negative_prompt",
                "seed",
                "num_images",
                "output_format",
                "output_quality",
                "init_image",
                "mask_image",
                "control_image",
            },
        )
        shared["inputs"] = [self.init_image is not None, self.mask_image is not None, self.control_image is not None]
        return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:24]

    @property
    def megapixel_steps(self) -> float:
        """Denoising work of the job: steps x megapixels x images (what step cost is measured per)."""
        return self.num_inference_steps * self.width * self.height / 1e6 * self.num_images


class JobPayload(BaseModel):
    """What is queued in RQ (as JSON) for the worker's job function."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    model: str
    params: GenerationParams
    created_at: float
    start_by: float | None = None
    timeout_seconds: int | None = None
    preview_every: int | None = None
    priority: Priority = Priority.NORMAL
    # W3C trace context of the API's submit span (contract.tracing), when tracing is on.
    trace: dict[str, str] | None = None


class ImageRecord(BaseModel):
    """One stored output image; the API turns `key` into a signed URL."""

    key: str
    width: int
    height: int
    seed: int
    content_type: str
    bytes: int
    reproducibility: dict[str, Any] = Field(default_factory=dict)


class JobError(BaseModel):
    """Why a job failed, safe to show to the client (no traceback)."""

    type: JobErrorType
    message: str


# Share of a job's work done when each stage starts; denoising fills the span up to decoding.
STAGE_FRACTION = {
    Stage.QUEUED: 0.0,
    Stage.LOADING: 0.02,
    Stage.DENOISING: 0.05,
    Stage.DECODING: 0.92,
    Stage.STORING: 0.96,
    Stage.DONE: 1.0,
}


class Progress(BaseModel):
    """How far a job is: stage, denoising step and an overall fraction in [0, 1]."""

    stage: Stage = Stage.QUEUED
    step: int = 0
    total_steps: int
    fraction: float = 0.0

    @classmethod
    def at(cls, stage: Stage, step: int, total_steps: int) -> Progress:
        """Progress at `stage` after `step` denoising steps."""
        fraction = STAGE_FRACTION[stage]
        if stage == Stage.DENOISING and total_steps:
            span = STAGE_FRACTION[Stage.DECODING] - fraction
            fraction += span * step / total_steps
        return cls(stage=stage, step=step, total_steps=total_steps, fraction=round(fraction, 4))


class JobRecord(BaseModel):
    """Our own record of a job, kept for the configured retention whatever RQ keeps."""

    id: str
    model: str
    status: JobStatus
    params: GenerationParams
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    images: list[ImageRecord] = Field(default_factory=list)
    error: JobError | None = None
    attempts: int = 0
    worker: str | None = None
    priority: Priority = Priority.NORMAL
    start_by: float | None = None
    timeout_seconds: int | None = None
    cancel_reason: CancelReason | None = None
    webhook_url: str | None = None
    webhook_events: list[WebhookEvent] = Field(default_factory=list)
    preview_every: int | None = None
    preview: str | None = None
    owner: str | None = None  # name of the API key that created the job (None: auth off)
    batch_key: str | None = None  # params.batch_key(): workers claim queued jobs with theirs into one batch


def now() -> float:
    """Wall-clock seconds since the epoch; records use it for every timestamp."""
    return time.time()
