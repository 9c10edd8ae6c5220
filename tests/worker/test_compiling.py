"""The denoiser's compile wrapper on a small module: real inductor, seconds instead of the UNet's minutes.

What it proves about any denoiser: batches of any size share one graph (the dynamic batch dimension,
a batch of one padded to two rows and cut back), int64 and float timesteps share it, and a graph
compiled after warm-up is counted as a serving recompile.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from worker.compiling import compile_denoiser
from worker.metrics import REGISTRY
from worker.settings import WorkerSettings

MODEL = "compile-wrapper-test"


class Denoiser(torch.nn.Module):
    """The calling convention of a diffusers UNet: (sample, timestep, encoder_hidden_states) -> .sample."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor) -> Any:
        context = self.proj(encoder_hidden_states).mean(1)[:, :, None, None]
        return SimpleNamespace(sample=self.conv(sample) + context + timestep.float().reshape(-1, 1, 1, 1) / 1000)


def compilations(phase: str) -> float:
    return REGISTRY.get_sample_value("diffusion_torch_compilations_total", {"model": MODEL, "phase": phase}) or 0.0


def test_batches_and_timestep_dtypes_share_a_graph_and_a_new_size_is_a_counted_recompile() -> None:
    torch.manual_seed(0)
    eager = Denoiser().eval()
    pipe = SimpleNamespace(unet=Denoiser().eval())
    pipe.unet.load_state_dict(eager.state_dict())
    phase = ["warmup"]
    compile_denoiser(pipe, WorkerSettings(model_name=MODEL, device="cpu", compile=True), lambda: phase[0])  # type: ignore[arg-type]

    def call(batch: int, side: int, timestep: torch.Tensor) -> None:
        sample, text = torch.randn(batch, 4, side, side), torch.randn(batch, 3, 8)
        with torch.no_grad():
            got = pipe.unet(sample, timestep, encoder_hidden_states=text).sample
            want = eager(sample, timestep, encoder_hidden_states=text).sample
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-5), "the compiled module computes the same"

    for batch in (1, 8):  # what warm-up runs: one image and the largest batch
        call(batch, 8, torch.tensor(999.0))
    warm = compilations("warmup")
    assert warm >= 1
    phase[0] = "serving"
    for batch in (1, 2, 3, 5, 8):
        call(batch, 8, torch.tensor(981, dtype=torch.int64))  # DPM-Solver, DDIM, UniPC and LCM send int64
        call(batch, 8, torch.tensor(981.5))
    assert compilations("serving") == 0, "batch sizes 1..8 and int64 or float timesteps reuse the warm-up graphs"
    call(2, 12, torch.tensor(500.0))  # a size warm-up did not see
    assert compilations("serving") >= 1 and compilations("warmup") == warm, "a recompile while serving is counted"
