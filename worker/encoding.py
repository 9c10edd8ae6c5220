"""Image encoding: PNG (with the generation's parameters as text chunks), JPEG and WebP."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode(
    array: np.ndarray, fmt: str, quality: int, png_compress_level: int, text: Mapping[str, str] | None = None
) -> bytes:
    """Bytes of an HxWx3 uint8 array in `fmt`; `text` goes into PNG tEXt chunks."""
    buffer = io.BytesIO()
    image = Image.fromarray(array, mode="RGB")
    if fmt == "png":
        info = PngInfo()
        for key, value in (text or {}).items():
            info.add_text(key, value)
        image.save(buffer, format="PNG", compress_level=png_compress_level, pnginfo=info)
    else:
        image.save(buffer, format=PIL_FORMATS[fmt], quality=quality)
    return buffer.getvalue()


def encode_jpeg(array: np.ndarray, quality: int = 70) -> bytes:
    """JPEG bytes (previews: small and fast to encode)."""
    return encode(array, "jpeg", quality, 0)
