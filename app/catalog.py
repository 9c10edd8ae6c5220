"""The served models: their names, what their workers published about them, their workers and queues."""

from __future__ import annotations

from redis import Redis

from app.queue import JobQueue
from app.settings import ApiSettings
from contract.models import ModelInfo, StepRates


class Catalog:
    """Read-only view of the served models for resolution, listing, readiness and metrics."""

    def __init__(self, redis: Redis, settings: ApiSettings, queue: JobQueue) -> None:
        self.redis, self.settings, self.queue = redis, settings, queue

    @property
    def names(self) -> list[str]:
        """Model names a request may ask for, the default first."""
        return self.settings.models

    def info(self, model: str) -> ModelInfo | None:
        """What a ready worker of the model published (native size, defaults, limits), or None before any did."""
        return ModelInfo.read(self.redis, self.settings.key_prefix, model)

    def rates(self, model: str) -> StepRates | None:
        """The model's measured step cost, or None before any of its jobs finished."""
        return StepRates.read(self.redis, self.settings.key_prefix, model)

    def ready_workers(self, model: str) -> int:
        """Warm workers registered on the model's queues."""
        return self.queue.ready_workers(model)

    def depth(self, model: str) -> int:
        """Jobs waiting for the model, all priorities."""
        return self.queue.depth(model)
