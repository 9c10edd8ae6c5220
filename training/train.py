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


def resume(ck: Path, model, opt, what: str) -> int:
    """Load model and optimizer state from checkpoint `ck` if it exists; returns the step to go on from."""
    if not ck.exists():
        return 0
    st = torch.load(ck, weights_only=False)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    log(f"resumed {what} at step {st['step']}")
    return st["step"]


def set_cosine_lr(opt, peak: float, step: int, total: int, warmup: int) -> None:
    """Linear warm-up over `warmup` steps, then cosine from `peak` down to a tenth of it at `total`."""
    warm = min(1.0, (step + 1) / warmup)
    cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total))
    for g in opt.param_groups:
        g["lr"] = peak * warm * cos


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
    shipped = Path(a.out) / "vae"
    if a.resume and (shipped / "config.json").exists():
        shutil.copytree(shipped, final, dirs_exist_ok=True)
        (wd / "vae_decoder_done.json").write_text(json.dumps({"from": str(shipped)}))
        log(f"--resume: using the trained VAE of {shipped}")
        return
    torch.manual_seed(a.seed)
    vae = make_vae()
    log(f"VAE params: {count_params(vae):,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=a.vae_lr, weight_decay=0.0)
    ck = wd / "vae_ckpt.pt"
    step = resume(ck, vae, opt, "VAE")
    t0 = time.time()
    while step < a.vae_steps:
        set_cosine_lr(opt, a.vae_lr, step, a.vae_steps, warmup=50)
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
            log(
                f"vae step {step}/{a.vae_steps} rec {rec.item():.4f} kl {kl.item():.1f} "
                f"pixel-palette-acc {acc:.4f} ({(time.time() - t0) / 60:.1f} min)"
            )
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
            post = vae.encode(x[i : i + 128]).latent_dist
            zs.append(post.mean)
            y = vae.decode(post.mean).sample
            accs.append((palette_index(y) == palette_index(x[i : i + 128])).float().mean())
        z = torch.cat(zs)
        std = z.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(final, safe_serialization=True)
    log(
        f"VAE done: latent mean {z.mean().item():.3f} std {std:.3f} -> scaling_factor "
        f"{1.0 / std:.4f}; held-in reconstruction pixel-palette-acc {torch.stack(accs).mean():.4f}"
    )


# ------------------------------------------------------------ latent cache
def build_cache(a, wd: Path):
    path = wd / f"latents_{a.cache_size}.pt"
    if path.exists():
        return torch.load(path)
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(wd / "vae").eval()
    rng = np.random.default_rng([a.seed, 3])
    b = sample_batch(rng, a.cache_size, captions=False)
    means, stds = [], []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, a.cache_size, 256):
            x = torch.from_numpy(to_tensor_range(b["images"][i : i + 256]))
            post = vae.encode(x).latent_dist
            means.append(post.mean)
            stds.append(post.std)
    cache = {
        "mean": torch.cat(means),
        "std": torch.cat(stds),
        "fg": torch.from_numpy(b["fg"]),
        "shape": torch.from_numpy(b["shape"]),
        "bg": torch.from_numpy(b["bg"]),
        "scaling_factor": float(vae.config.scaling_factor),
    }
    torch.save(cache, path)
    log(f"encoded {a.cache_size} training images to latents in {time.time() - t0:.0f} s")
    return cache


# --------------------------------------------------------------- diffusion
COMPACT_CKPT = Path(__file__).resolve().parent / "checkpoints" / "shapes_train_state.pt"


