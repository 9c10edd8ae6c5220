"""GPU check: the worker's own code (WarmPipeline, compile_denoiser, Batch) on SD 1.5 and SDXL architectures with
random weights, eager and compiled, within a time budget; figures printed and written as JSON.

`python benchmarks/gpu_check.py --out DIR` on a CUDA machine (benchmarks/gpu_check.sh installs the carried
wheels first: docs/gpu.md). `--smoke` runs the same cases on the CPU with tiny versions of both
architectures (minutes of CPU compilation; with `--no-compile` under a minute, as
tests/worker/test_gpu_check_smoke.py runs it). Cases run in order of value;
one that would not fit in what is left of `--budget-seconds` is skipped with a note, and DIR/gpu_check.json
is rewritten after every case, so a run cut short keeps everything that finished.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import gpu_gap, gpu_measure
from benchmarks.gpu_models import Architecture, architectures, parameters
from benchmarks.gpu_report import Budget, Report
from worker.failures import is_fatal
from worker.loading import Runtime, pick_runtime
from worker.pipeline import WarmPipeline
from worker.settings import WorkerSettings

RECIPES: dict[str, dict[str, Any]] = {
    # diffusers' speed-up guide, one change at a time against the worker's default on CUDA (reduce-overhead).
    "inductor-default": {"mode": "default"},  # no CUDA graphs: kernel launches between every step's kernels
    "fused-qkv-flags": {
        "fuse_qkv": True,
        "inductor": {
            "conv_1x1_as_mm": True,
            "coordinate_descent_tuning": True,
            "coordinate_descent_check_all_directions": True,
            "epilogue_fusion": False,
        },
    },
    "max-autotune-no-cudagraphs": {"mode": "max-autotune-no-cudagraphs"},
}
# Seconds a compile needs, in units of SD 1.5's measured compile (before it is measured: SD 1.5's is
# guessed at 75 s on an H100). SDXL's UNet has 70 transformer blocks against SD 1.5's 16, many of them
# alike (their Triton kernels are compiled once); max-autotune also benchmarks kernel choices.
COMPILE_RATIO = {"sd15": 1.0, "sdxl": 2.2, "inductor-default": 1.0, "fused-qkv-flags": 1.6}
COMPILE_RATIO["max-autotune-no-cudagraphs"] = 3.0
SD15_COMPILE_GUESS = 75.0
# Seconds the other cases take on an H100 (estimates), per model.
NEEDS = {
    "sd15": {"compiled": 15, "recompiles": 15, "idle_gap": 10, "batch_4": 5, "alone": 8, "vae": 5, "eager": 20},
    "sdxl": {"compiled": 35, "recompiles": 30, "idle_gap": 20, "batch_4": 10, "alone": 15, "vae": 8, "eager": 40},
}
# Steps per batch of the idle-gap run: enough that denoising a batch of 8 outlasts PNG-encoding the one before.
GAP_STEPS = {"sd15": 20, "sdxl": 5}
HARD_LIMIT_GRACE = 20  # seconds past the budget before the watchdog ends a case that overran


Need = float | Callable[[], float]
Case = tuple[str, Need, Callable[[], Any], str | None]


@dataclass
class Check:
    """One run of the check: options, where figures go, what is loaded."""

    args: argparse.Namespace
    report: Report
    budget: Budget
    models: dict[str, Architecture]
    warm: dict[str, WarmPipeline] = field(default_factory=dict)

    def settings(self, arch: Architecture, name: str, compile_: bool, mode: str = "") -> WorkerSettings:
        """The worker's settings for this model, as a deployment would give them."""
        return WorkerSettings(
            model_source=f"random-{arch.name}",
            model_name=name,
            device=self.args.device,
            compile=compile_ and not self.args.no_compile,
            compile_mode=mode or self.args.compile_mode,
            warmup_sizes=[f"{arch.side}x{arch.side}"],
            max_batch_images=8,
        )

    def compile_need(self, what: str, then: float = 0.0) -> Callable[[], float]:
        """Seconds a compile (and the `then` seconds of runs that need it) will take, from SD 1.5's measured one."""
        seconds = self.report.data["case_seconds"]
        return lambda: COMPILE_RATIO[what] * seconds.get("sd15.compile", SD15_COMPILE_GUESS) + then

    def case(self, name: str, need: Need, fn: Callable[[], Any], after: str | None = None) -> None:
        """Run one case if what it depends on finished and it fits in the budget; record its figures or error.
        `need`: seconds it takes on an H100 at full scale (nothing at tiny scale), or a function giving them."""
        if after is not None and after not in self.report.done:
            self.report.skip(name, f"needs {after}, which did not finish")
            return
        seconds = (need() if callable(need) else need) if self.args.scale == "full" else 0.0
        if not self.budget.allows(seconds):
            self.report.skip(name, f"{self.budget.left():.0f} s left of the budget, needs about {seconds:.0f} s")
            return
        print(f"[{self.budget.spent():6.1f} s] {name} ...", flush=True)
        self.report.current = name
        started = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:
            if is_fatal(exc):
                raise
            self.report.error(name, exc)
            return
        finally:
            gc.collect()
        self.report.record(name, value, time.perf_counter() - started)
        print(f"[{self.budget.spent():6.1f} s] {name}: {value}", flush=True)


