"""A tiny Stable Diffusion-architecture model with random weights: for tests, never for pictures.

It has every part of SD 1.x (CLIP text encoder, conditional UNet, KL VAE with the 8x scale factor,
SD 1.5's scheduler config), just very small, so the real loading and sampling code runs on it in
milliseconds. Native size 64x64 (8x8 latents).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from invoke.backend.clip_vocab import BOS, EOS, MAX_LENGTH, build_clip_tokenizer

# A few words so common test prompts map to whole tokens; anything else falls back to characters.
WORDS = tuple(
    [
        "a",
        "an",
        "the",
        "of",
        "on",
        "in",
        "with",
        "and",
        "red",
        "green",
        "blue",
        "yellow",
        "black",
        "white",
        "circle",
        "square",
        "triangle",
        "background",
        "cat",
        "dog",
        "cow",
        "house",
        "tree",
        "sky",
        "photo",
        "painting",
        "portrait",
        "landscape",
    ]
)

# SD 1.5's scheduler_config.json as published: the keys it lacks (timestep_spacing...) must stay
# absent so that each sampler uses its own default, as it does for the real model.
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

TEXT_DIM = 32
LATENT_SIZE = 8  # x the VAE's 8 = 64 px


def build_test_model(path: str | Path, seed: int = 0, inpainting: bool = False) -> Path:
    """Write a diffusers folder (StableDiffusionPipeline layout, safetensors); return its path.

    `inpainting`: a 9-channel UNet in a StableDiffusionInpaintPipeline folder, like
    sd-v1-5-inpainting (latents + mask + masked-image latents in).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = build_clip_tokenizer(out / "tokenizer", WORDS)
    vocab = json.loads((out / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))

    # Weights come from torch's global generator inside fork_rng, so the caller's random state
    # is left as it was and the same seed always gives the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = tiny_text_encoder(vocab_size, vocab, "quick_gelu")
        unet = UNet2DConditionModel(
            sample_size=LATENT_SIZE,
            in_channels=9 if inpainting else 4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            # Four blocks: three downsamplings, the 8x scale factor of every SD 1.x/2.x VAE.
            block_out_channels=(8, 16, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=LATENT_SIZE * 8,
            scaling_factor=0.18215,
        )

    # The text encoder is written by hand: transformers' save_pretrained draws a progress bar.
    (out / "text_encoder").mkdir(exist_ok=True)
    text_encoder.config.save_pretrained(out / "text_encoder")
    weights = out / "text_encoder" / "model.safetensors"
    save_file(text_encoder.state_dict(), weights, {"format": "pt"})
    unet.save_pretrained(out / "unet", safe_serialization=True)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    pipeline = "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline"
    write_pipeline_files(out, pipeline)
    return out


def write_pipeline_files(out: Path, pipeline: str = "StableDiffusionPipeline") -> None:
    """The scheduler config (SD 1.5's) and model_index.json of an SD folder whose unet/, vae/,
    text_encoder/ and tokenizer/ are saved already: what makes it a diffusers pipeline folder."""
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER, indent=2))
    from invoke.backend.families.sd import sd_index

    model_index = sd_index(pipeline)
    (out / "model_index.json").write_text(json.dumps(model_index, indent=2))


def build_test_controlnet(path: str | Path, model_dir: str | Path, seed: int = 0) -> Path:
    """A ControlNet for the model in `model_dir` (any family our loop runs), saved as a diffusers
    folder like the hub's: its encoder copied from that model's UNet (diffusers' from_unet), and
    its zero-initialised output convolutions given small random weights, so that it changes the
    picture (a trained one does; a fresh one adds exact zeros)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    vae = json.loads((Path(model_dir) / "vae" / "config.json").read_text(encoding="utf-8"))
    cell = 2 ** (len(vae["block_out_channels"]) - 1)  # pixels per latent cell
    # The conditioning image is read down to the latents' size: one stride-2 layer per halving.
    channels = (16, 32, 96, 256)[: cell.bit_length()]
    zero_initialised = (
        "controlnet_down_blocks",
        "controlnet_mid_block",
        "controlnet_cond_embedding.conv_out",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
        with torch.no_grad():
            for name, parameter in net.named_parameters():
                if name.startswith(zero_initialised):
                    parameter.add_(torch.randn_like(parameter) * 0.3)
    out = Path(path)
    net.save_pretrained(out, safe_serialization=True)
    return out


def build_test_upscaler(path: str | Path, factor: int, seed: int = 0) -> Path:
    """A tiny Stable Diffusion upscaler with random weights, saved as a diffusers folder like the
    hub's: factor 2 is a latent upscaler (StableDiffusionLatentUpscalePipeline, its UNet made of
    the K-diffusion blocks of sd-x2-latent-upscaler), factor 4 a pixel-conditioned one
    (StableDiffusionUpscalePipeline, as stable-diffusion-x4-upscaler). Sides: multiples of 8."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTokenizer

    if factor not in (2, 4):
        raise ValueError(f"factor {factor}: the upscalers are 2x or 4x")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = build_clip_tokenizer(out / "tokenizer", WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    vocab = tokenizer.get_vocab()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = tiny_text_encoder(vocab_size, vocab, "gelu")
        # Three blocks: a 4x VAE (the x4 upscaler's is 4x too; the latent upscaler's is SD's 8x).
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            scaling_factor=0.18215 if factor == 2 else 0.08333,
        )
        if factor == 2:
            unet = latent_upscaler_unet(TEXT_DIM, (32, 64, 64), head_dim=8)
            pipe: Any = StableDiffusionLatentUpscalePipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=EulerDiscreteScheduler(prediction_type="sample"),
            )
        else:
            unet = UNet2DConditionModel(
                block_out_channels=(16, 16, 32),
                layers_per_block=1,
                in_channels=7,  # the latents and the low-resolution picture
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=TEXT_DIM,
                attention_head_dim=8,
                use_linear_projection=True,
                only_cross_attention=(True, True, False),
                num_class_embeds=100,  # the noise level added to the picture (20)
                norm_num_groups=8,
            )
            pipe = StableDiffusionUpscalePipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                low_res_scheduler=DDPMScheduler(),
                scheduler=DDIMScheduler(prediction_type="v_prediction"),
                max_noise_level=350,
            )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def tiny_text_encoder(vocab_size: int, vocab: dict[str, int], hidden_act: str) -> Any:
    """A 2-layer CLIP text encoder TEXT_DIM wide for the handmade vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_LENGTH,
            projection_dim=TEXT_DIM,
            hidden_act=hidden_act,
            bos_token_id=vocab[BOS],
            eos_token_id=vocab[EOS],
            pad_token_id=vocab[EOS],
        )
    )


def latent_upscaler_unet(text_width: int, channels: tuple[int, int, int], head_dim: int) -> Any:
    """An untrained UNet of sd-x2-latent-upscaler's kind (k-diffusion blocks, 1x1 convolutions in
    and out, Fourier time embedding), its size given: latents and the small latents in (8
    channels), the denoised latents and an unused variance channel out (5)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        act_fn="gelu",
        block_out_channels=channels,
        layers_per_block=1,
        time_cond_proj_dim=128 + text_width,  # the noise level's 128 features, the pooled text
        sample_size=None,
        in_channels=8,
        out_channels=5,
        attention_head_dim=head_dim,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
        conv_in_kernel=1,
        conv_out_kernel=1,
        mid_block_type=None,
        cross_attention_dim=text_width,
        norm_num_groups=None,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
    )
