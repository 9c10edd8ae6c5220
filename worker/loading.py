"""Loading a model: where it runs (device, dtype), diffusers' own loaders, and the facts read off the pipeline."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoPipelineForText2Image, ControlNetModel, DiffusionPipeline

from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model cannot be loaded; the message says what to do."""


@dataclass(frozen=True)
class Runtime:
    """Where and how the pipeline runs."""

    device: torch.device
    dtype: torch.dtype


def auto_dtype(device_type: str, bf16_supported: bool) -> torch.dtype:
    """The dtype `DIFFUSION_DTYPE=auto` picks: bfloat16 on a GPU that computes it natively (float16's speed
    with float32's range, so no overflow to black images), float16 on older GPUs, float32 on the CPU."""
    if device_type != "cuda":
        return torch.float32
    return torch.bfloat16 if bf16_supported else torch.float16


def pick_runtime(settings: WorkerSettings) -> Runtime:
    """CUDA (bf16 where the GPU has it, else fp16) when available, else CPU with fp32; `settings.dtype` overrides."""
    name = settings.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if settings.dtype != "auto":
        dtype = getattr(torch, settings.dtype)
    else:
        # Emulated bf16 (pre-Ampere GPUs) is slower than fp16: only native support counts.
        native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
        dtype = auto_dtype(device.type, native)
    if device.type == "cpu" and settings.cpu_threads:
        torch.set_num_threads(settings.cpu_threads)
    if device.type == "cpu" and dtype == torch.float16:
        raise ModelLoadError("float16 is not supported on CPU; use float32 or bfloat16")
    return Runtime(device, dtype)


def _absent_components(source: str, local_files_only: bool) -> dict[str, None]:
    """Components saved as `[null, null]` in model_index.json, passed as None so optional encoders stay out."""
    path = Path(source) / "model_index.json"
    if not path.is_file():
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(source, "model_index.json", local_files_only=local_files_only))
    index = json.loads(path.read_text())
    return {
        name: None
        for name, value in index.items()
        if isinstance(value, list) and len(value) == 2 and value[0] is None and value[1] is None
    }


def load(settings: WorkerSettings, runtime: Runtime) -> DiffusionPipeline:
    """Load the configured model from disk (or the hub cache) through diffusers' own loaders."""
    source = settings.model_source
    local_only = settings.local_model is not None or not settings.allow_download
    try:
        kwargs: dict[str, Any] = {
            "dtype": runtime.dtype,
            "local_files_only": local_only,
            **_absent_components(source, local_only),
        }
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(source, **kwargs)
        except ValueError:
            pipe = DiffusionPipeline.from_pretrained(source, **kwargs)  # a class AutoPipeline does not map
    except (OSError, ValueError) as exc:
        hint = (
            ""
            if settings.local_model or settings.allow_download
            else " (it is not a local folder nor in the Hugging Face cache; download it first or set "
            "DIFFUSION_ALLOW_DOWNLOAD=true)"
        )
        raise ModelLoadError(f"cannot load model {source!r}{hint}: {exc}") from exc
    pipe.to(runtime.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def denoiser_of(pipe: DiffusionPipeline) -> torch.nn.Module:
    """The network run once per step: the UNet or the transformer."""
    for name in ("unet", "transformer", "prior"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ModelLoadError(f"{type(pipe).__name__} has neither a unet nor a transformer")


def native_size(pipe: DiffusionPipeline) -> tuple[int, int]:
    """Width and height the model was trained at, as the pipeline itself computes its default."""
    sample = getattr(pipe, "default_sample_size", None)
    if sample is None:
        sample = getattr(denoiser_of(pipe).config, "sample_size", 64)
    sample = sample[0] if isinstance(sample, list | tuple) else sample
    side = int(sample or 64) * int(getattr(pipe, "vae_scale_factor", 8))
    return side, side


def load_controlnets(pipe: DiffusionPipeline, settings: WorkerSettings, runtime: Runtime) -> dict[str, Any]:
    """Load the configured ControlNets; keep the ones that form a pipeline with this model."""
    loaded = {}
    for name, source in settings.controlnets.items():
        local = Path(source).exists() or not settings.allow_download
        try:
            model = ControlNetModel.from_pretrained(source, torch_dtype=runtime.dtype, local_files_only=local)
            model.to(runtime.device)
            AutoPipelineForText2Image.from_pipe(pipe, controlnet=model)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ControlNet not usable with this model", extra={"controlnet": name, "reason": str(exc)})
            continue
        loaded[name] = model
    return loaded