def free_memory() -> None:
    """Drop what nothing references any more (between models)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def warm_pipeline(check: Check, arch: Architecture, name: str, compile_: bool) -> WarmPipeline:
    """Build the architecture on the worker's runtime and wrap it as the worker does (compiling if asked)."""
    settings = check.settings(arch, name, compile_)
    runtime: Runtime = pick_runtime(settings)
    return WarmPipeline(arch.build(runtime.device, runtime.dtype), runtime, settings)


def compile_case(check: Check, arch: Architecture) -> dict[str, Any]:
    """Build, compile and warm (one and eight images): what a compiled worker does before it registers."""
    warm = warm_pipeline(check, arch, arch.name, compile_=True)
    seconds = warm.warm_up()
    check.warm[arch.name] = warm
    return {
        "warmup_seconds": round(seconds, 1),
        "warmup_compilations": gpu_measure.compilations(arch.name, "warmup"),
        "dtype": str(warm.runtime.dtype).removeprefix("torch."),
        "denoiser_parameters_millions": round(parameters(warm.pipe.unet) / 1e6, 1),
        "weights_gib": round(_weight_bytes(warm) / 2**30, 2),
    }


def _weight_bytes(warm: WarmPipeline) -> int:
    modules = [m for m in warm.pipe.components.values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def compiled_runs(check: Check, arch: Architecture, batches: tuple[int, ...]) -> dict[str, Any]:
    """ms/step and images/s of the compiled pipeline at each batch size (and peak memory at the largest)."""
    warm, args, result = check.warm[arch.name], check.args, {}
    for images in batches:
        cuda = torch.cuda.is_available() and args.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        result[f"batch_{images}"] = gpu_measure.timed_runs(warm, arch.side, args.steps, images, args.runs)
        if cuda:
            extra = (torch.cuda.max_memory_allocated() - base) / 2**30
            result[f"batch_{images}"]["peak_activation_gib"] = round(extra, 2)
    return result


def eager_runs(check: Check, arch: Architecture) -> dict[str, Any]:
    """ms/step and images/s without torch.compile at batch 1, 4 and 8 (a separate copy of the model, built after
    the compiled one is released: this is the model's last case)."""
    check.warm.pop(arch.name, None)
    free_memory()
    warm = warm_pipeline(check, arch, f"{arch.name}-eager", compile_=False)
    try:
        warm.warm_up()
        return {
            f"batch_{images}": gpu_measure.timed_runs(warm, arch.side, check.args.eager_steps, images, 1)
            for images in (1, 4, 8)
        }
    finally:
        del warm
        free_memory()


def recipe_case(check: Check, recipe: str) -> dict[str, Any]:
    """SD 1.5 at batch 1, compiled with one recipe of diffusers' speed-up guide."""
    spec, arch = RECIPES[recipe], check.models["sd15"]
    settings = check.settings(arch, f"sd15-{recipe}", compile_=True, mode=spec.get("mode", ""))
    runtime = pick_runtime(settings)
    held: list[Any] = [arch.build(runtime.device, runtime.dtype)]
    if spec.get("fuse_qkv"):
        held[0].fuse_qkv_projections()
    try:
        with torch._inductor.config.patch(spec.get("inductor", {})):
            held.append(WarmPipeline(held[0], runtime, settings))
            seconds = held[1].warm_up()
            figures = gpu_measure.timed_runs(held[1], arch.side, check.args.steps, 1, check.args.runs)
        return {**figures, "warmup_seconds": round(seconds, 1), **spec}
    finally:
        held.clear()  # this model is done with: its memory goes back before the next case
        free_memory()


def plan(check: Check) -> list[Case]:
    """The cases in order of value: (name, seconds needed, what runs, the case it depends on). A compile is only
    started when the compiled runs after it fit too."""
    cases: list[Case] = []
    names = [n for n in ("sd15", "sdxl") if n in check.models]
    for n in names:  # the figures with targets first: compiled batch 1 and 8, recompiles, the idle gap
        a, side, need = check.models[n], check.models[n].side, NEEDS[n]
        cases += [
            (f"{n}.compile", check.compile_need(n, need["compiled"]), lambda a=a: compile_case(check, a), None),
            (f"{n}.compiled", need["compiled"], lambda a=a: compiled_runs(check, a, (1, 8)), f"{n}.compile"),
            (f"{n}.recompiles", need["recompiles"], lambda n=n, s=side: _matrix(check, n, s), f"{n}.compile"),
            (f"{n}.idle_gap", need["idle_gap"], lambda n=n, s=side: _gap(check, n, s), f"{n}.compile"),
        ]
    for n in names:  # then the rest of the table
        a, side, need = check.models[n], check.models[n].side, NEEDS[n]
        cases += [
            (f"{n}.compiled_batch_4", need["batch_4"], lambda a=a: compiled_runs(check, a, (4,)), f"{n}.compile"),
            (f"{n}.batched_vs_alone", need["alone"], lambda n=n, s=side: _alone(check, n, s), f"{n}.compile"),
            (f"{n}.vae_decode", need["vae"], lambda n=n, s=side: _decode(check, n, s), f"{n}.compile"),
            (f"{n}.eager", need["eager"], lambda a=a: eager_runs(check, a), None),
        ]
    for r in check.args.recipes:
        cases.append((f"recipe.{r}", check.compile_need(r, 10), lambda r=r: recipe_case(check, r), None))
    return cases


def _gap(check: Check, name: str, side: int) -> dict[str, Any]:
    steps = check.args.gap_steps or GAP_STEPS[name]
    return gpu_gap.measure_idle_gaps(check.warm[name], side, steps, check.args.gap_batches)


def _matrix(check: Check, name: str, side: int) -> dict[str, Any]:
    return gpu_measure.recompile_matrix(check.warm[name], side)


def _decode(check: Check, name: str, side: int) -> dict[str, Any]:
    return gpu_measure.vae_decode(check.warm[name], side)


def _alone(check: Check, name: str, side: int) -> dict[str, Any]:
    return gpu_measure.batched_vs_alone(check.warm[name], side, check.args.steps)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --smoke sets the CPU defaults."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", choices=["full", "tiny"], default="full")
    parser.add_argument("--budget-seconds", type=float, default=330.0, help="from --started-at")
    parser.add_argument("--started-at", type=float, help="epoch seconds the budget counts from (default: now)")
    parser.add_argument("--steps", type=int, default=20, help="steps of the compiled runs")
    parser.add_argument("--eager-steps", type=int, default=8)
    parser.add_argument("--runs", type=int, default=2, help="generations per compiled figure")
    parser.add_argument("--gap-batches", type=int, default=5)
    parser.add_argument("--gap-steps", type=int, default=0, help="0: per model (GAP_STEPS)")
    parser.add_argument("--models", default="sd15,sdxl")
    parser.add_argument(
        "--compile-mode", default="auto", help="the worker's DIFFUSION_COMPILE_MODE for the compiled cases (auto)"
    )
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated; empty for none")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, few steps, no recipes")
    parser.add_argument(
        "--no-compile", action="store_true", help="serve eager where the check compiles (CPU smoke in seconds)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.device, args.scale, args.steps, args.eager_steps, args.runs, args.recipes = "cpu", "tiny", 3, 2, 1, ""
        args.gap_batches, args.gap_steps = 3, 2
    args.models = [m for m in args.models.split(",") if m]
    args.recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in args.recipes if r not in RECIPES] + [m for m in args.models if m not in ("sd15", "sdxl")]
    if unknown:
        parser.error(f"unknown recipe or model: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit 0 when every case ran or was skipped for time, 1 when one failed."""
    args = parse(argv)
    budget = Budget(args.budget_seconds, started=args.started_at)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # diffusers' deprecation notices print whole scheduler configs for every ddim job of the matrix.
    warnings.filterwarnings("ignore", category=FutureWarning)
    diffusers.utils.logging.set_verbosity_error()
    logging.getLogger("worker.compiling").setLevel(logging.INFO)
    torch._dynamo.config.cache_size_limit = 64  # several compiled UNets share one forward here; a worker has one
    report = Report(args.out / "gpu_check.json", args)
    print(report.describe_device(), flush=True)
    models = {n: a for n, a in architectures(args.scale).items() if n in args.models}
    check = Check(args, report, budget, models)
    watchdog = threading.Timer(max(budget.left(), 0) + HARD_LIMIT_GRACE, _overran, (report, budget))
    watchdog.daemon = True
    watchdog.start()
    for name, need, fn, after in plan(check):
        check.case(name, need, fn, after)
    watchdog.cancel()
    for name in models:  # every case after the matrix ran on the same compiled pipeline: still none?
        if f"{name}.recompiles" in report.done:
            at_end = gpu_measure.compilations(name, "serving")
            report.data["results"][f"{name}.recompiles"]["serving_compilations_at_end"] = at_end
    _finish(report, budget)
    return 1 if report.data["errors"] else 0


def _finish(report: Report, budget: Budget) -> None:
    report.data["spent_seconds"] = round(budget.spent(), 1)
    report.write()
    print(report.summary(), flush=True)


def _overran(report: Report, budget: Budget) -> None:
    """A case ran past the budget and its grace: record which, print what finished, end the process now."""
    report.skip(str(report.current), f"cut at the hard limit, {budget.spent():.0f} s in")
    _finish(report, budget)
    os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
