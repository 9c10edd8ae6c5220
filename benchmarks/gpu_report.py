"""The GPU check's bookkeeping: its time budget, the JSON it keeps rewriting, the targets and the printed summary."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# Issue 13's targets on an H100 (full scale): (figure, comparison, bound).
TARGETS = [
    ("sd15 compiled batch 1 ms/step", "<=", 9.5),
    ("sdxl compiled batch 1 ms/step", "<=", 45.0),
    ("sd15 images/s batch 8 / batch 1", ">=", 1.7),
    ("sdxl images/s batch 8 / batch 1", ">=", 1.7),
    ("sd15 idle gap median ms", "<=", 5.0),
    ("sdxl idle gap median ms", "<=", 5.0),
    ("sd15 serving recompiles", "<=", 0),
    ("sdxl serving recompiles", "<=", 0),
]


class Budget:
    """Seconds left for the check; a case runs only if its estimate fits."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time, started: float | None = None) -> None:
        self.seconds, self.clock = seconds, clock
        self.started = clock() if started is None else started  # e.g. when the process began, imports included

    def spent(self) -> float:
        """Seconds since the check began."""
        return self.clock() - self.started

    def left(self) -> float:
        """Seconds before the budget ends."""
        return self.seconds - self.spent()

    def allows(self, need: float) -> bool:
        """Whether a case that needs `need` seconds fits in what is left."""
        return self.left() >= need


class Report:
    """Figures as cases finish, rewritten to `path` after every change."""

    def __init__(self, path: Path, args: argparse.Namespace) -> None:
        self.path = path
        self.done: set[str] = set()
        self.current: str | None = None  # the case running now
        self._lock = threading.Lock()  # the watchdog thread may write while the main thread does
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        self.data: dict[str, Any] = {
            "device": {},
            "options": options,
            "results": {},
            "case_seconds": {},
            "skipped": [],
            "errors": [],
            "targets": [],
        }
        path.parent.mkdir(parents=True, exist_ok=True)

    def describe_device(self) -> str:
        """Record and return the machine: GPU, capability, versions, the dtype the worker picks."""
        import diffusers
        import transformers

        device = self.data["options"]["device"]
        info: dict[str, Any] = {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "cpu_count": os.cpu_count(),
        }
        if device.startswith("cuda"):
            props = torch.cuda.get_device_properties(device)
            info |= {
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "memory_gib": round(props.total_memory / 2**30, 1),
                "bf16_native": torch.cuda.is_bf16_supported(including_emulation=False),
            }
        else:
            info["name"] = f"cpu ({platform.processor() or platform.machine()})"
        self.data["device"] = info
        self.write()
        return "device: " + ", ".join(f"{k} {v}" for k, v in info.items())

    def record(self, case: str, value: Any, seconds: float) -> None:
        """A case finished with these figures."""
        self.data["results"][case] = value
        self.data["case_seconds"][case] = round(seconds, 1)
        self.done.add(case)
        self.write()

    def skip(self, case: str, reason: str) -> None:
        """A case did not run, and why."""
        self.data["skipped"].append({"case": case, "reason": reason})
        print(f"skipped {case}: {reason}", flush=True)
        self.write()

    def error(self, case: str, exc: BaseException) -> None:
        """A case failed; the check goes on with the others."""
        lines = traceback.format_exception(exc)
        self.data["errors"].append({"case": case, "error": f"{type(exc).__name__}: {exc}", "trace": lines[-6:]})
        print(f"FAILED {case}: {''.join(lines)}", file=sys.stderr, flush=True)
        self.write()

    def write(self) -> None:
        """Judge the targets and rewrite the JSON file (atomically: a run killed mid-write leaves the previous one)."""
        with self._lock:
            self.data["targets"] = targets(self.data["results"], self.data["options"]["scale"])
            partial = self.path.with_suffix(".partial")
            partial.write_text(json.dumps(self.data, indent=2, default=str))
            partial.replace(self.path)

    def summary(self) -> str:
        """The figures as a short table, printed last."""
        results, lines = self.data["results"], [f"== GPU check on {self.data['device'].get('name')}"]
        lines.append(f"{'case':<28} {'ms/step':>9} {'p90':>9} {'images/s':>9} {'steps':>5}")
        for case, value in results.items():
            for batch, figures in sorted(value.items()) if isinstance(value, dict) else []:
                if isinstance(figures, dict) and "ms_per_step" in figures:
                    lines.append(
                        f"{case + ' ' + batch:<28} {figures['ms_per_step']:>9.2f} {figures['ms_per_step_p90']:>9.2f}"
                        f" {figures['images_per_s']:>9.2f} {figures['steps']:>5}"
                    )
            if isinstance(value, dict) and "ms_per_step" in value:
                lines.append(f"{case:<28} {value['ms_per_step']:>9.2f} {value['ms_per_step_p90']:>9.2f}")
        for case in ("compile", "recompiles", "idle_gap", "batched_vs_alone", "vae_decode"):
            for name, value in results.items():
                if name.endswith("." + case):
                    shown = {k: v for k, v in value.items() if not isinstance(v, list) or len(v) <= 8}
                    lines.append(f"{name}: {json.dumps(shown)}")
        for target in self.data["targets"]:
            lines.append(f"target {target['figure']} {target['comparison']} {target['bound']}: {target['verdict']}")
        lines += [f"skipped {s['case']}: {s['reason']}" for s in self.data["skipped"]]
        lines += [f"ERROR {e['case']}: {e['error']}" for e in self.data["errors"]]
        lines.append(f"spent {self.data.get('spent_seconds')} s; figures in {self.path}")
        return "\n".join(lines)


def _figure(results: dict[str, Any], figure: str) -> float | None:
    model, what = figure.split(" ", 1)
    try:
        if what == "compiled batch 1 ms/step":
            return float(results[f"{model}.compiled"]["batch_1"]["ms_per_step"])
        if what == "images/s batch 8 / batch 1":
            runs = results[f"{model}.compiled"]
            return round(runs["batch_8"]["images_per_s"] / runs["batch_1"]["images_per_s"], 3)
        if what == "idle gap median ms":
            return float(results[f"{model}.idle_gap"]["median_ms"])
        if what == "serving recompiles":
            matrix = results[f"{model}.recompiles"]
            return float(max(matrix["serving_compilations_total"], matrix.get("serving_compilations_at_end", 0)))
    except KeyError:
        return None
    raise ValueError(figure)


def targets(results: dict[str, Any], scale: str) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (only judged at full scale)."""
    checked = []
    for figure, comparison, bound in TARGETS:
        value = _figure(results, figure)
        met = None if value is None else (value <= bound if comparison == "<=" else value >= bound)
        verdict = "not measured" if value is None else f"{value} {'met' if met else 'MISSED'}"
        if scale != "full" and "recompiles" not in figure:
            met, verdict = None, f"{value} (tiny models: not judged)"
        checked.append({"figure": figure, "comparison": comparison, "bound": bound, "value": value, "met": met})
        checked[-1]["verdict"] = verdict
    return checked
