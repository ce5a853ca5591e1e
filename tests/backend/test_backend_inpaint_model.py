"""A 9-channel inpainting UNet (like sd-v1-5-inpainting) against diffusers' inpaint pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.generate import _inpainting_condition
from invoke.backend.job import Job, Noise, StepInfo
from invoke.backend.models import Model, load_model
from invoke.backend.schedulers import make_scheduler
from invoke.backend.testmodel import build_test_model

pytestmark = pytest.mark.filterwarnings("ignore:__array:DeprecationWarning")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Model:
    # tiny_model_dir only for its side effect: torch on one thread (see tests/conftest.py).
    folder = build_test_model(tmp_path_factory.mktemp("models") / "inpaint", inpainting=True)
    return load_model(folder, device="cpu")


def _job(**changes: object) -> Job:
    y, x = np.mgrid[0:64, 0:64]
    init = Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8))
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:40] = 255
    fields: dict = dict(
        prompt="a red circle [blue]", skip_normalize=False, steps=3, cfg_scale=7.5,
        sampler="k_euler_a", width=64, height=64, noises=(Noise(3),), init_image=init,
        mask=Image.fromarray(mask), strength=1.0,
    )  # fmt: skip
    fields.update(changes)
    return Job(**fields)


def test_loaded_as_an_inpainting_model(model: Model) -> None:
    assert model.inpainting
    assert model.native_size == 64


def test_equals_diffusers_inpaint_pipeline_in_the_redrawn_region(model: Model) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    job = _job()
    ours = np.asarray(model.generate(job)[0], dtype=np.int16)
    pipe = StableDiffusionInpaintPipeline(
        vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        unet=model.unet, scheduler=make_scheduler(job.sampler, model.scheduler_config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        masked_latents = _inpainting_condition(model, job)[:, 1:]
    theirs = pipe(
        prompt="a red circle", negative_prompt="blue", image=job.init_image,
        mask_image=job.mask, masked_image_latents=masked_latents, strength=1.0,
        num_inference_steps=3, guidance_scale=7.5, height=64, width=64,
        generator=[torch.Generator().manual_seed(3)],
    ).images[0]  # fmt: skip
    redrawn = np.asarray(job.mask) == 255
    assert np.abs(ours[redrawn] - np.asarray(theirs, dtype=np.int16)[redrawn]).max() <= 1
    init = np.asarray(job.init_image, dtype=np.int16)
    assert np.array_equal(ours[~redrawn], init[~redrawn])


def test_txt2img_and_img2img_steps_on_an_inpainting_model(model: Model) -> None:
    seen: list[StepInfo] = []
    model.generate(_job(init_image=None, mask=None, steps=4), seen.append)
    assert seen[-1].step == 4
    seen.clear()
    model.generate(_job(mask=None, steps=10, strength=0.4), seen.append)
    assert seen[-1].step == 4
