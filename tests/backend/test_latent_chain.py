"""A latent chain: img2img from a previous picture's final latents (--init_latents) equals
diffusers' txt2img with output_type="latent" handed to its img2img pipeline as `image`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from invoke.backend.job import StepInfo
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from tests.helpers import make_job, pixels, sd_pipeline, smooth_picture


@pytest.fixture(scope="module", params=["tiny", "default"])
def model(request: pytest.FixtureRequest, tiny_model_dir: Path) -> Model:
    """The tests' tiny model, and the embedded default model (acceptance 2 names it)."""
    from invoke.config.settings import EMBEDDED_MODEL_DIR

    folder = tiny_model_dir if request.param == "tiny" else EMBEDDED_MODEL_DIR
    return load_model(folder, device="cpu")


def test_img2img_from_latents_equals_diffusers_latent_chain(model: Model) -> None:
    seen: list[StepInfo] = []
    model.generate(make_job(sampler="ddim", steps=4), on_step=seen.append)
    ours_first = seen[-1].latents.clone()
    second = make_job(
        sampler="ddim", steps=5, strength=0.6, init_image=smooth_picture(), init_latents=ours_first
    )
    ours = model.generate(second)

    common = {"prompt": "a red circle", "negative_prompt": "blue", "guidance_scale": 7.5}
    first = sd_pipeline(model, "ddim", "StableDiffusionPipeline")(
        **common, num_inference_steps=4, height=64, width=64, output_type="latent",
        generator=[torch.Generator().manual_seed(42)], eta=0.0,
    ).images  # fmt: skip
    assert torch.allclose(ours_first.float(), first.float(), atol=1e-4)
    theirs = sd_pipeline(model, "ddim", "StableDiffusionImg2ImgPipeline")(
        **common, image=first, strength=0.6, num_inference_steps=5,
        generator=[torch.Generator().manual_seed(42)], eta=0.0,
    ).images  # fmt: skip
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1
    # The latents were used: encoding the init image instead gives another picture.
    encoded = model.generate(replace(second, init_latents=None))
    assert np.abs(pixels(ours) - pixels(encoded)).max() > 1
