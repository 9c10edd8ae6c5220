"""torch.compile of the denoiser, with nothing an ordinary request sends able to recompile it.

What reaches the compiled module is normalised by hooks around it (outside the compiled graph):
- timesteps become float32 tensors: DPM-Solver, DDIM, UniPC and LCM hand the UNet int64 timesteps,
  Euler float32 ones, and either would otherwise get a graph of its own (the UNet's sinusoidal
  embedding computes in float32 anyway: same pixels);
- the batch dimension is marked dynamic, so one graph serves 1..N images with or without
  classifier-free guidance and cross-request batches of any size; a batch of 1 (one image, no
  guidance) is padded to 2 rows and cut back, because dynamo always specialises a dimension of size 1.
Sizes are compiled at warm-up (`DIFFUSION_WARMUP_SIZES`), each with the smallest and the largest batch
(the CPU's convolution picks another backend from 16 rows up, which takes a second graph there).
Every graph is counted: after warm-up each one is a recompile that a request paid for
(`diffusion_torch_compilations_total{phase="serving"}`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import torch
from diffusers import DiffusionPipeline

from worker import metrics
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

SAMPLE_NAMES = ("sample", "hidden_states")  # the latents argument: UNet, transformers


def compile_denoiser(pipe: DiffusionPipeline, settings: WorkerSettings, phase: Callable[[], str]) -> None:
    """Replace the pipeline's UNet/transformer with its compiled form (channels-last, the configured mode)."""
    name = next(n for n in ("unet", "transformer") if hasattr(pipe, n))
    module = getattr(pipe, name)
    module.to(memory_format=torch.channels_last)
    limit = max(8, 4 * len(settings.warmup_sizes) + 4)  # one graph per size, with room for ControlNet variants
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, limit)
    # Inductor with the configured mode, as torch.compile(mode=...) builds it, wrapped to count each graph.
    mode = compile_mode(settings, next(module.parameters()).device)
    log.info("compiling the denoiser", extra={"mode": mode, "model": settings.name})
    inductor = torch._TorchCompileInductorWrapper(mode, None, None)  # type: ignore[no-untyped-call]

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Any:
        now = phase()
        metrics.COMPILATIONS.labels(settings.name, now).inc()
        if now != "warmup":
            log.warning("torch.compile recompiled the denoiser while serving", extra={"model": settings.name})
        # Logged before and after: a compile takes seconds to minutes, and whoever waits for the
        # worker (an orchestrator, a test) can tell a slow compile from a hung process.
        log.info("compiling a denoiser graph", extra={"phase": now, "nodes": len(graph.graph.nodes)})
        started = time.perf_counter()
        compiled = inductor(graph, example_inputs)
        log.info("compiled a denoiser graph", extra={"phase": now, "seconds": round(time.perf_counter() - started, 2)})
        return compiled

    compiled = cast(torch.nn.Module, torch.compile(module, backend=counting_backend, fullgraph=False))
    padded: list[bool] = []
    compiled.register_forward_pre_hook(lambda m, a, k: _normalise(a, k, padded), with_kwargs=True)
    compiled.register_forward_hook(lambda m, a, k, out: _unpad(out, padded), with_kwargs=True)
    setattr(pipe, name, compiled)


def compile_mode(settings: WorkerSettings, device: torch.device) -> str:
    """The torch.compile mode: `auto` is reduce-overhead on CUDA, where replaying CUDA graphs removes the
    kernel-launch gaps that dominate a small batch (SD 1.5 on an H200 at one image: 25.6 ms/step in
    inductor's default mode, 6.9 ms with CUDA graphs, docs/gpu.md), and default elsewhere (no CUDA graphs)."""
    if settings.compile_mode != "auto":
        return settings.compile_mode
    return "reduce-overhead" if device.type == "cuda" else "default"


def _normalise(
    args: tuple[Any, ...], kwargs: dict[str, Any], padded: list[bool]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    sample = next((kwargs[n] for n in SAMPLE_NAMES if n in kwargs), args[0] if args else None)
    if not isinstance(sample, torch.Tensor):
        return args, kwargs
    batch = sample.shape[0]
    args = tuple(_timestep(a, sample) if i == 1 else a for i, a in enumerate(args))
    if "timestep" in kwargs:
        kwargs["timestep"] = _timestep(kwargs["timestep"], sample)
    padded[:] = [batch == 1]
    fix = (lambda x: _mark(_pad(x))) if batch == 1 else _mark
    return _rows(args, batch, fix), _rows(kwargs, batch, fix)


def _timestep(value: Any, sample: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(torch.float32)
    if isinstance(value, int | float):
        return torch.tensor(float(value), dtype=torch.float32, device=sample.device)
    return value


def _rows(value: Any, batch: int, fix: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`fix` applied to every tensor whose first dimension is the batch, through tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return fix(value) if value.ndim > 0 and value.shape[0] == batch else value
    if isinstance(value, tuple | list):
        return type(value)(_rows(v, batch, fix) for v in value)
    if isinstance(value, dict):
        return {k: _rows(v, batch, fix) for k, v in value.items()}
    return value


def _pad(tensor: torch.Tensor) -> torch.Tensor:
    return torch.cat([tensor, tensor])


def _mark(tensor: torch.Tensor) -> torch.Tensor:
    # maybe_: the graph may still specialise a range of it (on the CPU, convolution backends differ below
    # and above 16 rows), which warm-up covers by running the smallest and the largest batch.
    torch._dynamo.maybe_mark_dynamic(tensor, 0)
    return tensor


def _unpad(output: Any, padded: list[bool]) -> Any:
    if not padded or not padded[0]:
        return output
    if isinstance(output, tuple):
        return (output[0][:1], *output[1:])
    output.sample = output.sample[:1]
    return output
