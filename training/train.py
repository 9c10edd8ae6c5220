"""Train the default "shapes" text-to-image pipeline from scratch on CPU.

Phases (each checkpoints and resumes; a finished phase is skipped):
  1. VAE: AutoencoderKL on procedurally drawn images (64x64 -> 8x8x4).
  2. Latent cache: a fixed, seeded set of training images encoded once with
     the frozen VAE (posterior mean and std).
  3. Diffusion: UNet2DConditionModel + CLIPTextModel trained jointly on the
     cached latents with v-prediction, caption dropout for classifier-free
     guidance, AdamW with warm-up, gradient clipping and EMA.  A quick
     held-out colour/shape check is printed every --eval-every steps, and the
     EMA pipeline is exported into --out.

All randomness is derived from --seed and the step number, so a resumed run
draws the same batches as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import (
    PALETTE_ARRAY,
    TRAIN_COMBOS,
    sample_batch,
    to_tensor_range,
)
from .models import count_params, make_scheduler_config, make_text_encoder, make_unet, make_vae
from .tokenizer import build_tokenizer, tokenize


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def palette_index(images: torch.Tensor) -> torch.Tensor:
    """images in [-1,1] NCHW -> nearest palette index per pixel (N,H,W)."""
    rgb = (images.clamp(-1, 1) + 1) * 127.5
    pal = torch.from_numpy(PALETTE_ARRAY)
    d = ((rgb.permute(0, 2, 3, 1)[..., None, :] - pal) ** 2).sum(-1)
    return d.argmin(-1)


# --------------------------------------------------------------------- VAE
def train_vae(a, wd: Path):
    final = wd / "vae"
    if (final / "config.json").exists():
        log(f"VAE already trained: {final}")
        return
    torch.manual_seed(a.seed)
    vae = make_vae()
    log(f"VAE params: {count_params(vae):,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    step = 0
    ck = wd / "vae_ckpt.pt"
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        vae.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        log(f"resumed VAE at step {step}")
    t0 = time.time()
    while step < a.vae_steps:
        warm = min(1.0, (step + 1) / 50)
        cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / a.vae_steps))
        for g in opt.param_groups:
            g["lr"] = a.vae_lr * warm * cos
        rng = np.random.default_rng([a.seed, 1, step])
        b = sample_batch(rng, a.vae_batch, captions=False)
        x = torch.from_numpy(to_tensor_range(b["images"]))
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        post = vae.encode(x).latent_dist
        z = post.sample(generator=gen)
        y = vae.decode(z).sample
        rec = (y - x).abs().mean() + (y - x).pow(2).mean()
        kl = post.kl().mean()
        loss = rec + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0 or step == 1:
            with torch.no_grad():
                acc = (palette_index(y) == palette_index(x)).float().mean().item()
            log(f"vae step {step}/{a.vae_steps} rec {rec.item():.4f} kl {kl.item():.1f} "
                f"pixel-palette-acc {acc:.4f} ({(time.time() - t0) / 60:.1f} min)")
        if step % 100 == 0 or step == a.vae_steps:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck)
    # Scaling factor so that the diffusion model sees unit-variance latents.
    vae.eval()
    with torch.no_grad():
        rng = np.random.default_rng([a.seed, 2])
        b = sample_batch(rng, 1024, captions=False)
        x = torch.from_numpy(to_tensor_range(b["images"]))
        zs, accs = [], []
        for i in range(0, len(x), 128):
            post = vae.encode(x[i:i + 128]).latent_dist
            zs.append(post.mean)
            y = vae.decode(post.mean).sample
            accs.append((palette_index(y) == palette_index(x[i:i + 128])).float().mean())
        z = torch.cat(zs)
        std = z.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(final, safe_serialization=True)
    log(f"VAE done: latent mean {z.mean().item():.3f} std {std:.3f} -> scaling_factor "
        f"{1.0 / std:.4f}; held-in reconstruction pixel-palette-acc {torch.stack(accs).mean():.4f}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="var/train", help="checkpoints and caches")
    p.add_argument("--out", default="worker/models/shapes", help="exported pipeline")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--phase", choices=["all", "vae", "cache", "unet"], default="all")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints in --workdir (or --init-from)")
    p.add_argument("--vae-steps", type=int, default=500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1.5e-3)
    p.add_argument("--kl-weight", type=float, default=1e-5)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    if a.phase in ("all", "vae"):
        train_vae(a, wd)


if __name__ == "__main__":
    main()
