"""Estimated start and finish of queued jobs, from the step cost workers measured for their model.

Workers denoise compatible jobs together (same `GenerationParams.batch_key`, up to the model's published
`max_batch_images` images), so the work ahead of a queued job is counted in batches, formed as a worker
forms them: it takes the oldest waiting job and claims the compatible ones behind it while they fit.
A batch costs `contract.models.StepRates.batch_cost` (a rate per megapixel-step of all its images plus
one overhead, both measured per batch by the worker). Work ahead = the unfinished share of running
batches + the batches formed before the one the job joins, divided among the ready workers; the job
finishes with its batch.
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
    max_batch_images: int = 1  # images one batch of the model's workers holds (1: no cross-request batching)


def batches(jobs: Sequence[GenerationParams], max_images: int) -> list[list[int]]:
    """Indexes of `jobs` (in queue order) grouped into batches as workers claim them: the oldest job left,
    then every later compatible job that still fits, up to `max_images` images."""
    left = [(p.batch_key(), i) for i, p in enumerate(jobs)]
    formed = []
    while left:
        key, head = left.pop(0)
        batch, room, rest = [head], max_images - jobs[head].num_images, []
        for other_key, other in left:
            if other_key == key and jobs[other].num_images <= room:
                batch.append(other)
                room -= jobs[other].num_images
            else:
                rest.append((other_key, other))
        formed.append(batch)
        left = rest
    return formed


def _cost(rates: StepRates, jobs: Sequence[GenerationParams], batch: list[int]) -> float:
    return rates.batch_cost([jobs[i] for i in batch])


def estimate(rates: StepRates, job: GenerationParams, ahead: Ahead, start_from: float) -> tuple[float, float]:
    """(start, finish) in epoch seconds of a job with `ahead` before it, from `start_from` (now)."""
    limit, queued = ahead.max_batch_images, ahead.queued
    if ahead.count > len(queued):
        # Not every job ahead was read: those read form batches, the rest cost what they cost on average,
        # and the job is taken as starting a batch of its own after all of them.
        work = sum(_cost(rates, queued, b) for b in batches(queued, limit))
        work *= ahead.count / len(queued) if queued else 0.0
        own = rates.cost(job)
    else:
        jobs = [*queued, job]
        formed = batches(jobs, limit)
        index = next(n for n, b in enumerate(formed) if len(queued) in b)
        work = sum(_cost(rates, jobs, b) for b in formed[:index])
        own = _cost(rates, jobs, formed[index])
    running: dict[tuple[str, float], list[GenerationParams]] = {}
    for params, fraction in ahead.running:  # the jobs of one batch share its key and its progress
        running.setdefault((params.batch_key(), fraction), []).append(params)
    for (_, fraction), group in running.items():
        work += sum(_cost(rates, group, b) for b in batches(group, limit)) * (1.0 - fraction)
    start = start_from + work / max(1, ahead.workers)
    return start, start + own


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
        info = self.catalog.info(record.model)
        limit = info.max_batch_images if info else 1
        ahead = Ahead(queued, position, running, self.catalog.ready_workers(record.model), limit)
        return estimate(rates, record.params, ahead, now())
