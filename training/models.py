"""Model configurations of the default pipeline (all trained from scratch)."""

from __future__ import annotations

from .dataset import IMAGE_SIZE

LATENT_CHANNELS = 4
VAE_DOWN = 8  # 64x64x3 image <-> 8x8x4 latent
LATENT_SIZE = IMAGE_SIZE // VAE_DOWN
TEXT_DIM = 128


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,
        scaling_factor=1.0,  # replaced by 1/std of the latents after VAE training
    )


def make_text_encoder(vocab_size: int, bos_id: int, eos_id: int, pad_id: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=2 * TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=TEXT_DIM,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )
    return CLIPTextModel(cfg)


def make_unet():
    from diffusers import UNet2DConditionModel

    # A single 8x8 level (the latent is only 8x8): every block of the UNet has
    # cross-attention to the prompt (1 down, 1 mid, 2 up transformer blocks).
    # One level keeps the module count, hence the per-step CPU overhead, low.
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(64,),
        layers_per_block=1,
        attention_head_dim=4,  # diffusers naming: this is the number of heads
        cross_attention_dim=TEXT_DIM,
        norm_num_groups=16,
        transformer_layers_per_block=1,
    )


def make_scheduler_config() -> dict:
    """v-prediction with a zero-terminal-SNR schedule and trailing timesteps.

    Zero terminal SNR matters here: with flat-coloured images the mean colour
    survives the noise at t=T of a standard schedule, the model then learns to
    read colours from the noise instead of from the prompt.
    """
    return dict(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        steps_offset=1,
    )


def count_params(m) -> int:
    return sum(p.numel() for p in m.parameters())
