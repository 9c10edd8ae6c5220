"""torch.compile of the denoiser, counting every graph it builds: after warm-up each one is a recompile
that a request paid for (`diffusion_torch_compilations_total{phase="serving"}`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline

from worker import metrics
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def compile_denoiser(pipe: DiffusionPipeline, settings: WorkerSettings, phase: Callable[[], str]) -> None:
    """Replace the pipeline's UNet/transformer with its compiled form (channels-last, the configured mode)."""
    name = next(n for n in ("unet", "transformer") if hasattr(pipe, n))
    module = getattr(pipe, name)
    module.to(memory_format=torch.channels_last)
    # Inductor with the configured mode, as torch.compile(mode=...) builds it, wrapped to count each graph.
    inductor = torch._TorchCompileInductorWrapper(settings.compile_mode, None, None)  # type: ignore[no-untyped-call]

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

    setattr(pipe, name, torch.compile(module, backend=counting_backend, fullgraph=False))
