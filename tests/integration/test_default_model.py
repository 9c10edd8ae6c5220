"""The embedded default model, through the running service: it draws what the prompt says.

Judged by tests/judge.py (nearest palette colour per pixel; shape from the foreground mask) on
prompts from the combinations held out of training, with fixed seeds.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from redis import Redis

from tests.conftest import stack_env
from tests.helpers import ROOT, RedisServer, Service, start_api, start_worker, wait_for, wait_ready
from tests.judge import classify_pixels, judge, parse_prompt
from training.dataset import COLORS, HELD_OUT_COMBOS, SHAPES, caption_full, render

pytestmark = pytest.mark.slow
MODEL = ROOT / "worker" / "models" / "shapes"
PROMPTS = [caption_full(*combo) for combo in HELD_OUT_COMBOS]  # 24 combinations never drawn in training


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("shapes")
    prefix = f"s{uuid.uuid4().hex[:10]}"
    env = stack_env(
        redis_server.url,
        prefix,
        tmp / "images",
        DIFFUSION_DEFAULT_MODEL="shapes",
        DIFFUSION_SERVED_MODELS="[]",
        DIFFUSION_MODELS_FILE=str(ROOT / "deploy" / "models.json"),
        DIFFUSION_MAX_IMAGES_PER_REQUEST="20",
    )
    services: list[Service] = [start_api(env, tmp / "api.log")]
    services.append(
        start_worker(
            MODEL,
            {**env, "DIFFUSION_WORKER_ID": f"{prefix}-w"},
            tmp / "worker.log",
            name="shapes",
            from_models_file=True,
        )
    )
    try:
        wait_ready(services[1], Redis.from_url(redis_server.url), f"{prefix}.generate.shapes", f"{prefix}-w")
        yield f"http://127.0.0.1:{services[0].port}"
    finally:
        for service in reversed(services):
            service.stop()


def generate(base: str, bodies: list[dict[str, Any]]) -> list[list[np.ndarray]]:
    """Submit every body, then collect each job's images (pixels), in order."""
    with httpx.Client(base_url=base, timeout=30) as client:
        ids = [client.post("/v1/generations", json=body).json()["id"] for body in bodies]
        results = []
        for job_id in ids:
            job = wait_for(
                lambda j=job_id: (
                    (r := client.get(f"/v1/generations/{j}").json())["status"] in ("succeeded", "failed") and r
                ),
                300,
                "a job",
                interval=0.05,
            )
            assert job["status"] == "succeeded", job  # type: ignore[index]
            results.append(
                [
                    np.asarray(Image.open(io.BytesIO(client.get(im["url"]).content)).convert("RGB"))
                    for im in job["images"]
                ]
            )  # type: ignore[index]
    return results


def adherence(base: str, images_per_prompt: int, **params: Any) -> tuple[float, float, float]:
    """(colours right, shape right, all right) over the held-out prompts with fixed seeds."""
    bodies = [
        {"prompt": p, "seed": 1000 + 10 * i, "num_images": images_per_prompt, **params} for i, p in enumerate(PROMPTS)
    ]
    colours = shapes = both = total = 0
    for prompt, images in zip(PROMPTS, generate(base, bodies), strict=True):
        fg, shape, bg = parse_prompt(prompt)
        for pixels in images:
            verdict = judge(pixels)
            colour_ok = verdict.fg == fg and verdict.bg == bg
            colours += colour_ok
            shapes += verdict.shape == shape
            both += colour_ok and verdict.shape == shape
            total += 1
    return colours / total, shapes / total, both / total


def test_held_out_prompts_draw_the_right_colours_and_shapes(api: str) -> None:
    colours, shapes, _ = adherence(api, images_per_prompt=3)  # 72 images
    print(f"held-out adherence: colours {colours:.1%}, shapes {shapes:.1%}")
    assert colours >= 0.90
    assert shapes >= 0.80


