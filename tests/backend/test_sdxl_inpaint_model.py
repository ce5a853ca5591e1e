"""An SDXL 9-channel inpainting UNet (like stable-diffusion-xl-1.0-inpainting-0.1) against
diffusers' StableDiffusionXLInpaintPipeline: SD's inpainting condition with SDXL's conditioning."""

from __future__ import annotations

import json

import pytest
import torch

from invoke.backend.job import StepInfo
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from tests.fixtures.tiny_families import build_test_sdxl
from tests.helpers import diffusers_inpaint, inpaint_job, pixels, redrawn_difference, sdxl_pipeline


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine: threads only spin
    folder = build_test_sdxl(tmp_path_factory.mktemp("models") / "xl-inpaint", inpainting=True)
    return load_model(folder, device="cpu")


def test_loaded_as_an_sdxl_inpainting_model(model: Model) -> None:
    index = json.loads((model.path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLInpaintPipeline"
    assert (model.family, model.inpainting, model.native_size) == ("sdxl", True, 64)
    assert model.force_zeros_for_empty_prompt


@pytest.mark.parametrize(
    "changes",
    [
        {},  # k_euler_a at full strength: the generator feeds the sampler after the noise
        {"prompt": "a red circle", "sampler": "k_euler"},  # an empty negative prompt is zeros
        {"sampler": "k_euler", "steps": 4, "strength": 0.5},  # from the noised init latents
    ],
)
def test_equals_diffusers_xl_inpaint_pipeline_in_the_redrawn_region(
    model: Model, changes: dict[str, object]
) -> None:
    """Both text encoders, pooled embeddings and (h, w, 0, 0, h, w) time ids, with the mask and
    the masked image's latents beside the latents."""
    job = inpaint_job(**changes)
    pipe = sdxl_pipeline(model, job.sampler, "StableDiffusionXLInpaintPipeline")
    theirs = diffusers_inpaint(pipe, job)
    assert redrawn_difference(pixels(model.generate(job)), theirs, job) <= 1


def test_txt2img_on_the_inpainting_model_redraws_everything(model: Model) -> None:
    """No init image, no mask: a black image all redrawn, in diffusers' terms."""
    seen: list[StepInfo] = []
    job = inpaint_job(init_image=None, mask=None, steps=4)
    ours = pixels(model.generate(job, seen.append))
    assert seen[-1].step == 4
    pipe = sdxl_pipeline(model, job.sampler, "StableDiffusionXLInpaintPipeline")
    assert redrawn_difference(ours, diffusers_inpaint(pipe, job), job) <= 1
    assert ours.std() > 10  # a picture, not a flat field
