"""Estimated start and finish of queued jobs, from the step cost workers measured for their model.

Work ahead of a queued job = the unfinished share of running jobs + every job ahead of it in the
queues, each costed with `contract.models.StepRates.cost`; divided among the ready workers.
`estimate` is the arithmetic alone; `Estimator` gathers its inputs from Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.catalog import Catalog
from app.queue import JobQueue
from contract.jobs import GenerationParams, JobRecord, JobStatus, now
from contract.models import StepRates
from contract.records import JobStore

MAX_JOBS_READ = 200  # beyond this many jobs ahead, extrapolate from their average


@dataclass(frozen=True)
class Ahead:
    """What stands before a queued job: the queued jobs read (of `count` in all) and the running ones."""

    queued: Sequence[GenerationParams]
    count: int
    running: Sequence[tuple[GenerationParams, float]]  # (parameters, fraction done)
    workers: int


def estimate(rates: StepRates, job: GenerationParams, ahead: Ahead, start_from: float) -> tuple[float, float]:
    """(start, finish) in epoch seconds of a job with `ahead` before it, from `start_from` (now)."""
    work = sum(rates.cost(p) for p in ahead.queued)
    if ahead.queued and ahead.count > len(ahead.queued):
        work += work / len(ahead.queued) * (ahead.count - len(ahead.queued))
    work += sum(rates.cost(p) * (1.0 - fraction) for p, fraction in ahead.running)
    start = start_from + work / max(1, ahead.workers)
    return start, start + rates.cost(job)


class Estimator:
    """ETAs of queued jobs; None before the model has measurements."""

    def __init__(self, queue: JobQueue, catalog: Catalog, store: JobStore) -> None:
        self.queue, self.catalog, self.store = queue, catalog, store

    def __call__(self, record: JobRecord, position: int | None) -> tuple[float, float] | None:
        """Estimated (start, finish) of a queued job at `position`."""
        if record.status != JobStatus.QUEUED or position is None:
            return None
        rates = self.catalog.rates(record.model)
        if rates is None:
            return None
        ids = [i for i in self.queue.ahead(record.model, record.priority, min(position, MAX_JOBS_READ))]
        queued = [r.params for r in self.store.get_many(ids) if r is not None]
        running = [
            (r.params, r.progress.fraction if r.progress else 0.0)
            for r in self.store.get_many(self.queue.running(record.model))
            if r is not None and r.status == JobStatus.RUNNING
        ]
        ahead = Ahead(queued, position, running, self.catalog.ready_workers(record.model))
        return estimate(rates, record.params, ahead, now())
