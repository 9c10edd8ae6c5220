"""The worker path on a GPU: fp16 with and without torch.compile, on the tiny pipeline and on an
SD 1.5-architecture pipeline with random weights built from its published configuration.

Prints the device name and per-step latency (median, p95) for each case, as the step-latency
histogram measures it (StepClock: CUDA-synchronised). No download: everything is built from
configs. `python benchmarks/gpu_check.py [--steps 20] [--size 512]`; on a CPU it runs a small
smoke version (`--device cpu --size 64 --steps 2`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contract.jobs import GenerationParams
from worker.loading import load, pick_runtime
from worker.pipeline import WarmPipeline
from worker.settings import WorkerSettings
from worker.tiny import build_sd, build_tokenizer


def build_sd15_architecture(out: Path) -> Path:
    """Stable Diffusion 1.5's UNet, VAE and CLIP text encoder configurations, random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    tokenizer = build_tokenizer(out / "_tok")
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=len(tokenizer) - 2,
            eos_token_id=len(tokenizer) - 1,
            pad_token_id=len(tokenizer) - 1,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def measure(model: Path, device: str, compiled: bool, size: int, steps: int, runs: int) -> str:
    settings = WorkerSettings(
        model_source=str(model), device=device, compile=compiled, warmup_sizes=[f"{size}x{size}"], warmup_steps=2
    )
    runtime = pick_runtime(settings)
    started = time.perf_counter()
    warm = WarmPipeline(load(settings, runtime), runtime, settings)
    warmup = warm.warm_up()
    laps: list[float] = []
    for run in range(runs):
        params = GenerationParams(
            prompt="a red circle on a blue background",
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=7.5,
            seed=run,
            num_images=1,
        )
        warm.generate(params, lambda done, total, seconds: laps.append(seconds) is None)
    laps.sort()
    memory = warm.memory().get("peak_allocated", 0) / 2**30
    dtype = str(runtime.dtype).removeprefix("torch.")
    p95 = laps[int(0.95 * (len(laps) - 1))]
    took = time.perf_counter() - started
    return (
        f"{model.name:>10} {dtype:>8} compile={compiled!s:5} {size}x{size} CFG batch 1: "
        f"step median {statistics.median(laps) * 1e3:7.2f} ms, p95 {p95 * 1e3:7.2f} ms; "
        f"load+warm-up {took:5.1f} s (warm-up {warmup:5.1f} s); peak memory {memory:.2f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        models = [build_sd(Path(tmp) / "tiny-sd"), build_sd15_architecture(Path(tmp) / "sd15-arch")]
        for model in models:
            size = 64 if model.name == "tiny-sd" else args.size
            for compiled in (False, True):
                print(measure(model, args.device, compiled, size, args.steps, args.runs), flush=True)


if __name__ == "__main__":
    main()
