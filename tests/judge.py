"""A small deterministic judge for images of one coloured shape on a background.

1. Every pixel is classified to the nearest palette colour (RGB distance).
2. Background = the most common colour on the image border.
3. Foreground = the most common other colour (None if it covers < MIN_FG px).
4. Shape from the foreground mask inside its bounding box:
   fill ratio (area / bbox area) is ~1.0 for a square, ~0.785 for a circle,
   ~0.5 for a triangle; an upward triangle also has ~3/4 of its mass in the
   lower half of its box, circles and squares ~1/2.

Usable without the training package: the palette is defined here too (and a
unit test checks it equals the data set's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLORS = list(PALETTE)
SHAPES = ["circle", "square", "triangle"]
_PAL = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)
MIN_FG = 20  # pixels (of 64x64); scaled with image area


@dataclass
class Verdict:
    fg: str | None
    bg: str
    shape: str | None
    fill: float
    lower_mass: float
    fg_pixels: int

    def matches(self, fg=None, shape=None, bg=None) -> bool:
        return (
            (fg is None or self.fg == fg) and (shape is None or self.shape == shape) and (bg is None or self.bg == bg)
        )


def to_array(image) -> np.ndarray:
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.dtype != np.uint8:  # float in [0, 1] as returned with output_type="np"
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return arr[..., :3]


def classify_pixels(image) -> np.ndarray:
    arr = to_array(image).astype(np.float32)
    d = ((arr[:, :, None, :] - _PAL[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def classify_shape(mask: np.ndarray) -> tuple[str | None, float, float]:
    rows = np.where(mask.sum(1) >= 2)[0]
    cols = np.where(mask.sum(0) >= 2)[0]
    if len(rows) < 3 or len(cols) < 3:
        return None, 0.0, 0.0
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    box = mask[r0:r1, c0:c1]
    area = box.sum()
    fill = float(area / box.size)
    half = (r1 - r0) / 2.0
    ys = np.nonzero(box)[0] + 0.5
    lower = float((ys > half).sum() / max(area, 1))
    if lower > 0.62 or fill < 0.64:
        shape = "triangle"
    elif fill > 0.89:
        shape = "square"
    else:
        shape = "circle"
    return shape, fill, lower


def judge(image) -> Verdict:
    idx = classify_pixels(image)
    h, w = idx.shape
    border = np.concatenate([idx[0], idx[-1], idx[:, 0], idx[:, -1]])
    bg = int(np.bincount(border, minlength=len(COLORS)).argmax())
    counts = np.bincount(idx.ravel(), minlength=len(COLORS))
    counts[bg] = 0
    fg = int(counts.argmax())
    min_fg = MIN_FG * h * w / 4096
    if counts[fg] < min_fg:
        return Verdict(None, COLORS[bg], None, 0.0, 0.0, int(counts[fg]))
    shape, fill, lower = classify_shape(idx == fg)
    return Verdict(COLORS[fg], COLORS[bg], shape, fill, lower, int(counts[fg]))


_PROMPT = re.compile(
    r"^an? (?:(?P<fg>\w+) )?(?P<shape>circle|square|triangle|shape)"
    r"(?: on an? (?P<bg>\w+) background)?$"
)


def parse_prompt(prompt: str) -> tuple[str | None, str | None, str | None]:
    """'a red circle on a blue background' -> ('red', 'circle', 'blue')."""
    m = _PROMPT.match(prompt.strip().lower())
    if not m:
        raise ValueError(f"not a shapes prompt: {prompt!r}")
    shape = m["shape"] if m["shape"] != "shape" else None
    return m["fg"], shape, m["bg"]