class EMA:
    def __init__(self, models, decay):
        self.models = models
        self.shadow = [copy.deepcopy(m).eval().requires_grad_(False) for m in models]
        self.decay = decay

    @torch.no_grad()
    def update(self, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for m, s in zip(self.models, self.shadow, strict=True):
            for p, q in zip(m.parameters(), s.parameters(), strict=True):
                q.lerp_(p.detach(), 1 - d)


def make_pipeline(vae, text_encoder, tokenizer, unet):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DPMSolverMultistepScheduler(**make_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def export_pipeline(pipe, out: Path, tok_dir: Path):
    out.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / (out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    pipe.save_pretrained(tmp, safe_serialization=True)
    for f in ("vocab.json", "merges.txt"):  # also keep the plain BPE files
        shutil.copy(tok_dir / f, tmp / "tokenizer" / f)
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        dst = out / sub
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        os.replace(tmp / sub, dst)
    shutil.rmtree(tmp)


def quick_eval(pipe, guidance, seeds_per_combo=1):
    from .evaluate import heldout_prompts, run_prompts

    pipe.set_progress_bar_config(disable=True)
    return run_prompts(pipe, heldout_prompts(seeds_per_combo), steps=20, guidance=guidance)


def train_unet(a, wd: Path):
    from diffusers import AutoencoderKL, DDPMScheduler

    out = Path(a.out)
    if not (wd / "vae" / "config.json").exists() and (out / "vae" / "config.json").exists():
        shutil.copytree(out / "vae", wd / "vae", dirs_exist_ok=True)
        log(f"using the VAE of {out}")
    cache = build_cache(a, wd)
    sf = cache["scaling_factor"]
    n_cache = len(cache["mean"])
    tok_dir = wd / "tokenizer"
    tok = build_tokenizer(str(tok_dir))
    torch.manual_seed(a.seed + 1)
    te = make_text_encoder(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    unet = make_unet()
    vae = AutoencoderKL.from_pretrained(wd / "vae").eval()
    log(f"params: unet {count_params(unet):,}  text encoder {count_params(te):,}  vae {count_params(vae):,}")
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.99), weight_decay=0.01)
    ema = EMA([unet, te], a.ema)
    sched = DDPMScheduler(**make_scheduler_config())
    step, warm_from = 0, 0
    ck = wd / "unet_ckpt.pt"
    if ck.exists() and not a.resume:
        raise SystemExit(f"{ck} exists: pass --resume to continue it, or use another --workdir")
    if a.resume and ck.exists():
        st = torch.load(ck, weights_only=False)
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["te"])
        ema.shadow[0].load_state_dict(st["ema_unet"])
        ema.shadow[1].load_state_dict(st["ema_te"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        log(f"resumed exactly from {ck} at step {step}")
    elif a.resume and Path(a.init_from).exists():
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        st = torch.load(a.init_from, weights_only=False)
        unet.load_state_dict(st["unet"])
        te.load_state_dict(st["te"])
        ema.shadow[0].load_state_dict(UNet2DConditionModel.from_pretrained(out / "unet").state_dict())
        ema.shadow[1].load_state_dict(CLIPTextModel.from_pretrained(out / "text_encoder").state_dict())
        step = warm_from = st["step"]
        log(
            f"resumed from compact checkpoint {a.init_from} at step {step} "
            f"(EMA from {out}; fresh optimizer state, re-warmed)"
        )
    elif a.resume:
        raise SystemExit("--resume: no checkpoint found")

    pad_ids: dict[str, torch.Tensor] = {}

    def ids_for(caps):
        missing = [c for c in set(caps) if c not in pad_ids]
        if missing:
            for c, row in zip(missing, tokenize(tok, missing), strict=True):
                pad_ids[c] = row
        return torch.stack([pad_ids[c] for c in caps])

    from .dataset import CAPTION_KIND_P, caption_variant

    t0 = time.time()
    t_last, s_last = t0, step
    losses = []
    while step < a.unet_steps:
        lr = a.lr * min(1.0, (step - warm_from + 1) / a.warmup)
        if a.decay_from and step >= a.decay_from:
            frac = (step - a.decay_from) / max(1, a.unet_steps - a.decay_from)
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([a.seed, 4, step])
        idx = torch.from_numpy(rng.integers(0, n_cache, a.batch))
        kinds = rng.choice(len(CAPTION_KIND_P), a.batch, p=CAPTION_KIND_P)
        caps = [
            "" if k == len(CAPTION_KIND_P) - 1 else caption_variant(int(f), int(s), int(b), int(k))
            for f, s, b, k in zip(cache["fg"][idx], cache["shape"][idx], cache["bg"][idx], kinds, strict=True)
        ]
        ids = ids_for(caps)
        gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
        z0 = cache["mean"][idx]
        if a.latent_noise:
            z0 = z0 + a.latent_noise * cache["std"][idx] * torch.randn(z0.shape, generator=gen)
        z0 = z0 * sf
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (a.batch,), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t)
        h = te(ids)[0]
        pred = unet(zt, t, h).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema.update(step)
        losses.append(loss.item())
        if step % a.log_every == 0 or step == 1:
            now = time.time()
            log(
                f"step {step}/{a.unet_steps} loss {np.mean(losses):.4f} grad {gn:.2f} lr {lr:.2e} "
                f"{(now - t_last) / max(1, step - s_last):.2f} s/step "
                f"({(now - t0) / 60:.1f} min this run)"
            )
            losses, t_last, s_last = [], now, step
        if step % a.ckpt_every == 0 or step == a.unet_steps:
            atomic_save(
                {
                    "unet": unet.state_dict(),
                    "te": te.state_dict(),
                    "ema_unet": ema.shadow[0].state_dict(),
                    "ema_te": ema.shadow[1].state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                },
                ck,
            )
        if step % a.export_every == 0 or step == a.unet_steps:
            pipe = make_pipeline(vae, ema.shadow[1], tok, ema.shadow[0])
            export_pipeline(pipe, out, tok_dir)
            state_out = Path(a.state_out)
            state_out.parent.mkdir(parents=True, exist_ok=True)
            atomic_save(
                {
                    "unet": unet.state_dict(),
                    "te": te.state_dict(),
                    "step": step,
                    "note": "raw (non-EMA) weights; EMA weights are the exported pipeline",
                },
                state_out,
            )
            log(f"exported EMA pipeline to {out} and {state_out} at step {step}")
        if a.eval_every and (step % a.eval_every == 0 or step == a.unet_steps):
            te_ = time.time()
            pipe = make_pipeline(vae, ema.shadow[1], tok, ema.shadow[0])
            r = quick_eval(pipe, a.eval_guidance)
            log(
                f"EVAL step {step} held-out (24 prompts, g={a.eval_guidance}): colour {r['color_acc']:.2f} "
                f"fg {r['fg_acc']:.2f} bg {r['bg_acc']:.2f} shape {r['shape_acc']:.2f} "
                f"all {r['all_acc']:.2f} ({time.time() - te_:.0f} s)"
            )
    log(f"diffusion training done at step {step}")


# ------------------------------------------------- VAE decoder fine-tuning
def finetune_decoder(a, wd: Path):
    """Sharpen the VAE decoder with the encoder frozen.

    The latent space (encoder, scaling factor) does not change, so the
    diffusion model stays valid; the decoder learns to decode posterior means
    (what the diffusion model is trained to produce) into sharp shapes.
    """
    from diffusers import AutoencoderKL

    src = wd / "vae"
    done = wd / "vae_decoder_done.json"
    ck = wd / "decoder_ckpt.pt"
    if done.exists():
        log(f"decoder already fine-tuned: {done}")
        return
    vae = AutoencoderKL.from_pretrained(src)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=a.decoder_lr, weight_decay=0.0)
    step = resume(ck, vae, opt, "decoder fine-tuning")
    t0 = time.time()
    while step < a.decoder_steps:
        set_cosine_lr(opt, a.decoder_lr, step, a.decoder_steps, warmup=20)
        rng = np.random.default_rng([a.seed, 5, step])
        b = sample_batch(rng, a.vae_batch, captions=False)
        x = torch.from_numpy(to_tensor_range(b["images"]))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
        rec = (y - x).abs().mean() + (y - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        rec.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0 or step == 1:
            with torch.no_grad():
                acc = (palette_index(y) == palette_index(x)).float().mean().item()
            log(
                f"decoder step {step}/{a.decoder_steps} rec {rec.item():.4f} "
                f"pixel-palette-acc {acc:.4f} ({(time.time() - t0) / 60:.1f} min)"
            )
        if step % 100 == 0 or step == a.decoder_steps:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck)
    vae.save_pretrained(src, safe_serialization=True)
    out = Path(a.out)
    if (out / "vae" / "config.json").exists():
        vae.save_pretrained(out / "vae", safe_serialization=True)
        log(f"updated {out / 'vae'}")
    done.write_text(json.dumps({"steps": step}))
    log("decoder fine-tuning done")


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", default="var/train", help="checkpoints and caches")
    p.add_argument("--out", default="worker/models/shapes", help="exported pipeline")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--phase", choices=["all", "vae", "cache", "unet", "decoder"], default="all")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --workdir (or --init-from)")
    p.add_argument("--vae-steps", type=int, default=500)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1.5e-3)
    p.add_argument("--kl-weight", type=float, default=1e-5)
    p.add_argument("--cache-size", type=int, default=32000)
    p.add_argument(
        "--latent-noise", type=float, default=0.0, help="train on mean + this * std of the VAE posterior (0: the mean)"
    )
    p.add_argument("--unet-steps", type=int, default=6200)
    p.add_argument("--decoder-steps", type=int, default=600)
    p.add_argument("--decoder-lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument(
        "--decay-from",
        type=int,
        default=4600,
        help="cosine-decay the LR to 10%% from this step to --unet-steps (0: constant)",
    )
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--export-every", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-guidance", type=float, default=5.0)
    p.add_argument(
        "--init-from", default=str(COMPACT_CKPT), help="compact checkpoint used by --resume when --workdir has none"
    )
    p.add_argument(
        "--state-out", default=str(COMPACT_CKPT), help="where the compact training state is written at each export"
    )
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    wd = Path(a.workdir)
    wd.mkdir(parents=True, exist_ok=True)
    if a.phase in ("all", "vae"):
        train_vae(a, wd)
    if a.phase in ("all", "cache"):
        build_cache(a, wd)
    if a.phase in ("all", "unet"):
        train_unet(a, wd)
    if a.phase in ("all", "decoder"):
        finetune_decoder(a, wd)


if __name__ == "__main__":
    main()
