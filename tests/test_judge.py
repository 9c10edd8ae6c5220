"""The judge must be right on the data set's own renders."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
_spec = importlib.util.spec_from_file_location("shapes_judge", Path(__file__).with_name("judge.py"))
judge_mod = importlib.util.module_from_spec(_spec)
sys.modules["shapes_judge"] = judge_mod
_spec.loader.exec_module(judge_mod)

from training import dataset  # noqa: E402


def test_palette_matches_dataset():
    assert judge_mod.PALETTE == dataset.PALETTE
    assert judge_mod.SHAPES == dataset.SHAPES


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_judge_on_random_renders(seed):
    rng = np.random.default_rng(seed)
    b = dataset.sample_batch(rng, 400, combos=dataset.ALL_COMBOS, captions=False)
    for i in range(len(b["images"])):
        v = judge_mod.judge(b["images"][i])
        want = (dataset.COLORS[b["fg"][i]], dataset.SHAPES[b["shape"][i]], dataset.COLORS[b["bg"][i]])
        assert (v.fg, v.shape, v.bg) == want, (v, want, b["r"][i], b["cx"][i], b["cy"][i])


@pytest.mark.parametrize("shape", [0, 1, 2])
@pytest.mark.parametrize("r", [dataset.MIN_R, 16, dataset.MAX_R])
def test_extreme_sizes_and_corners(shape, r):
    for cx, cy in [(r + 3, r + 3), (61 - r, 61 - r), (32, 32)]:
        img = dataset.render(
            np.array([4]),
            np.array([shape]),
            np.array([6]),
            np.array([r], np.float32),
            np.array([cx], np.float32),
            np.array([cy], np.float32),
        )[0]
        v = judge_mod.judge(img)
        assert (v.fg, v.shape, v.bg) == ("blue", dataset.SHAPES[shape], "white")


def test_fill_ratios():
    img = dataset.render(
        np.array([0, 0, 0]),
        np.array([0, 1, 2]),
        np.array([1, 1, 1]),
        np.full(3, 20, np.float32),
        np.full(3, 32, np.float32),
        np.full(3, 32, np.float32),
    )
    fills = [judge_mod.judge(im).fill for im in img]
    assert fills[0] == pytest.approx(0.785, abs=0.03)
    assert fills[1] == pytest.approx(1.0, abs=0.01)
    assert fills[2] == pytest.approx(0.5, abs=0.05)


def test_noise_tolerance():
    rng = np.random.default_rng(5)
    b = dataset.sample_batch(rng, 60, combos=dataset.ALL_COMBOS, captions=False)
    noisy = np.clip(b["images"].astype(int) + rng.normal(0, 12, b["images"].shape), 0, 255)
    for i in range(60):
        v = judge_mod.judge(noisy[i].astype(np.uint8))
        assert v.fg == dataset.COLORS[b["fg"][i]] and v.bg == dataset.COLORS[b["bg"][i]]
        assert v.shape == dataset.SHAPES[b["shape"][i]]


def test_blank_image_has_no_foreground():
    img = np.zeros((64, 64, 3), np.uint8) + np.array(dataset.PALETTE["green"], np.uint8)
    v = judge_mod.judge(img)
    assert v.bg == "green" and v.fg is None and v.shape is None


def test_float_and_pil_inputs():
    from PIL import Image

    img = dataset.render(
        np.array([2]),
        np.array([0]),
        np.array([5]),
        np.array([16.0], np.float32),
        np.array([30.0], np.float32),
        np.array([34.0], np.float32),
    )[0]
    for x in (img.astype(np.float32) / 255.0, Image.fromarray(img)):
        v = judge_mod.judge(x)
        assert (v.fg, v.shape, v.bg) == ("yellow", "circle", "purple")


def test_parse_prompt():
    assert judge_mod.parse_prompt("a red circle on a blue background") == ("red", "circle", "blue")
    assert judge_mod.parse_prompt("an orange triangle on a white background") == ("orange", "triangle", "white")
    assert judge_mod.parse_prompt("a circle on a white background") == (None, "circle", "white")
    assert judge_mod.parse_prompt("a green square") == ("green", "square", None)
    for c in dataset.ALL_COMBOS:
        assert judge_mod.parse_prompt(dataset.caption_full(*c)) == (
            dataset.COLORS[c[0]],
            dataset.SHAPES[c[1]],
            dataset.COLORS[c[2]],
        )
