"""Draw docs/samples.png: a grid of samples with the prompt under each image.

python -m training.samples [--model worker/models/shapes] [--out docs/samples.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from .dataset import HELD_OUT_COMBOS, caption_full
from .evaluate import DEFAULT_GUIDANCE, DEFAULT_MODEL, DEFAULT_STEPS, ROOT, load_judge, load_pipeline

TRAIN_PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a black background",
    "a white triangle on a green background",
    "a blue circle on an orange background",
    "a purple square on a white background",
    "a green triangle on a purple background",
]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.samples")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--out", default=str(ROOT / "docs" / "samples.png"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--scale", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    judge = load_judge()
    pipe = load_pipeline(a.model)
    held = [caption_full(*HELD_OUT_COMBOS[i]) for i in range(0, len(HELD_OUT_COMBOS), 4)]
    prompts = TRAIN_PROMPTS + held
    tags = ["trained combo"] * len(TRAIN_PROMPTS) + ["held-out combo"] * len(held)
    gens = [torch.Generator().manual_seed(a.seed + i) for i in range(len(prompts))]
    imgs = pipe(prompts, num_inference_steps=DEFAULT_STEPS, guidance_scale=DEFAULT_GUIDANCE, generator=gens).images
    cols = 6
    rows = (len(prompts) + cols - 1) // cols
    side = imgs[0].width * a.scale
    cw, text_h = max(side, 160) + 8, 58
    grid = Image.new("RGB", (cols * cw, rows * (side + text_h) + 4), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, (im, prompt, tag) in enumerate(zip(imgs, prompts, tags, strict=True)):
        x, y = (i % cols) * cw + (cw - side) // 2, (i // cols) * (side + text_h) + 4
        grid.paste(im.resize((side, side), Image.NEAREST), (x, y))
        words = prompt.split(" on ")
        lines = [words[0], "on " + words[1] if len(words) > 1 else ""]
        v = judge.judge(im)
        fg, sh, bg = judge.parse_prompt(prompt)
        ok = "ok" if v.matches(fg, sh, bg) else f"{v.fg} {v.shape} / {v.bg}"
        lines += [f"[{tag}]", f"judge: {ok}"]
        for j, line in enumerate(lines):
            draw.text(((i % cols) * cw + 4, y + side + 2 + 12 * j), line, fill="black", font=font)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(a.out)
    print(f"wrote {a.out} ({grid.width}x{grid.height})")


if __name__ == "__main__":
    main()
