"""A compiled worker (DIFFUSION_COMPILE=true) serving LoRA requests through the running service."""

from __future__ import annotations

import re

import httpx

from tests.conftest import Stack
from tests.helpers import run_job

STACK_ENV = {"DIFFUSION_COMPILE": "true", "DIFFUSION_LORA_SLOTS": "2"}
STACK_MODELS = ("tiny-sd",)
STACK_LORAS = "hotswap_loras"  # the in-process compiled tests' folder: the same graphs, compiled once
BASE = {"prompt": "a red circle", "num_inference_steps": 4, "seed": 12}


def compilations(stack: Stack, phase: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{stack.workers['tiny-sd'].port}/metrics").text
    found = re.search(rf'^diffusion_torch_compilations_total{{model="tiny-sd",phase="{phase}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_lora_switches_on_a_compiled_worker_do_not_recompile(stack: Stack) -> None:
    model = next(m for m in httpx.get(f"{stack.base}/v1/models").json()["data"] if m["id"] == "tiny-sd")
    assert model["max_loras"] == 2
    assert [lora["name"] for lora in model["loras"]] == ["sd-a", "sd-b", "sd-qk", "sd-r8", "sd-te"], "those that fit"
    assert compilations(stack, "warmup") >= 1
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
    assert compilations(stack, "serving") == 0
