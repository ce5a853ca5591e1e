"""--refiner: the SDXL base runs the schedule down to --refiner_start and hands its latents (no
decode) to the refiner, which finishes from there. The oracle is diffusers' own hand-off: the base
pipeline with denoising_end and output_type="latent", then the img2img (refiner) pipeline with
denoising_start on those latents."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.job import Job, Noise, Refiner
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.backend.noise import image_noise
from invoke.errors import InvokeError
from invoke.outputs.foreign import _command_from_sd_metadata
from tests.helpers import make_job, pixels, sdxl_pipeline, smooth_picture, vae_mean_latents


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir: Path) -> Model:
    return load_model(tiny_sdxl_dir, device="cpu")


@pytest.fixture(scope="module")
def refiner(tiny_refiner_dir: Path) -> Model:
    return load_model(tiny_refiner_dir, device="cpu")


def job(**changes: object) -> Job:
    return make_job(**{"steps": 5, "refiner": Refiner("refiner", 0.8), **changes})


def diffusers_handoff(
    base: Model, refiner: Model, at: float, sampler: str = "k_euler", **settings: object
) -> list:
    """diffusers' base pipeline to `at` (latents out), then its refiner pipeline from `at`."""
    common = {
        "prompt": "a red circle",
        "negative_prompt": "blue",
        "num_inference_steps": 5,
        "guidance_scale": 7.5,
    }
    if "image" in settings:
        first = sdxl_pipeline(base, sampler, "StableDiffusionXLImg2ImgPipeline")
        settings["image"] = vae_mean_latents(first, settings["image"])
    else:
        first = sdxl_pipeline(base, sampler)
        settings["latents"], _ = image_noise(Noise(42), (4, 8, 8))
    latents = first(
        **common,
        **settings,
        denoising_end=at,
        output_type="latent",
        generator=torch.Generator().manual_seed(42),
    ).images
    second = sdxl_pipeline(refiner, sampler, "StableDiffusionXLImg2ImgPipeline")
    return second(
        **common,
        image=latents,
        denoising_start=at,
        output_type="pil",
        generator=torch.Generator().manual_seed(42),
    ).images


@pytest.mark.parametrize("at", [0.8, 0.5])
def test_refined_txt2img_equals_diffusers_handoff(sdxl: Model, refiner: Model, at: float) -> None:
    steps: list[int] = []
    refined = job(refiner=Refiner("refiner", at))
    ours = sdxl.generate(refined, lambda i: steps.append(i.step), None, refiner)
    theirs = diffusers_handoff(sdxl, refiner, at)
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1
    # One count through both parts: the base's steps, then the refiner's, 5 in all.
    assert steps == [0, 1, 2, 3, 4, 5]
    # And the refiner made a difference: the base alone to the end is another picture.
    alone = sdxl.generate(job(refiner=None))
    assert np.abs(pixels(ours) - pixels(alone)).max() > 1


def test_refined_img2img_splits_the_strength_schedule(sdxl: Model, refiner: Model) -> None:
    picture = smooth_picture()
    ours = sdxl.generate(job(init_image=picture, strength=0.8), None, None, refiner)
    theirs = diffusers_handoff(sdxl, refiner, 0.8, image=picture, strength=0.8)
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


def test_refined_batch_is_its_seeds_alone(sdxl: Model, refiner: Model) -> None:
    both = sdxl.generate(job(noises=(Noise(1), Noise(2))), None, None, refiner)
    alone = sdxl.generate(job(noises=(Noise(2),)), None, None, refiner)
    assert np.abs(pixels(both[1:]) - pixels(alone)).max() <= 1


def test_refiner_refusals(sdxl: Model, refiner: Model, tiny_model_dir: Path) -> None:
    sd = load_model(tiny_model_dir, device="cpu")
    with pytest.raises(InvokeError, match="a refiner takes over from an SDXL base"):
        sd.prepare(job())
    with pytest.raises(InvokeError, match="give an SDXL refiner"):
        sdxl.generate(job(), None, None, sd)
    with pytest.raises(InvokeError, match=r"-s 1 leaves the (base|refiner) no step"):
        sdxl.prepare(job(steps=1))
    with pytest.raises(InvokeError, match="cannot be combined with --hires_fix"):
        sdxl.prepare(job(width=128, height=128, first_pass=(64, 64)))
    mask = Image.new("L", (64, 64), 255)
    with pytest.raises(InvokeError, match="cannot be combined with -M"):
        sdxl.prepare(job(init_image=smooth_picture(), mask=mask))


