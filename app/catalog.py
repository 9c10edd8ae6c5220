"""The served models: their names, what their workers published about them, their workers and queues."""

from __future__ import annotations

from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.queue import JobQueue
from app.settings import ApiSettings
from contract.jobs import now
from contract.models import ModelInfo, StepRates
from contract.records import JobStore

# Metrics ask Redis with these bounds: a scrape must answer (with diffusion_redis_up 0) while Redis is down.
PROBE_TIMEOUT_SECONDS = 1.0


class Catalog:
    """Read-only view of the served models for resolution, listing, readiness and metrics."""

    def __init__(self, redis: Redis, settings: ApiSettings, queue: JobQueue) -> None:
        self.redis, self.settings, self.queue = redis, settings, queue
        self.store = JobStore(redis, settings.key_prefix, settings.job_retention_seconds)
        self.probe = Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
            socket_timeout=PROBE_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )

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

    def running(self, model: str) -> int:
        """The model's jobs that workers started and have not finished."""
        return len(set(self.queue.running(model)))

    def oldest_age(self, model: str) -> float:
        """Seconds the oldest job waiting for the model has waited since submission; 0 when none waits."""
        created = [r.created_at for r in self.store.get_many(self.queue.heads(model)) if r is not None]
        return max(0.0, now() - min(created)) if created else 0.0

    def redis_memory(self) -> tuple[int, int]:
        """Memory Redis uses and its `maxmemory` (0: none), asked once with a short timeout and no retry;
        raises when Redis does not answer."""
        info = self.probe.info("memory")
        return int(info["used_memory"]), int(info["maxmemory"])
