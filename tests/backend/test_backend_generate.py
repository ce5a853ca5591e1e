"""The generation path against diffusers' own pipelines (the oracle), on the tiny model, on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.generate import encode_image
from invoke.backend.job import Noise, StepInfo
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.errors import InvokeError
from tests.backend.test_backend_schedulers import DISTINCT

# diffusers' own pipelines (the oracle) set up schedulers without our numpy_quiet.
from tests.helpers import (
    diffusers_inpaint,
    inpaint_job,
    make_job,
    pixels,
    redrawn_difference,
    sd_pipeline,
    smooth_picture,
    vae_mean_latents,
)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def init_image() -> Image.Image:
    return smooth_picture()


@pytest.mark.parametrize("sampler", DISTINCT)
def test_txt2img_equals_diffusers_pipeline(model: Model, sampler: str) -> None:
    ours = model.generate(make_job(sampler=sampler, steps=3))
    pipe = sd_pipeline(model, sampler, "StableDiffusionPipeline")
    theirs = pipe(
        prompt="a red circle",
        negative_prompt="blue",
        num_inference_steps=3,
        guidance_scale=7.5,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(42)],
        eta=step_eta(sampler),
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


def step_eta(sampler: str) -> float:
    """The pipelines hand a step that takes `eta` their own 0.0; our loop leaves each scheduler's
    default, which is DDIM's 0.0 and TCD's 0.3 (its authors' gamma)."""
    return 0.3 if sampler == "tcd" else 0.0


@pytest.mark.parametrize("sampler", DISTINCT)
def test_img2img_equals_diffusers_pipeline(
    model: Model, init_image: Image.Image, sampler: str
) -> None:
    job = make_job(sampler=sampler, steps=5, strength=0.6, init_image=init_image)
    ours = model.generate(job)
    pipe = sd_pipeline(model, sampler, "StableDiffusionImg2ImgPipeline")
    # Given latents, the pipeline skips its own VAE encode, which samples the posterior with the
    # generator where we take its mean; these are the mean, from diffusers' VAE (not our code).
    init_latents = vae_mean_latents(pipe, init_image)
    theirs = pipe(
        prompt="a red circle",
        negative_prompt="blue",
        image=init_latents,
        strength=0.6,
        num_inference_steps=5,
        guidance_scale=7.5,
        generator=[torch.Generator().manual_seed(42)],
        eta=step_eta(sampler),
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


@pytest.mark.parametrize(
    ("steps", "strength", "taken"),
    # 0.75 * 10 = 7.5 and 0.66 * 10 = 6.6: int() takes 7 and 6 where round() would take 8 and 7.
    [(10, 0.7, 7), (10, 0.4, 4), (50, 0.4, 20), (29, 0.7, 20), (30, 0.7, 21), (10, 0.75, 7),
     (10, 0.66, 6)],
)  # fmt: skip
@pytest.mark.parametrize("sampler", ["ddim", "k_heun"])
def test_img2img_takes_int_strength_times_steps(
    model: Model, init_image: Image.Image, steps: int, strength: float, taken: int, sampler: str
) -> None:
    seen: list[StepInfo] = []
    job = make_job(sampler=sampler, steps=steps, strength=strength, init_image=init_image)
    model.generate(job, on_step=seen.append)
    assert [info.step for info in seen] == list(range(taken + 1))
    assert all(info.total == taken for info in seen)
    assert job.steps_taken == taken


def test_txt2img_reports_every_step_and_the_start(model: Model) -> None:
    seen: list[StepInfo] = []
    model.generate(make_job(steps=6, sampler="k_dpm_2", noises=(Noise(1), Noise(2))), seen.append)
    assert [info.step for info in seen] == list(range(7))
    assert all(tuple(info.latents.shape) == (2, 4, 8, 8) for info in seen)
    # Steps run from high noise to low: the reported timesteps fall.
    timesteps = [info.timestep for info in seen[1:]]
    assert timesteps == sorted(timesteps, reverse=True)


def test_zero_img2img_steps_is_an_error_saying_what_works(
    model: Model, init_image: Image.Image
) -> None:
    with pytest.raises(InvokeError) as err:
        model.generate(make_job(steps=10, strength=0.05, init_image=init_image))
    message = str(err.value)
    assert "0 steps" in message
    assert "-f 0.10" in message
    assert "-s 20" in message


@pytest.mark.parametrize("sampler", ["k_euler_a", "k_dpmpp_2_a", "k_lms"])
def test_batch_images_equal_each_seed_alone(model: Model, sampler: str) -> None:
    noises = (Noise(7), Noise(8, ((9, 0.3),)), Noise(10))
    batch = model.generate(make_job(sampler=sampler, noises=noises))
    alone = [model.generate(make_job(sampler=sampler, noises=(n,)))[0] for n in noises]
    assert len(batch) == 3
    assert np.abs(pixels(batch) - pixels(alone)).max() <= 2
    assert np.abs(pixels(batch[:1]) - pixels(batch[2:])).max() > 2  # different seeds differ


def test_variations_are_deterministic_and_change_the_image(model: Model) -> None:
    base = model.generate(make_job(noises=(Noise(5),)))
    varied = make_job(noises=(Noise(5, ((6, 0.2), (7, 0.1))),))
    first, second = model.generate(varied), model.generate(varied)
    assert np.array_equal(pixels(first), pixels(second))
    assert np.abs(pixels(first) - pixels(base)).max() > 2
    zero = model.generate(make_job(noises=(Noise(5, ((6, 0.0),)),)))
    assert np.array_equal(pixels(zero), pixels(base))


def test_inpainting_blends_known_latents_and_pastes_unmasked_pixels_back(
    model: Model, init_image: Image.Image
) -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[20:40, 24:44] = 255
    job = make_job(init_image=init_image, mask=Image.fromarray(mask), strength=1.0, steps=4)
    seen: list[StepInfo] = []
    out = pixels(model.generate(job, on_step=seen.append))[0]
    init = np.asarray(init_image, dtype=np.int16)
    # The pixel paste after decoding: true by construction, whatever the denoising did.
    assert np.array_equal(out[mask == 0], init[mask == 0])
    assert np.abs(out[mask == 255] - init[mask == 255]).mean() > 10
    # The latent blend: every latent cell the hole does not touch (8x8 pixels each) ends as the
    # init's own latents, and the cells it covers are redrawn.
    kept = torch.ones(8, 8, dtype=torch.bool)
    kept[20 // 8 : (40 + 7) // 8, 24 // 8 : (44 + 7) // 8] = False
    final, known = seen[-1].latents[0], encode_image(model, init_image)[0]
    assert torch.allclose(final[:, kept], known[:, kept], atol=1e-5)
    assert (final[:, ~kept] - known[:, ~kept]).abs().mean() > 0.1


def test_negative_prompt_and_weights_change_the_image(model: Model) -> None:
    plain = pixels(model.generate(make_job(prompt="a red circle")))
    negative = pixels(model.generate(make_job(prompt="a red circle [blue]")))
    weighted = pixels(model.generate(make_job(prompt="a red circle:0.3 a blue square:0.7")))
    assert np.abs(plain - negative).max() > 2
    assert np.abs(plain - weighted).max() > 2


def test_decode_and_preview_of_the_final_latents(model: Model) -> None:
    seen: list[StepInfo] = []
    images = model.generate(make_job(noises=(Noise(1), Noise(2))), seen.append)
    final = seen[-1].latents
    assert np.array_equal(pixels(model.decode(final)), pixels(images))
    previews = model.preview(final)
    assert [p.size for p in previews] == [(64, 64), (64, 64)]
    assert all(p.mode == "RGB" for p in previews)


def test_size_must_be_a_multiple_of_the_vae_factor(model: Model) -> None:
    with pytest.raises(InvokeError, match="-W/--width: 60 is not a positive multiple of 8"):
        model.generate(make_job(width=60))


def test_mask_without_init_image_is_an_error(model: Model) -> None:
    with pytest.raises(InvokeError, match="-M/--init_mask"):
        model.generate(make_job(mask=Image.new("L", (64, 64), 255)))


def test_cfg_scale_one_skips_guidance_like_diffusers(model: Model) -> None:
    ours = model.generate(make_job(cfg_scale=1.0, prompt="a red circle", sampler="ddim"))
    pipe = sd_pipeline(model, "ddim", "StableDiffusionPipeline")
    theirs = pipe(
        prompt="a red circle",
        num_inference_steps=4,
        guidance_scale=1.0,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(42)],
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


@pytest.mark.parametrize("sampler", ["ddim", "plms"])
def test_inpaint_blend_equals_diffusers_inpaint_pipeline(model: Model, sampler: str) -> None:
    """A 4-channel model inpaints by laying the init latents, noised to the next step's level,
    over the kept region after each step, as diffusers' inpaint pipeline does for such a UNet.
    ddim and plms: their add_noise reads the timestep it is given, where the k-samplers' read
    their step index, so only these see the blend's noise level. Below full strength: at full
    strength diffusers starts a 4-channel UNet from pure noise, we from the init latents noised
    to the first timestep (as img2img does)."""
    job = inpaint_job(sampler=sampler, steps=5, strength=0.75)
    ours = pixels(model.generate(job))
    pipe = sd_pipeline(model, sampler, "StableDiffusionInpaintPipeline")
    assert redrawn_difference(ours, diffusers_inpaint(pipe, job), job) <= 1