# -- the line: --refiner NAME [--refiner_start F] through a session --------------------------------


def new_session(outdir: Path, model: Path, **settings: object):
    from invoke.config.settings import Settings
    from invoke.session import Session
    from invoke.shell.report import TerminalReporter

    return Session(
        Settings(outdir=outdir, model=str(model), **settings),
        reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO(), progress=False),
    )


def png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        image.load()
        return dict(image.text)


def test_a_refined_line_stores_the_command_that_remakes_it(
    tmp_path: Path, tiny_sdxl_dir: Path, tiny_refiner_dir: Path
) -> None:
    from invoke.line.parse import parse_request

    # The refiner stays loaded beside the base even where only one model would be kept.
    session = new_session(tmp_path, tiny_sdxl_dir, max_loaded_models=1)
    line = f"a red circle -s 5 -S 42 -W 64 -H 64 -n 2 -v 0.3 --refiner {tiny_refiner_dir}"
    canonical = session.canonical(parse_request(line))
    assert f"--refiner {tiny_refiner_dir} --refiner_start 0.8" in canonical
    made = session.generate(parse_request(line))
    assert len(made) == 2
    for path in made:
        text = png_text(path)
        assert "--refiner_start 0.8" in text["Dream"]
        metadata = json.loads(text["sd-metadata"])["image"]
        assert (metadata["refiner"], metadata["refiner_start"]) == (str(tiny_refiner_dir), 0.8)
        # sd-metadata alone (the Dream chunk gone) still reads back as the same command.
        meta = json.loads(text["sd-metadata"])
        assert _command_from_sd_metadata(meta) == text["Dream"]
        assert f"Refiner: {tiny_refiner_dir.name}, Refiner switch at: 0.8" in text["parameters"]
        [again] = session.generate(parse_request(text["Dream"]))
        assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(path)))
    assert len(session.models.loaded) == 2  # base and refiner, each loaded once
    # The refiner made the picture: without it the same seed draws another.
    [plain] = session.generate(
        parse_request(line.split(" --refiner")[0].replace("-n 2 -v 0.3", ""))
    )
    assert not np.array_equal(np.asarray(Image.open(plain)), np.asarray(Image.open(made[0])))


def test_refiner_line_refusals(
    tmp_path: Path, tiny_model_dir: Path, tiny_refiner_dir: Path
) -> None:
    from invoke.errors import ParseError
    from invoke.line.parse import parse_request

    session = new_session(tmp_path, tiny_model_dir)
    with pytest.raises(InvokeError, match="a refiner takes over from an SDXL base"):
        session.generate(parse_request(f"a red circle -s 5 --refiner {tiny_refiner_dir}"))
    assert not list(tmp_path.glob("*.png"))  # nothing reserved, nothing written
    with pytest.raises(InvokeError, match="--refiner: nope is neither a model"):
        session.canonical(parse_request("a red circle --refiner nope"))
    for start in ("0", "1", "1.5"):
        with pytest.raises(ParseError, match="--refiner_start"):
            parse_request(f"a red circle --refiner x --refiner_start {start}").validate()
    with pytest.raises(ParseError, match="only means something with --refiner"):
        parse_request("a red circle --refiner_start 0.5").validate()


@pytest.mark.parametrize("sampler", ["ddim", "k_heun"])
def test_other_samplers_split_as_diffusers_does(sdxl: Model, refiner: Model, sampler: str) -> None:
    """DDIM's timesteps; Heun's second order, whose refiner part takes one more evaluation."""
    ours = sdxl.generate(job(sampler=sampler), None, None, refiner)
    theirs = diffusers_handoff(sdxl, refiner, 0.8, sampler)
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1
