"""-U's upscalers (invoke.backend.upscale) against diffusers' own upscale pipelines, on tiny
random upscalers loaded from their folders as the hub's are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.upscale import Upscaler
from invoke.config.libraries import describe_upscaler as describe
from invoke.errors import InvokeError
from tests.helpers import smooth_picture

CPU = torch.device("cpu")


def picture() -> Image.Image:
    """64x64, the default model's size: a smooth ramp with a square, so that enlargements differ."""
    image = smooth_picture().resize((64, 64))
    image.paste((220, 40, 40), (16, 16, 40, 40))
    return image


def array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_the_latent_upscaler_draws_what_diffusers_pipeline_draws(tiny_upscalers: Path) -> None:
    """Ours at strength 1 is the pipeline's picture at the model card's 20 steps, no guidance,
    seeded on the CPU by the image's seed."""
    from diffusers import StableDiffusionLatentUpscalePipeline

    folder = tiny_upscalers / "sd-x2-latent-upscaler"
    steps = []
    ours = Upscaler(folder, CPU, torch.float32).upscale(
        picture(),
        prompt="a red square",
        negative="",
        seed=11,
        strength=1.0,
        on_step=lambda step, total: steps.append((step, total)),
    )
    pipe = StableDiffusionLatentUpscalePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        prompt="a red square",
        image=picture(),
        num_inference_steps=20,
        guidance_scale=0.0,
        generator=torch.Generator("cpu").manual_seed(11),
    ).images[0]
    assert ours.size == (128, 128)
    assert np.array_equal(array(ours), array(theirs))
    assert steps == [(n, 20) for n in range(1, 21)]


def test_the_x4_upscaler_draws_what_diffusers_pipeline_draws(
    tiny_upscalers: Path, quick_x4: None
) -> None:
    """With guidance, the negative prompt counts; the picture's noise level is diffusers' 20."""
    from diffusers import StableDiffusionUpscalePipeline

    folder = tiny_upscalers / "stable-diffusion-x4-upscaler"
    upscaler = Upscaler(folder, CPU, torch.float32)
    ours = upscaler.upscale(picture(), prompt="a red square", negative="blue", seed=3, strength=1.0)
    other_negative = upscaler.upscale(
        picture(), prompt="a red square", negative="green", seed=3, strength=1.0
    )
    pipe = StableDiffusionUpscalePipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        prompt="a red square",
        negative_prompt="blue",
        image=picture(),
        num_inference_steps=3,
        guidance_scale=9.0,
        noise_level=20,
        generator=torch.Generator("cpu").manual_seed(3),
    ).images[0]
    assert ours.size == (256, 256)
    assert np.array_equal(array(ours), array(theirs))
    assert not np.array_equal(array(ours), array(other_negative))


def test_strength_blends_the_upscale_over_a_lanczos_enlargement(tiny_upscalers: Path) -> None:
    """InvokeAI's -U strength: 0 is the plain enlargement, 1 the upscaler's picture, and between
    them each pixel is that mix."""
    upscaler = Upscaler(tiny_upscalers / "sd-x2-latent-upscaler", CPU, torch.float32)
    made = {
        strength: array(
            upscaler.upscale(picture(), prompt="a cat", negative="", seed=5, strength=strength)
        )
        for strength in (0.0, 0.25, 1.0)
    }
    lanczos = array(picture().resize((128, 128), Image.Resampling.LANCZOS))
    assert np.array_equal(made[0.0], lanczos)
    assert not np.array_equal(made[1.0], lanczos)
    mix = lanczos + 0.25 * (made[1.0] - lanczos)
    assert np.abs(made[0.25] - mix).max() <= 1


def test_sides_the_upscaler_cannot_take_are_refused_before_it_runs(tiny_upscalers: Path) -> None:
    upscaler = Upscaler(
        tiny_upscalers / "sd-x2-latent-upscaler", CPU, torch.float32, name="x2-test"
    )
    with pytest.raises(InvokeError) as caught:
        upscaler.upscale(
            Image.new("RGB", (60, 64)), prompt="a cat", negative="", seed=1, strength=1
        )
    assert str(caught.value) == (
        "-U 2: the upscaler x2-test takes sides that are multiples of 8; 60x64 is not "
        "(give -W/-H that are)"
    )


def test_the_factor_and_side_multiple_come_from_the_config_files(tmp_path: Path) -> None:
    """sd-x2-latent-upscaler's and stable-diffusion-x4-upscaler's own configs (the parts that
    matter): 2x on sides of 32 (an 8x VAE, then a UNet that halves three times) and 4x on sides
    of 8 (a 4x VAE, a UNet on latents the picture's size)."""
    for name, kind, vae_blocks, unet_blocks in (
        ("x2", "StableDiffusionLatentUpscalePipeline", 4, 4),
        ("x4", "StableDiffusionUpscalePipeline", 3, 4),
    ):
        folder = tmp_path / name
        (folder / "unet").mkdir(parents=True)
        (folder / "vae").mkdir()
        (folder / "model_index.json").write_text(json.dumps({"_class_name": kind}))
        unet = {"down_block_types": ["KDownBlock2D"] * unet_blocks}
        (folder / "unet" / "config.json").write_text(json.dumps(unet))
        vae = {"block_out_channels": [128] * vae_blocks}
        (folder / "vae" / "config.json").write_text(json.dumps(vae))
    assert describe(tmp_path / "x2") == ("StableDiffusionLatentUpscalePipeline", 2, 32)
    assert describe(tmp_path / "x4") == ("StableDiffusionUpscalePipeline", 4, 8)


def test_a_model_folder_is_no_upscaler(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(InvokeError) as caught:
        describe(tiny_model_dir)
    assert str(caught.value) == (
        f"upscaler {tiny_model_dir}: is a StableDiffusionPipeline, not an upscaler (a "
        "StableDiffusionLatentUpscalePipeline or StableDiffusionUpscalePipeline folder, as "
        "stabilityai/sd-x2-latent-upscaler and stabilityai/stable-diffusion-x4-upscaler)"
    )
    with pytest.raises(InvokeError) as caught:
        describe(tmp_path)
    assert str(caught.value) == (
        f"upscaler {tmp_path}: has no model_index.json; give a diffusers folder (hf download "
        "stabilityai/sd-x2-latent-upscaler saves one)"
    )


def test_out_of_memory_is_one_line_saying_what_to_try(tiny_upscalers: Path) -> None:
    upscaler = Upscaler(tiny_upscalers / "stable-diffusion-x4-upscaler", CPU, torch.float32)

    def too_big(**kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 24.00 GiB")

    upscaler.pipeline = too_big
    with pytest.raises(InvokeError) as caught:
        upscaler.upscale(picture(), prompt="a cat", negative="", seed=1, strength=1)
    assert str(caught.value) == (
        "-U 4: out of memory upscaling 64x64 to 256x256 on cpu; try -U 2, a smaller -W/-H, or "
        "--offload"
    )
