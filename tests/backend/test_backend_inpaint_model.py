"""A 9-channel inpainting UNet (like sd-v1-5-inpainting) against diffusers' inpaint pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from invoke.backend.job import StepInfo
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from tests.helpers import diffusers_inpaint, inpaint_job, pixels, redrawn_difference, sd_pipeline


@pytest.fixture(scope="module")
def model(tiny_inpainting_dir: Path) -> Model:
    return load_model(tiny_inpainting_dir, device="cpu")


def test_loaded_as_an_inpainting_model(model: Model) -> None:
    assert model.inpainting
    assert model.native_size == 64


def test_equals_diffusers_inpaint_pipeline_in_the_redrawn_region(model: Model) -> None:
    job = inpaint_job()
    pipe = sd_pipeline(model, job.sampler, "StableDiffusionInpaintPipeline")
    theirs = diffusers_inpaint(pipe, job)
    assert redrawn_difference(pixels(model.generate(job)), theirs, job) <= 1


def test_txt2img_and_img2img_steps_on_an_inpainting_model(model: Model) -> None:
    seen: list[StepInfo] = []
    model.generate(inpaint_job(init_image=None, mask=None, steps=4), seen.append)
    assert seen[-1].step == 4
    seen.clear()
    model.generate(inpaint_job(mask=None, steps=10, strength=0.4), seen.append)
    assert seen[-1].step == 4
