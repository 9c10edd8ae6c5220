"""Encoding: formats, PNG text chunks (and none when disabled)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from worker.encoding import encode


def test_png_text_chunks_and_lossy_formats() -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    png = Image.open(io.BytesIO(encode(pixels, "png", 90, 1, {"prompt": "a red circle", "seed": "3"})))
    assert png.text == {"prompt": "a red circle", "seed": "3"}  # type: ignore[attr-defined]
    assert np.array_equal(np.asarray(png), pixels), "PNG is lossless"
    bare = Image.open(io.BytesIO(encode(pixels, "png", 90, 1, None)))
    assert bare.text == {}  # type: ignore[attr-defined]
    for fmt, name in (("jpeg", "JPEG"), ("webp", "WEBP")):
        small, large = encode(pixels, fmt, 10, 1), encode(pixels, fmt, 95, 1)
        assert Image.open(io.BytesIO(small)).format == name and len(small) < len(large)
