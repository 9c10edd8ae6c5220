"""Stable Diffusion 1.5 and SDXL architectures with random weights, built in memory from their published
configurations (nothing is downloaded), for benchmarks/gpu_check.py.

`full` is the real architecture: SD 1.5's UNet (860M parameters), KL VAE and 12-layer CLIP text
encoder at 512², SDXL's UNet (2.6B: blocks 320/640/1280, transformer depths 1/2/10, cross-attention
2048, "text_time" conditioning), its two CLIP text encoders (ViT-L and the bigG projection model) and
VAE at 1024². `tiny` keeps every block type, conditioning path and pipeline class with a few channels
(16 px), so the CPU smoke run goes through the same pipelines and the same code as the GPU run.
Tokenizers are character-level (`worker.tiny.build_tokenizer`): no vocabulary to download.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from worker.tiny import build_tokenizer

# The published scheduler settings of both models (SD 1.5 ships PNDM; requests pick their own anyway).
SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}

SD15_UNET = {
    "full": {
        "sample_size": 64,
        "block_out_channels": (320, 640, 1280, 1280),
        "layers_per_block": 2,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    },
    "tiny": {
        "sample_size": 8,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    },
}
SDXL_UNET = {
    "full": {
        "sample_size": 128,
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "transformer_layers_per_block": (1, 2, 10),
        "attention_head_dim": (5, 10, 20),
        "cross_attention_dim": 2048,
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,  # 6 size/crop ids x 256 + the pooled 1280
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    },
    "tiny": {  # diffusers' own SDXL fast-test UNet
        "sample_size": 8,
        "block_out_channels": (32, 64),
        "layers_per_block": 2,
        "transformer_layers_per_block": (1, 2),
        "attention_head_dim": (2, 4),
        "cross_attention_dim": 64,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,  # 6 x 8 + the pooled 32
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "norm_num_groups": 1,
    },
}
VAE = {
    "full": {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2},
    "tiny": {"block_out_channels": (32, 64), "layers_per_block": 1},
}
# CLIP ViT-L/14's text tower (SD 1.5, SDXL's first encoder) and OpenCLIP bigG's (SDXL's second).
CLIP_L = {
    "full": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
    "tiny": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4},
}
CLIP_BIG_G = {
    "full": {
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "hidden_act": "gelu",
        "projection_dim": 1280,
    },
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "hidden_act": "gelu",
        "projection_dim": 32,
    },
}
REAL_VOCAB = 49408
TINY_SIDE = 16  # pixels; latents of 8² (the tiny VAE halves each side)


@dataclass(frozen=True)
class Architecture:
    """A model family to measure: its name, native image side and how to build it."""

    name: str
    side: int
    build: Callable[[torch.device, torch.dtype], DiffusionPipeline]


def architectures(scale: str) -> dict[str, Architecture]:
    """SD 1.5 and SDXL at `scale` (`full` or `tiny`)."""
    tiny = scale == "tiny"
    return {
        "sd15": Architecture("sd15", TINY_SIDE if tiny else 512, lambda d, t: build_sd15(scale, d, t)),
        "sdxl": Architecture("sdxl", TINY_SIDE if tiny else 1024, lambda d, t: build_sdxl(scale, d, t)),
    }


def _tokenizer() -> Any:
    with tempfile.TemporaryDirectory() as folder:
        return build_tokenizer(Path(folder))


def _text_config(spec: dict[str, Any], tokenizer: Any, scale: str) -> CLIPTextConfig:
    ids = len(tokenizer)
    return CLIPTextConfig(
        vocab_size=REAL_VOCAB if scale == "full" else ids,
        max_position_embeddings=77,
        bos_token_id=ids - 2,
        eos_token_id=ids - 1,
        pad_token_id=ids - 1,
        **{"projection_dim": spec["hidden_size"], **spec},
    )


def _vae(scale: str, side: int, **extra: Any) -> AutoencoderKL:
    levels = len(VAE[scale]["block_out_channels"])
    return AutoencoderKL(
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        sample_size=side,
        norm_num_groups=32,
        **VAE[scale],
        **extra,
    )


def _placed(build: Callable[[], DiffusionPipeline], device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    # Built directly on the device (random init there takes a second even for SDXL's 2.6B parameters),
    # then cast. The scheduler is made outside: its tables belong on the CPU, as from_pretrained puts them.
    torch.manual_seed(0)
    with device:
        pipe = build()
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_sd15(scale: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """Stable Diffusion 1.5's architecture with random weights."""
    tokenizer, scheduler = _tokenizer(), EulerDiscreteScheduler(**SCHEDULER)
    side = TINY_SIDE if scale == "tiny" else 512

    def build() -> DiffusionPipeline:
        return StableDiffusionPipeline(
            unet=UNet2DConditionModel(in_channels=4, out_channels=4, **SD15_UNET[scale]),
            vae=_vae(scale, side),
            text_encoder=CLIPTextModel(_text_config(CLIP_L[scale], tokenizer, scale)),
            tokenizer=tokenizer,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    return _placed(build, device, dtype)


def build_sdxl(scale: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    """SDXL base's architecture with random weights (no refiner, no watermarker)."""
    tokenizer, scheduler = _tokenizer(), EulerDiscreteScheduler(**SCHEDULER, timestep_spacing="leading")
    side = TINY_SIDE if scale == "tiny" else 1024

    def build() -> DiffusionPipeline:
        unet = UNet2DConditionModel(
            in_channels=4,
            out_channels=4,
            addition_embed_type="text_time",
            use_linear_projection=True,
            **SDXL_UNET[scale],
        )
        return StableDiffusionXLPipeline(
            unet=unet,
            vae=_vae(scale, side, scaling_factor=0.13025, force_upcast=True),
            text_encoder=CLIPTextModel(_text_config(CLIP_L[scale], tokenizer, scale)),
            text_encoder_2=CLIPTextModelWithProjection(_text_config(CLIP_BIG_G[scale], tokenizer, scale)),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            scheduler=scheduler,
            force_zeros_for_empty_prompt=True,
            add_watermarker=False,
        )

    return _placed(build, device, dtype)


def parameters(module: torch.nn.Module) -> int:
    """Parameter count of a module (or of a compiled module's original)."""
    return sum(p.numel() for p in getattr(module, "_orig_mod", module).parameters())
