"""One progress format everywhere: stages in order, fractions that only grow from 0 to 1."""

from __future__ import annotations

from contract.jobs import Progress, Stage


def test_fraction_grows_through_every_stage_and_step() -> None:
    total = 25
    sequence = [Progress.at(Stage.QUEUED, 0, total), Progress.at(Stage.LOADING, 0, total)]
    sequence += [Progress.at(Stage.DENOISING, step, total) for step in range(1, total + 1)]
    sequence += [Progress.at(Stage.DECODING, total, total), Progress.at(Stage.STORING, total, total)]
    sequence += [Progress.at(Stage.DONE, total, total)]
    fractions = [p.fraction for p in sequence]
    assert fractions == sorted(fractions)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert Progress.at(Stage.DENOISING, total, total).fraction == Progress.at(Stage.DECODING, total, total).fraction


def test_denoising_fills_its_span_linearly() -> None:
    half = Progress.at(Stage.DENOISING, 10, 20)
    assert half.fraction == round(0.05 + (0.92 - 0.05) / 2, 4)
    assert Progress.at(Stage.DENOISING, 3, 0).fraction == 0.05, "no steps known yet: the stage's start"
