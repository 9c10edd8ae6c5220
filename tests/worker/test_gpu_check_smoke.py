"""benchmarks/gpu_check.py cannot rot: its CPU smoke run goes through every case, and its arithmetic is right.

The smoke run is the script's own command line on tiny SD 1.5- and SDXL-shaped pipelines (same
pipeline classes and conditioning paths as the GPU run), serving eager so it takes seconds; the
compiled path of the same cases runs with `--smoke` alone (minutes of CPU compilation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_gap import busy_fraction, idle_gaps
from benchmarks.gpu_report import Budget

ROOT = Path(__file__).resolve().parents[2]


def smoke(out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """The check's own command line, tiny models on the CPU, serving eager."""
    command = [sys.executable, "benchmarks/gpu_check.py", "--smoke", "--no-compile", "--out", str(out), *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_smoke_run_covers_every_case(tmp_path: Path) -> None:
    done = smoke(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    results = report["results"]
    assert report["errors"] == [] and report["skipped"] == []
    cases = ("compile", "compiled", "recompiles", "idle_gap", "compiled_batch_4", "batched_vs_alone", "vae_decode")
    for model in ("sd15", "sdxl"):
        assert {f"{model}.{case}" for case in (*cases, "eager")} <= set(results)
        runs = {**results[f"{model}.compiled"], **results[f"{model}.compiled_batch_4"]}
        assert set(runs) == {"batch_1", "batch_8", "batch_4"} == set(results[f"{model}.eager"])
        assert all(r["ms_per_step"] > 0 and r["images_per_s"] > 0 for r in runs.values())
        matrix = results[f"{model}.recompiles"]
        assert matrix["calls"] == 7 + 3 * 8 + 7 and matrix["serving_compilations_during"] == 0
        assert matrix["serving_compilations_at_end"] == 0
        gap = results[f"{model}.idle_gap"]
        assert len(gap["gaps_ms"]) == gap["batches"] - 1 and all(g >= 0 for g in gap["gaps_ms"])
        assert 0 < gap["busy_fraction"] <= 1
        assert results[f"{model}.batched_vs_alone"]["max_abs_diff"] <= 2  # float32 on the CPU
        decode = results[f"{model}.vae_decode"]
        assert decode["batch_1_ms_per_image"] > 0 and decode["batch_8_ms_per_image"] > 0
    assert report["device"]["name"].startswith("cpu")
    assert len(report["targets"]) == 8 and all(t["value"] is not None for t in report["targets"])
    assert "GPU check on cpu" in done.stdout


def test_a_spent_budget_skips_every_case_and_still_writes_the_report(tmp_path: Path) -> None:
    done = smoke(tmp_path, "--models", "sd15", "--budget-seconds", "5", "--started-at", "0")  # began in 1970
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["results"] == {} and report["errors"] == []
    assert [s["case"] for s in report["skipped"]][:2] == ["sd15.compile", "sd15.compiled"]
    assert "needs sd15.compile" in report["skipped"][1]["reason"]
    assert all(t["value"] is None for t in report["targets"])


def test_idle_gaps_measure_from_the_last_work_before_a_marker_to_the_first_after() -> None:
    work = [(0, 10), (2, 40), (45, 60), (70, 90), (95, 100)]
    # Markers at 0 (first batch), 42 (work idle since 40, next at 45), 65 (idle 60..70), 92 (idle 90..95).
    assert idle_gaps(work, [0, 42, 65, 92]) == [5, 10, 5]
    assert idle_gaps([(0, 50)], [0, 20]) == []  # nothing starts after the marker: no gap to measure
    assert idle_gaps([(0, 50), (60, 70)], [0, 20]) == [10]  # work before the marker ran on past it
    assert idle_gaps([(0, 50), (30, 70)], [0, 20]) == [0]  # the next batch began while it still ran


def test_busy_fraction_merges_overlapping_work() -> None:
    assert busy_fraction([(0, 10), (5, 20), (30, 40)], 0, 40) == 30 / 40  # busy 0..20 and 30..40
    assert busy_fraction([(0, 10)], 0, 0) == 0.0


def test_budget_admits_a_case_only_when_it_fits() -> None:
    now = [100.0]
    budget = Budget(60, clock=lambda: now[0])
    assert budget.allows(60) and not budget.allows(61)
    now[0] = 150.0
    assert budget.spent() == 50 and budget.left() == 10
    assert budget.allows(10) and not budget.allows(11)
    assert Budget(60, clock=lambda: now[0], started=140.0).left() == 50  # counted from when the process began
