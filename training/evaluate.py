"""Measure the quality and speed of the saved default pipeline.

    python -m training.evaluate [--model worker/models/shapes] [--json out.json]

Loads the pipeline exactly as the service does
(DiffusionPipeline.from_pretrained(path, local_files_only=True)) and judges
its images with tests/judge.py (nearest palette colour per pixel; shape from
the foreground mask).  Prompts come from the held-out combinations of
training/dataset.py, each with fixed seeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .dataset import HELD_OUT_COMBOS, caption_full

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "worker" / "models" / "shapes"
DEFAULT_GUIDANCE = 5.0
DEFAULT_STEPS = 20


def load_judge():
    if "shapes_judge" in sys.modules:
        return sys.modules["shapes_judge"]
    spec = importlib.util.spec_from_file_location("shapes_judge", ROOT / "tests" / "judge.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["shapes_judge"] = mod
    spec.loader.exec_module(mod)
    return mod


def heldout_prompts(seeds_per_combo: int = 3, seed0: int = 1000) -> list[tuple[str, int]]:
    """(prompt, seed) pairs: every held-out combination with fixed seeds."""
    out = []
    for k in range(seeds_per_combo):
        for i, c in enumerate(HELD_OUT_COMBOS):
            out.append((caption_full(*c), seed0 + 100 * k + i))
    return out


def trained_prompts(n: int = 48, seed: int = 77) -> list[tuple[str, int]]:
    """(prompt, seed) pairs from combinations seen in training (validation use)."""
    from .dataset import TRAIN_COMBOS

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(TRAIN_COMBOS), n, replace=False)
    return [(caption_full(*TRAIN_COMBOS[i]), 2000 + k) for k, i in enumerate(idx)]


def guidance_sweep(pipe, scales=(1.0, 2.0, 3.0, 4.0, 5.0, 7.5), steps=DEFAULT_STEPS):
    """Choose the default guidance on trained combinations, not on the held-out set."""
    pairs = trained_prompts()
    out = {}
    for g in scales:
        out[g] = run_prompts(pipe, pairs, steps=steps, guidance=g)
        print(f"[sweep on {len(pairs)} trained-combination prompts, guidance {g}] {out[g]}", flush=True)
    return out


def generate(pipe, prompts, seeds, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE, negative=None, batch=24):
    images = []
    for i in range(0, len(prompts), batch):
        ps = prompts[i : i + batch]
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds[i : i + batch]]
        neg = None if negative is None else [negative] * len(ps)
        out = pipe(
            ps,
            negative_prompt=neg,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="np",
        )
        images.extend(list(out.images))
    return images


def score(images, prompts) -> dict:
    judge = load_judge()
    n = len(prompts)
    color = shape = both = fg_ok = bg_ok = 0
    for img, p in zip(images, prompts, strict=True):
        fg, sh, bg = judge.parse_prompt(p)
        v = judge.judge(img)
        c = v.fg == fg and v.bg == bg
        fg_ok += v.fg == fg
        bg_ok += v.bg == bg
        color += c
        shape += v.shape == sh
        both += c and v.shape == sh
    return {
        "n": n,
        "color_acc": color / n,
        "fg_acc": fg_ok / n,
        "bg_acc": bg_ok / n,
        "shape_acc": shape / n,
        "all_acc": both / n,
    }


def run_prompts(pipe, pairs, **kw) -> dict:
    prompts = [p for p, _ in pairs]
    seeds = [s for _, s in pairs]
    return score(generate(pipe, prompts, seeds, **kw), prompts)


def negative_check(pipe, n_seeds=20, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE) -> dict:
    judge = load_judge()
    prompt = "a circle on a white background"
    seeds = list(range(500, 500 + n_seeds))
    out = {}
    for neg in (None, "red"):
        imgs = generate(pipe, [prompt] * n_seeds, seeds, steps=steps, guidance=guidance, negative=neg)
        fgs = [str(judge.judge(im).fg) for im in imgs]
        out["with_negative_red" if neg else "without_negative"] = {
            "red_foregrounds": sum(f == "red" for f in fgs),
            "white_background": sum(judge.judge(im).bg == "white" for im in imgs),
            "foregrounds": {c: fgs.count(c) for c in sorted(set(fgs))},
        }
    return out


def benchmark(pipe, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE, threads=2, reps=10) -> dict:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        pipe.set_progress_bar_config(disable=True)
        kw = dict(num_inference_steps=steps, guidance_scale=guidance)
        for _ in range(3):
            pipe("a red circle on a blue background", **kw)
        ts = []
        for i in range(reps):
            t = time.perf_counter()
            pipe("a red circle on a blue background", generator=torch.Generator().manual_seed(i), **kw)
            ts.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return {
        "threads": threads,
        "steps": steps,
        "median_s": float(np.median(ts)),
        "min_s": float(np.min(ts)),
        "max_s": float(np.max(ts)),
    }


def load_pipeline(path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--seeds-per-combo", type=int, default=3)
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--threads", type=int, default=1, help="threads for quality runs")
    p.add_argument("--bench-threads", type=int, default=2)
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--sweep", action="store_true", help="only run the guidance sweep on trained combinations")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    t0 = time.time()
    pipe = load_pipeline(a.model)
    if a.sweep:
        guidance_sweep(pipe, steps=a.steps)
        return
    res = {
        "model": a.model,
        "scheduler": type(pipe.scheduler).__name__,
        "guidance": a.guidance,
        "steps": a.steps,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s) for quality runs",
    }
    pairs = heldout_prompts(a.seeds_per_combo)
    print(
        f"{len(pairs)} held-out prompts ({len(HELD_OUT_COMBOS)} combinations x "
        f"{a.seeds_per_combo} seeds), {a.steps} steps",
        flush=True,
    )

    res["default"] = run_prompts(pipe, pairs, steps=a.steps, guidance=a.guidance)
    print(f"[default guidance {a.guidance}, {res['scheduler']}] {res['default']}", flush=True)
    res["guidance_1"] = run_prompts(pipe, pairs, steps=a.steps, guidance=1.0)
    print(f"[guidance 1.0] {res['guidance_1']}", flush=True)

    base_cfg = pipe.scheduler.config
    for name, cls in (("euler", EulerDiscreteScheduler), ("dpmsolver++", DPMSolverMultistepScheduler)):
        pipe.scheduler = cls.from_config(base_cfg)
        res[name] = run_prompts(pipe, pairs, steps=20, guidance=a.guidance)
        print(f"[{name}, 20 steps] {res[name]}", flush=True)
    pipe.scheduler = (
        DPMSolverMultistepScheduler.from_config(base_cfg)
        if res["scheduler"] == "DPMSolverMultistepScheduler"
        else type(pipe.scheduler).from_config(base_cfg)
    )

    res["negative_prompt"] = negative_check(pipe, steps=a.steps, guidance=a.guidance)
    print(f"[negative prompt 'red' on 'a circle on a white background', 20 seeds] {res['negative_prompt']}", flush=True)

    res["timing"] = benchmark(pipe, steps=20, guidance=a.guidance, threads=a.bench_threads)
    print(f"[timing, warm, 20 steps, one image, native size, {a.bench_threads} threads] {res['timing']}", flush=True)
    res["timing_1_thread"] = benchmark(pipe, steps=20, guidance=a.guidance, threads=1)
    print(f"[timing, warm, 20 steps, one image, native size, 1 thread] {res['timing_1_thread']}", flush=True)
    res["load_average_after"] = os.getloadavg()
    res["eval_minutes"] = (time.time() - t0) / 60

    d, g1 = res["default"], res["guidance_1"]
    print("\nSUMMARY")
    print(f"  colour accuracy (fg and bg right): {d['color_acc']:.1%}   target >= 90%")
    print(f"  shape accuracy:                    {d['shape_acc']:.1%}   target >= 80%")
    print(f"  all three right:                   {d['all_acc']:.1%}")
    print(
        f"  guidance 1.0: colour {g1['color_acc']:.1%}, shape {g1['shape_acc']:.1%} "
        f"(default {a.guidance}: {d['color_acc']:.1%}, {d['shape_acc']:.1%})"
    )
    print(
        f"  Euler vs DPM-Solver++ (20 steps) colour {res['euler']['color_acc']:.1%} vs "
        f"{res['dpmsolver++']['color_acc']:.1%}; all {res['euler']['all_acc']:.1%} vs "
        f"{res['dpmsolver++']['all_acc']:.1%}"
    )
    neg = res["negative_prompt"]
    print(
        f"  negative prompt 'red': {neg['with_negative_red']['red_foregrounds']}/20 red "
        f"foregrounds (without it: {neg['without_negative']['red_foregrounds']}/20)"
    )
    print(
        f"  warm 20-step image: median {res['timing']['median_s']:.3f} s "
        f"({a.bench_threads} threads), {res['timing_1_thread']['median_s']:.3f} s (1 thread)"
        f"   target <= 0.3 s; load average {res['load_average_after'][0]:.2f}"
    )
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