def test_negative_prompt_keeps_red_out(api: str) -> None:
    [images] = generate(
        api, [{"prompt": "a circle on a white background", "negative_prompt": "red", "seed": 500, "num_images": 20}]
    )
    foregrounds = [judge(pixels).fg for pixels in images]
    assert "red" not in foregrounds, foregrounds


def test_guidance_matters(api: str) -> None:
    *_, guided = adherence(api, images_per_prompt=2)
    *_, unguided = adherence(api, images_per_prompt=2, guidance_scale=1.0)
    print(f"adherence at default guidance {guided:.1%}, at 1.0 {unguided:.1%}")
    assert unguided <= guided - 0.08, "48 images each: 8 points is 4 images"


def test_schedulers_agree(api: str) -> None:
    *_, dpm = adherence(api, images_per_prompt=2, scheduler="dpmpp_2m", num_inference_steps=20)
    *_, euler = adherence(api, images_per_prompt=2, scheduler="euler", num_inference_steps=20)
    print(f"adherence at 20 steps: DPM-Solver++ {dpm:.1%}, Euler {euler:.1%}")
    assert abs(dpm - euler) <= 0.10


def _b64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_image_to_image_keeps_layout_at_low_strength(api: str) -> None:
    one = np.array([1.0], dtype=np.float32)
    red, blue = COLORS.index("red"), COLORS.index("blue")
    init = render(np.array([red]), np.array([SHAPES.index("square")]), np.array([blue]), one * 16, one * 32, one * 32)[
        0
    ]
    prompt = "a green circle on a yellow background"
    low, high = generate(
        api,
        [
            {"prompt": prompt, "init_image": _b64(init), "strength": 0.1, "seed": 3},
            {"prompt": prompt, "init_image": _b64(init), "strength": 1.0, "seed": 3},
        ],
    )
    kept, redrawn = judge(low[0]), judge(high[0])
    assert (kept.fg, kept.bg) == ("red", "blue"), kept
    # Layout: the foreground stays where it was (its pixels, as the judge classifies them).
    red_index = COLORS.index("red")
    before, after = classify_pixels(init) == red_index, classify_pixels(low[0]) == red_index
    overlap = (before & after).sum() / (before | after).sum()
    shift = np.abs(np.argwhere(before).mean(0) - np.argwhere(after).mean(0)).max()
    print(f"img2img at strength 0.1: foreground IoU {overlap:.2f}, centroid shift {shift:.1f} px")
    assert overlap > 0.6 and shift <= 2
    assert (redrawn.fg, redrawn.bg) == ("green", "yellow"), redrawn


def test_inpainting_leaves_unmasked_pixels_close(api: str) -> None:
    one = np.array([1.0], dtype=np.float32)
    init = render(
        np.array([COLORS.index("white")]),
        np.array([0]),
        np.array([COLORS.index("purple")]),
        one * 12,
        one * 20,
        one * 20,
    )[0]
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[32:, 32:] = 255  # repaint the lower right quarter only
    buffer = io.BytesIO()
    Image.fromarray(mask, mode="L").save(buffer, format="PNG")
    [images] = generate(
        api,
        [
            {
                "prompt": "a yellow square on a purple background",
                "init_image": _b64(init),
                "mask_image": base64.b64encode(buffer.getvalue()).decode(),
                "seed": 4,
            }
        ],
    )
    out = images[0].astype(int)
    keep = mask < 128
    keep[28:, 28:] = False  # the blend seam of the latent mask
    error = np.abs(out - init.astype(int))[keep].mean()
    print(f"mean absolute change outside the mask: {error:.1f}/255")
    assert error < 20


def test_default_model_is_the_package_folder() -> None:
    assert MODEL.is_dir() and (MODEL / "model_index.json").is_file()
    assert sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file()) <= 25 * 2**20
    assert Path(ROOT / "deploy" / "models.json").is_file()
