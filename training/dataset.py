"""Procedural captioned dataset: one coloured shape on a plain background.

Everything is generated on the fly from a seed with numpy, so the data set
needs no storage and is exactly reproducible.

* 64x64 RGB images, hard (non anti-aliased) edges, flat colours.
* A shape (circle, square, triangle) of one palette colour on a background of
  another palette colour; size and position vary.
* Captions: "a red circle on a blue background" and some partial forms
  (colour, shape or background omitted) so that prompts that leave out an
  attribute, and negative prompts such as "red", mean something.
* A fixed, documented set of (foreground, shape, background) combinations is
  held out of training entirely (no image of such a combination is ever
  drawn for training); evaluation prompts come from it.
"""

from __future__ import annotations

import numpy as np

IMAGE_SIZE = 64

# Well separated colours so that nearest-palette classification is unambiguous.
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
COLORS: list[str] = list(PALETTE)
SHAPES: list[str] = ["circle", "square", "triangle"]
PALETTE_ARRAY = np.array([PALETTE[c] for c in COLORS], dtype=np.float32)

# Shape geometry: "radius" r (half of the bounding box side), in pixels.
MIN_R, MAX_R = 12, 20
MARGIN = 3


def is_held_out(fg: int, shape: int, bg: int) -> bool:
    """Held-out combinations: (fg + 2*bg + 3*shape) % 7 == 0, fg != bg.

    The rule picks 24 of the 168 combinations (8 per shape); every colour
    still appears in training as foreground and as background of every shape,
    so the held-out set tests composition, not unseen words.
    """
    return fg != bg and (fg + 2 * bg + 3 * shape) % 7 == 0


ALL_COMBOS = [(f, s, b) for f in range(len(COLORS)) for s in range(len(SHAPES)) for b in range(len(COLORS)) if f != b]
HELD_OUT_COMBOS = [c for c in ALL_COMBOS if is_held_out(*c)]
TRAIN_COMBOS = [c for c in ALL_COMBOS if not is_held_out(*c)]


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_full(fg: int, shape: int, bg: int) -> str:
    return caption_variant(fg, shape, bg, 0)


def caption_variant(fg: int, shape: int, bg: int, kind: int) -> str:
    """kind 0: full; 1: no foreground colour; 2: no background;
    3: no shape ("shape"); 4: only the foreground colour word."""
    f, s, b = COLORS[fg], SHAPES[shape], COLORS[bg]
    af, ab = article(f), article(b)
    if kind == 0:
        return f"{af} {f} {s} on {ab} {b} background"
    if kind == 1:
        return f"a {s} on {ab} {b} background"
    if kind == 2:
        return f"{af} {f} {s}"
    if kind == 3:
        return f"{af} {f} shape on {ab} {b} background"
    if kind == 4:
        return f
    raise ValueError(kind)


# Probabilities of the caption kinds above, plus the empty caption (dropout for
# classifier-free guidance) as the last entry.
CAPTION_KIND_P = np.array([0.70, 0.06, 0.06, 0.05, 0.03, 0.10])

CAPTION_WORDS = sorted(set(COLORS) | set(SHAPES) | {"a", "an", "on", "background", "shape"})


def render(
    fg: np.ndarray,
    shape: np.ndarray,
    bg: np.ndarray,
    r: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    size: int = IMAGE_SIZE,
) -> np.ndarray:
    """Render a batch. Returns uint8 array (N, size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    xx = xx[None] - cx[:, None, None]
    yy = yy[None] - cy[:, None, None]
    rr = r[:, None, None].astype(np.float32)
    circle = xx * xx + yy * yy <= rr * rr
    square = (np.abs(xx) <= rr) & (np.abs(yy) <= rr)
    # Upward isosceles triangle filling half of its 2r x 2r bounding box.
    tri = (yy >= -rr) & (yy <= rr) & (np.abs(xx) <= (yy + rr) / 2)
    s = shape[:, None, None]
    mask = np.where(s == 0, circle, np.where(s == 1, square, tri))
    pal = np.array([PALETTE[c] for c in COLORS], dtype=np.uint8)
    out = np.where(mask[..., None], pal[fg][:, None, None, :], pal[bg][:, None, None, :])
    return out.astype(np.uint8)


def sample_batch(rng: np.random.Generator, n: int, combos=None, captions: bool = True) -> dict:
    """Draw n random examples from `combos` (default: training combinations)."""
    combos = TRAIN_COMBOS if combos is None else combos
    idx = rng.integers(0, len(combos), n)
    c = np.array(combos)[idx]
    fg, shape, bg = c[:, 0], c[:, 1], c[:, 2]
    r = rng.integers(MIN_R, MAX_R + 1, n).astype(np.float32)
    lo = r + MARGIN
    hi = IMAGE_SIZE - r - MARGIN
    cx = np.floor(lo + rng.random(n) * (hi - lo + 1)).astype(np.float32)
    cy = np.floor(lo + rng.random(n) * (hi - lo + 1)).astype(np.float32)
    images = render(fg, shape, bg, r, cx, cy)
    out = {"images": images, "fg": fg, "shape": shape, "bg": bg, "r": r, "cx": cx, "cy": cy}
    if captions:
        kinds = rng.choice(len(CAPTION_KIND_P), n, p=CAPTION_KIND_P)
        out["captions"] = [
            "" if k == len(CAPTION_KIND_P) - 1 else caption_variant(f, s, b, k)
            for f, s, b, k in zip(fg, shape, bg, kinds, strict=True)
        ]
    return out


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW in [-1, 1]."""
    return (images.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
