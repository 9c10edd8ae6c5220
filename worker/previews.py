"""Latent previews: a rough picture of the current latents every few steps, with no VAE decode."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# Linear map from Stable Diffusion 1.x/2.x latents to RGB: a cheap preview, no VAE decode.
SD_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def latent_preview(latents: Any, row: int = 0, max_side: int = 128) -> np.ndarray | None:
    """A rough RGB picture of one row's latents (HxWx3 uint8), or None for packed latents."""
    if latents is None or latents.ndim != 4:
        return None
    first = latents[row].float().cpu()
    if first.shape[0] == len(SD_LATENT_RGB):
        rgb = torch.einsum("chw,cr->hwr", first, torch.tensor(SD_LATENT_RGB))
        rgb = ((rgb + 1) / 2).clamp(0, 1)
    else:  # no known map: the first three channels, each stretched to [0, 1]
        rgb = first[:3].permute(1, 2, 0)
        low, high = rgb.amin(dim=(0, 1)), rgb.amax(dim=(0, 1))
        rgb = (rgb - low) / (high - low + 1e-6)
    array = (rgb.numpy() * 255).round().astype(np.uint8)
    scale = max(1, max(array.shape[:2]) // max_side)
    return array[::scale, ::scale]
