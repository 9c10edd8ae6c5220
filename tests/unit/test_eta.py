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
