"""What a worker tells the API about its model, typed: the published model facts and the measured step cost.

Both cross the process boundary through Redis as JSON; both sides read and write them only through
these classes, so a renamed field breaks the type checker, not production.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis import Redis

from contract.jobs import GenerationParams
from contract.keys import model_info_key, step_rate_key

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


def _parse(cls: type[M], raw: Any, model: str) -> M | None:
    # A worker of another version may have published other fields: treat it as not published
    # (it is replaced when a worker of this version starts) rather than failing every request.
    try:
        return cls.model_validate_json(raw)
    except ValidationError:
        log.warning("unreadable %s published for model %s; ignored", cls.__name__, model)
        return None


class LoraInfo(BaseModel):
    """An adapter that fits the model, with the content hash of its file."""

    name: str
    sha256: str


class ModelInfo(BaseModel):
    """Facts a ready worker publishes about its model: native size, defaults, limits, what runs it."""

    model_config = ConfigDict(frozen=True)

    pipeline: str = Field(description="diffusers pipeline class.")
    width: int = Field(description="Native width: the default when a request gives none.")
    height: int = Field(description="Native height.")
    default_steps: int
    default_guidance_scale: float
    scheduler: str = Field(description="The model's own scheduler: the default when a request names none.")
    schedulers: list[str] = Field(description="Scheduler names a request may use with this model.")
    max_steps: int | None = Field(default=None, description="The model's own step limit (few-step models).")
    fixed_guidance_scale: float | None = Field(default=None, description="The only guidance the model runs with.")
    device: str
    dtype: str
    compiled: bool = False
    controlnets: list[str] = Field(default_factory=list, description="ControlNets configured on its workers.")
    loras: list[LoraInfo] = Field(default_factory=list, description="Adapters that fit: name and sha256.")
    max_batch_images: int = Field(
        default=1,
        description="Images one denoising batch of its workers holds, compatible jobs claimed together "
        "(DIFFUSION_MAX_BATCH_IMAGES; 1: no cross-request batching).",
    )
    max_loras: int | None = Field(
        default=None,
        description="Most adapters per request on this model's workers, where lower than the service's limit "
        "(compiled workers: their hot-swap slots).",
    )

    def publish(self, redis: Redis, prefix: str, model: str) -> None:
        """Store as the model's published facts (the newest ready worker's)."""
        redis.set(model_info_key(prefix, model), self.model_dump_json())

    @classmethod
    def read(cls, redis: Redis, prefix: str, model: str) -> ModelInfo | None:
        """The model's published facts, or None before any worker for it was ready."""
        raw = redis.get(model_info_key(prefix, model))
        return None if raw is None else _parse(cls, raw, model)


class StepRates(BaseModel):
    """Measured cost of a model's batches; the one cost formula both the worker (measuring) and the ETA use.

    cost(batch) = megapixel-steps of all its jobs x `step_seconds_per_mpx` + `overhead_seconds` (text
    encoding, decode and the rest of the call, once per batch), both moving averages over the model's
    finished batches. A job alone is a batch of one.
    """

    step_seconds_per_mpx: float
    overhead_seconds: float

    def cost(self, params: GenerationParams) -> float:
        """Seconds a worker needs for a job with these parameters, denoised alone."""
        return self.batch_cost([params])

    def batch_cost(self, jobs: Sequence[GenerationParams]) -> float:
        """Seconds a worker needs for these jobs denoised as one batch."""
        return sum(p.megapixel_steps for p in jobs) * self.step_seconds_per_mpx + self.overhead_seconds

    def updated(self, sample: StepRates, weight: float) -> StepRates:
        """The moving average with one more job's measurement folded in at `weight`."""
        return StepRates(
            step_seconds_per_mpx=weight * sample.step_seconds_per_mpx + (1 - weight) * self.step_seconds_per_mpx,
            overhead_seconds=weight * sample.overhead_seconds + (1 - weight) * self.overhead_seconds,
        )

    @classmethod
    def measured(cls, params: GenerationParams, denoise_seconds: float, total_seconds: float) -> StepRates:
        """The rates one finished job shows."""
        return cls(
            step_seconds_per_mpx=denoise_seconds / params.megapixel_steps,
            overhead_seconds=max(0.0, total_seconds - denoise_seconds),
        )

    @classmethod
    def read(cls, redis: Redis, prefix: str, model: str) -> StepRates | None:
        """The model's rates, or None before any of its jobs finished."""
        raw = redis.get(step_rate_key(prefix, model))
        return None if raw is None else _parse(cls, raw, model)

    def save(self, redis: Redis, prefix: str, model: str) -> None:
        """Store as the model's current rates."""
        redis.set(step_rate_key(prefix, model), self.model_dump_json())
