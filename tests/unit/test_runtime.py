"""The device and dtype a worker picks (`DIFFUSION_DEVICE`, `DIFFUSION_DTYPE`)."""

from __future__ import annotations

import pytest
import torch

from worker.compiling import compile_mode
from worker.loading import ModelLoadError, auto_dtype, pick_runtime
from worker.settings import WorkerSettings


@pytest.mark.parametrize(
    ("device_type", "bf16", "expected"),
    [
        ("cuda", True, torch.bfloat16),
        ("cuda", False, torch.float16),
        ("cpu", True, torch.float32),
        ("cpu", False, torch.float32),
    ],
)
def test_auto_dtype_prefers_native_bf16_on_gpus(device_type: str, bf16: bool, expected: torch.dtype) -> None:
    assert auto_dtype(device_type, bf16) == expected


def test_auto_on_the_cpu_is_float32_and_an_explicit_dtype_wins() -> None:
    assert pick_runtime(WorkerSettings(device="cpu")).dtype == torch.float32
    assert pick_runtime(WorkerSettings(device="cpu", dtype="bfloat16")).dtype == torch.bfloat16


def test_float16_on_the_cpu_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="float16"):
        pick_runtime(WorkerSettings(device="cpu", dtype="float16"))


@pytest.mark.parametrize(
    ("configured", "device", "expected"),
    [
        ("auto", "cuda", "reduce-overhead"),
        ("auto", "cpu", "default"),
        ("default", "cuda", "default"),
        ("max-autotune", "cpu", "max-autotune"),
    ],
)
def test_compile_mode_auto_uses_cuda_graphs_only_on_cuda(configured: str, device: str, expected: str) -> None:
    settings = WorkerSettings(device="cpu", compile_mode=configured)
    assert compile_mode(settings, torch.device(device)) == expected
