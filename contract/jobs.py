"""The job contract: the payload the API queues and the record both processes read and write."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

SEED_MODULUS = 2**32


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


class JobErrorType(StrEnum):
    """Closed set of reasons a job fails, shown to clients as `error.type`."""

    INVALID_INPUT = "invalid_input"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    BAD_OUTPUT = "bad_output"
    STORAGE_ERROR = "storage_error"
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"


class GenerationParams(BaseModel):
    """Fully resolved parameters of one generation: nothing is left for the worker to pick."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str
    negative_prompt: str | None = None
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int = Field(ge=0, lt=SEED_MODULUS)
    num_images: int = Field(ge=1)

    def image_seed(self, index: int) -> int:
        """Seed of image `index`: image k of a request regenerates alone with `seed=image_seed(k), num_images=1`."""
        return (self.seed + index) % SEED_MODULUS


class JobPayload(BaseModel):
    """What is queued in RQ (as JSON) for the worker's job function."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    model: str
    params: GenerationParams
    created_at: float


class ImageRecord(BaseModel):
    """One stored output image; the API turns `key` into a signed URL."""

    key: str
    width: int
    height: int
    seed: int
    content_type: str
    bytes: int


class JobError(BaseModel):
    """Why a job failed, safe to show to the client (no traceback)."""

    type: JobErrorType
    message: str


class Progress(BaseModel):
    """Denoising progress of a running job."""

    step: int
    total_steps: int


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


def now() -> float:
    """Wall-clock seconds since the epoch; records use it for every timestamp."""
    return time.time()
