"""Estimated start and finish of queued jobs, from the step latency workers measured for their model.

Cost of a job = steps x megapixels x images x (seconds per step-megapixel-image) + per-job overhead,
both moving averages a worker updates after every job it completes. Work ahead of a queued job =
the remaining share of running jobs + every job ahead of it in the queues, divided by ready workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis import Redis

from contract.jobs import GenerationParams, JobRecord, JobStatus, now
from contract.queues import PRIORITIES, job_key, queue_name, step_rate_key

MAX_JOBS_READ = 200  # beyond this many jobs ahead, extrapolate from their average


@dataclass(frozen=True)
class Rates:
    """Measured costs of one model."""

    step_seconds_per_mpx: float
    overhead_seconds: float

    def cost(self, params: GenerationParams) -> float:
        """Seconds a worker needs for a job with these parameters."""
        mpx = params.width * params.height / 1e6 * params.num_images
        return params.num_inference_steps * mpx * self.step_seconds_per_mpx + self.overhead_seconds


def rates(redis: Redis, prefix: str, model: str) -> Rates | None:
    """The model's measured rates, or None before any job finished."""
    raw = redis.hgetall(step_rate_key(prefix, model))
    if not raw:
        return None
    values = {k.decode(): float(v) for k, v in raw.items()}  # type: ignore[union-attr]
    return Rates(values["step_seconds_per_mpx"], values["overhead_seconds"])


def _params_of(redis: Redis, prefix: str, job_ids: list[str]) -> list[GenerationParams]:
    with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hget(job_key(prefix, job_id), "params")
        raw = pipe.execute()
    return [GenerationParams.model_validate(json.loads(r)) for r in raw if r]


def estimate(
    redis: Redis, prefix: str, record: JobRecord, position: int | None, running: list[JobRecord], workers: int
) -> tuple[float, float] | None:
    """(estimated start, estimated finish) in epoch seconds for a queued job, or None without measurements."""
    model_rates = rates(redis, prefix, record.model)
    if model_rates is None or record.status != JobStatus.QUEUED or position is None:
        return None
    ahead_ids: list[str] = []
    own = PRIORITIES.index(record.priority.value)
    for priority in PRIORITIES[: own + 1]:
        key = f"rq:queue:{queue_name(prefix, record.model, priority)}"
        ahead_ids += [i.decode() for i in redis.lrange(key, 0, MAX_JOBS_READ)]  # type: ignore[union-attr]
    ahead_ids = ahead_ids[:position]
    known = _params_of(redis, prefix, ahead_ids[:MAX_JOBS_READ])
    work = sum(model_rates.cost(p) for p in known)
    if known and position > len(known):
        work += work / len(known) * (position - len(known))
    for job in running:
        fraction = job.progress.fraction if job.progress else 0.0
        work += model_rates.cost(job.params) * (1.0 - fraction)
    start = now() + work / max(1, workers)
    return start, start + model_rates.cost(record.params)
