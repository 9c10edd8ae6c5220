"""Tiny random-weight pipelines built from configs, saved in the diffusers folder layout.

They load through exactly the same `from_pretrained` path as real models. Tests use them for
both families the service must run: a UNet latent-diffusion pipeline (Stable Diffusion layout)
and a transformer / flow-matching one (Stable Diffusion 3 layout, without the optional T5).
`python -m worker.tiny --kind sd --out var/models/tiny-sd` builds one; seeded, so reproducible.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

NATIVE_SIDE = 64


def _byte_chars() -> list[str]:
    # GPT-2 / CLIP byte-to-unicode table: every byte gets a printable character.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer(folder: Path) -> CLIPTokenizer:
    """A character-level CLIP tokenizer (no merges): any text tokenizes, no download needed."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_config(vocab_size: int, projection: bool) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        layer_norm_eps=1e-5,
        vocab_size=vocab_size,
        projection_dim=32 if projection else 512,
        max_position_embeddings=77,
    )


def build_sd(out: Path, seed: int = 0) -> Path:
    """Stable-Diffusion-layout pipeline: UNet with cross-attention, KL VAE (x2), CLIP text encoder; 64 px native."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out / "_tok")
    unet = UNet2DConditionModel(
        sample_size=NATIVE_SIDE // 2,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32,
        sample_size=NATIVE_SIDE,
    )
    text_encoder = CLIPTextModel(_text_config(len(tokenizer), projection=False))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, out)


def build_sd3(out: Path, seed: int = 0) -> Path:
    """Stable-Diffusion-3-layout pipeline: MMDiT transformer, flow matching, two CLIP encoders, no T5; 64 px."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(out / "_tok")
    transformer = SD3Transformer2DModel(
        sample_size=NATIVE_SIDE // 2,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=32,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=32,
    )
    # 16 latent channels as in real SD3 (its inpainting pipeline insists on them).
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=16,
        sample_size=NATIVE_SIDE,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    encoders = [CLIPTextModelWithProjection(_text_config(len(tokenizer), projection=True)) for _ in range(2)]
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae,
        text_encoder=encoders[0],
        tokenizer=tokenizer,
        text_encoder_2=encoders[1],
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    return _save(pipe, out)


def _save(pipe: StableDiffusionPipeline | StableDiffusion3Pipeline, out: Path) -> Path:
    pipe.save_pretrained(out, safe_serialization=True)
    for leftover in (out / "_tok").glob("*"):
        leftover.unlink()
    (out / "_tok").rmdir()
    return out


def build_lora(
    model: Path,
    out: Path,
    seed: int,
    rank: int = 4,
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
    text_encoder: bool = False,
) -> Path:
    """A random LoRA on a tiny pipeline's denoiser (by default its attention projections), as one safetensors file;
    `text_encoder` adds weights for the CLIP text encoder's attention too."""
    import tempfile

    from diffusers import DiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True, text_encoder_3=None, tokenizer_3=None)
    torch.manual_seed(seed)
    name = "unet" if hasattr(pipe, "unet") else "transformer"
    denoiser = getattr(pipe, name)
    denoiser.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(targets)))
    layers = {f"{name}_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))}
    if text_encoder:
        # peft directly: transformers' own add_adapter asks for a newer peft than PyPI has.
        inject_adapter_in_model(
            LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=["q_proj", "v_proj"]),
            pipe.text_encoder,
        )
        layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(
            get_peft_model_state_dict(pipe.text_encoder)
        )
    with tempfile.TemporaryDirectory() as tmp:
        type(pipe).save_lora_weights(tmp, **layers, safe_serialization=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        (Path(tmp) / "pytorch_lora_weights.safetensors").replace(out)
    return out


def build_controlnet(model: Path, out: Path, seed: int) -> Path:
    """A random ControlNet for the tiny UNet pipeline (its zero-initialised layers randomised, so it acts)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    torch.manual_seed(seed)
    # One stride-2 stage: the tiny VAE downsamples by 2, so control features meet the latents' size.
    controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for layer in [
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        ]:
            layer.weight.normal_(0, 1.0)
            layer.bias.normal_(0, 1.0)
    controlnet.save_pretrained(out, safe_serialization=True)
    return out


BUILDERS = {"sd": build_sd, "sd3": build_sd3}


def main() -> None:
    """Command line: build one tiny pipeline (skipped when the folder already holds one)."""
    parser = argparse.ArgumentParser(prog="python -m worker.tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(BUILDERS), default="sd")
    parser.add_argument("--out", type=Path, default=Path("var/models/tiny-sd"))
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder exists")
    args = parser.parse_args()
    if (args.out / "model_index.json").is_file() and not args.force:
        print(f"{args.out} already holds a pipeline")
        return
    BUILDERS[args.kind](args.out)
    print(f"built tiny {args.kind} pipeline in {args.out}")


if __name__ == "__main__":
    main()
