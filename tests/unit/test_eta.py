"""ETA arithmetic and the one step-cost formula shared by the worker (measuring) and the API (estimating)."""

from __future__ import annotations

import pytest

from app.eta import Ahead, estimate
from contract.models import StepRates
from tests.helpers import params

RATES = StepRates(step_seconds_per_mpx=10.0, overhead_seconds=0.5)


def test_cost_is_megapixel_steps_times_rate_plus_overhead() -> None:
    job = params(width=1000, height=1000, num_inference_steps=20, num_images=2)
    assert job.megapixel_steps == pytest.approx(40.0)
    assert RATES.cost(job) == pytest.approx(400.5)


def test_measured_and_moving_average() -> None:
    job = params(width=1000, height=500, num_inference_steps=10, num_images=1)  # 5 megapixel-steps
    sample = StepRates.measured(job, denoise_seconds=2.0, total_seconds=2.5)
    assert (sample.step_seconds_per_mpx, sample.overhead_seconds) == pytest.approx((0.4, 0.5))
    blended = StepRates(step_seconds_per_mpx=1.0, overhead_seconds=1.5).updated(sample, 0.25)
    assert (blended.step_seconds_per_mpx, blended.overhead_seconds) == pytest.approx((0.85, 1.25))
    assert StepRates.measured(job, 2.0, 1.0).overhead_seconds == 0.0, "never negative"


def test_work_ahead_is_queued_plus_unfinished_running_over_workers() -> None:
    small = params(width=100, height=100, num_inference_steps=10)  # 0.1 megapixel-steps: cost 1.5 s
    ahead = Ahead(queued=[small, small], count=2, running=[(small, 0.5)], workers=1)
    start, finish = estimate(RATES, small, ahead, start_from=1000.0)
    assert start == pytest.approx(1000.0 + 1.5 * 2 + 0.75)
    assert finish == pytest.approx(start + 1.5)
    two = estimate(RATES, small, Ahead(ahead.queued, 2, ahead.running, workers=2), 1000.0)[0]
    assert two == pytest.approx(1000.0 + (1.5 * 2 + 0.75) / 2)


def test_jobs_ahead_beyond_those_read_are_extrapolated() -> None:
    small = params(width=100, height=100, num_inference_steps=10)
    start, _ = estimate(RATES, small, Ahead(queued=[small] * 4, count=10, running=[], workers=1), 0.0)
    assert start == pytest.approx(1.5 * 10)
    assert estimate(RATES, small, Ahead(queued=[], count=0, running=[], workers=0), 5.0)[0] == 5.0


def test_compatible_jobs_ahead_are_costed_as_shared_batches() -> None:
    one = params(width=100, height=100, num_inference_steps=10)  # 0.1 megapixel-steps: 1.0 s of steps
    sixteen = [one.model_copy(update={"seed": s}) for s in range(16)]  # prompts and seeds may differ
    alone = estimate(RATES, one, Ahead(sixteen, 16, [], workers=1), 0.0)
    batched = estimate(RATES, one, Ahead(sixteen, 16, [], workers=1, max_batch_images=8), 0.0)
    assert alone == pytest.approx((16 * 1.5, 16 * 1.5 + 1.5)), "max 1: every job is a batch of its own"
    # Max 8: two full batches ahead (8 images of steps + one overhead each), then the job's own batch.
    assert batched == pytest.approx((2 * (8.0 + 0.5), 2 * (8.0 + 0.5) + 1.5))


def test_a_job_joins_the_batch_of_compatible_jobs_ahead_and_finishes_with_it() -> None:
    one = params(width=100, height=100, num_inference_steps=10)
    other_size = one.model_copy(update={"width": 200})  # another batch key: 2.0 s of steps
    queued = [one, other_size, one.model_copy(update={"num_images": 5})]
    start, finish = estimate(RATES, one, Ahead(queued, 3, [], workers=1, max_batch_images=8), 100.0)
    # The oldest job claims the 5-image job and this one (7 images): only the wider job is not in it,
    # and it waits behind: the new job starts at once.
    assert start == pytest.approx(100.0)
    assert finish == pytest.approx(100.0 + 7 * 1.0 + 0.5)
    # A job that does not fit the first batch (8 - 1 - 5 = 2 images of room) waits for it and the wider job.
    three = one.model_copy(update={"num_images": 3})
    start, finish = estimate(RATES, three, Ahead(queued, 3, [], workers=1, max_batch_images=8), 100.0)
    assert start == pytest.approx(100.0 + (6 * 1.0 + 0.5) + (2.0 + 0.5))
    assert finish == pytest.approx(start + 3 * 1.0 + 0.5)


def test_running_jobs_of_one_batch_count_its_remaining_cost_once() -> None:
    one = params(width=100, height=100, num_inference_steps=10)
    running = [(one.model_copy(update={"seed": s}), 0.5) for s in range(4)]  # one batch, half done
    start, _ = estimate(RATES, one, Ahead([], 0, running, workers=1, max_batch_images=8), 0.0)
    assert start == pytest.approx((4 * 1.0 + 0.5) * 0.5)
    start, _ = estimate(RATES, one, Ahead([], 0, running, workers=1), 0.0)
    assert start == pytest.approx(4 * 1.5 * 0.5), "no batching: four jobs, four overheads"
