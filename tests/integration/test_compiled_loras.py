"""LoRA adapters on a torch.compile'd denoiser: switched by hot-swapping, never recompiling, same pictures as eager.

Real inductor compilation on the CPU and real peft adapters: first through the running service (a compiled
worker process), then in-process against eager named adapters. Both compile the tiny UNet with the same
adapter slots, so they compile the same graphs: the worker process compiles them (a minute and a half on two
cores with an empty cache) and the in-process pipeline, in the same pytest process after it (one module, one
unit of work for pytest-xdist), loads them from inductor's cache in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from contract.jobs import LoraSpec
from tests.conftest import Stack
from tests.helpers import generate, params, run_job, warm
from worker.hotswap import HotswapLoras
from worker.loras import LoraError
from worker.metrics import REGISTRY
from worker.pipeline import WarmPipeline

STACK_ENV = {"DIFFUSION_COMPILE": "true", "DIFFUSION_LORA_SLOTS": "2"}
STACK_MODELS = ("tiny-sd",)
STACK_LORAS = "hotswap_loras"  # the in-process tests' folder: the same slots, the same graphs
BASE = {"prompt": "a red circle", "num_inference_steps": 4, "seed": 12}


def worker_compilations(stack: Stack, phase: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.workers['tiny-sd'].port}/metrics").text
    found = re.search(rf'^diffusion_torch_compilations_total{{model="tiny-sd",phase="{phase}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_lora_switches_on_a_compiled_worker_do_not_recompile(stack: Stack) -> None:
    model = next(m for m in httpx.get(f"{stack.base}/v1/models").json()["data"] if m["id"] == "tiny-sd")
    assert model["max_loras"] == 2
    assert [lora["name"] for lora in model["loras"]] == ["sd-a", "sd-b", "sd-qk", "sd-r8", "sd-te"], "those that fit"
    assert worker_compilations(stack, "warmup") >= 1
    with stack.client() as client:
        before = client.get(run_job(client, BASE)["images"][0]["url"]).content
        urls = [
            run_job(client, {**BASE, "loras": loras})["images"][0]["url"]
            for loras in (
                [{"name": "sd-a", "scale": 1.0}],
                [{"name": "sd-b", "scale": 0.5}],
                [{"name": "sd-a", "scale": 0.8}, {"name": "sd-b", "scale": 1.0}],
            )
        ]
        with_lora = [client.get(url).content for url in urls]
        after = client.get(run_job(client, BASE)["images"][0]["url"]).content
    assert before == after and before not in with_lora and len(set(with_lora)) == 3
    assert worker_compilations(stack, "serving") == 0


MODEL = "hotswap-test"


@pytest.fixture(scope="module")
def compiled(tiny_sd: Path, hotswap_loras: Path) -> WarmPipeline:
    pipeline = warm(tiny_sd, compile=True, lora_dir=hotswap_loras, lora_slots=2, model_name=MODEL, cpu_threads=1)
    pipeline.warm_up()
    return pipeline


def compilations(phase: str) -> float:
    return REGISTRY.get_sample_value("diffusion_torch_compilations_total", {"model": MODEL, "phase": phase}) or 0.0


def run(pipeline: WarmPipeline, loras: list[dict[str, Any]]) -> np.ndarray:
    return generate(pipeline, params(seed=21, num_inference_steps=4, loras=loras))[0].astype(int)


COMBINATIONS: list[list[dict[str, Any]]] = [
    [],
    [{"name": "sd-a", "scale": 1.0}],
    [{"name": "sd-a", "scale": 0.4}],
    [{"name": "sd-r8", "scale": 1.0}],
    [{"name": "sd-qk", "scale": 1.0}, {"name": "sd-b", "scale": 0.7}],
    [{"name": "sd-b", "scale": 0.7}],
    [{"name": "sd-a", "scale": -1.0}, {"name": "sd-r8", "scale": 0.5}],
    [{"name": "sd-te", "scale": 1.0}],
    [{"name": "sd-te", "scale": 0.5}, {"name": "sd-b", "scale": 1.0}],
    [],
]


def test_fitting_adapters_and_slots_are_published(compiled: WarmPipeline) -> None:
    assert isinstance(compiled.loras, HotswapLoras)
    # sd-ff targets layers the widest adapter does not; sd3-a is for another architecture.
    assert sorted(compiled.loras.available) == ["sd-a", "sd-b", "sd-qk", "sd-r8", "sd-te"]
    assert compiled.loras.max_per_job == 2
    with pytest.raises(LoraError, match="at most 2"):
        compiled.loras.activate([LoraSpec(name=n) for n in ("sd-a", "sd-b", "sd-r8")])
    with pytest.raises(LoraError, match="does not fit"):
        compiled.loras.activate([LoraSpec(name="sd-ff")])


def test_switching_adapters_never_recompiles_and_matches_eager(
    compiled: WarmPipeline, tiny_sd: Path, hotswap_loras: Path
) -> None:
    assert compilations("warmup") >= 1
    outputs = [run(compiled, loras) for loras in COMBINATIONS]
    assert compilations("serving") == 0, "a LoRA switch or scale change recompiled the denoiser"

    base, a_full, a_weak, r8, qk_b, b_only, mixed, te, te_b, after = outputs
    assert np.array_equal(base, after), "no adapter after adapter jobs: the base model, bit for bit"
    assert np.abs(a_full - base).max() > 20, "the adapter changes the picture"
    assert np.abs(a_full - a_weak).max() > 10, "its scale matters"
    assert np.abs(qk_b - b_only).max() > 2, "a second adapter in the other slot adds to it (q/k only: weak)"
    assert np.abs(r8 - a_full).max() > 10 and np.abs(mixed - a_full).max() > 10
    assert np.abs(te - base).max() > 10 and np.abs(te_b - b_only).max() > 10

    # Eager named adapters are the reference: hot-swapping (padded ranks, slot scalings) must agree.
    eager = warm(tiny_sd, lora_dir=hotswap_loras, cpu_threads=1)
    for loras, got in zip(COMBINATIONS, outputs, strict=True):
        reference = run(eager, loras)
        assert np.abs(got - reference).max() <= 2, f"compiled and eager disagree for {loras}"


def test_requests_with_more_images_do_not_recompile(compiled: WarmPipeline) -> None:
    before = compilations("serving")
    for count in (3, 1, 4):  # warm-up ran 1 and 2 images: the batch dimension is dynamic
        assert len(generate(compiled, params(num_images=count))) == count
    assert compilations("serving") == before
