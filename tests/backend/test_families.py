"""The model families: detected from the files, generating through the same switches, refusing
what they cannot do; precision and memory (fp16 VAE NaN fallback, offload, VAE tiling)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.device import pick_dtype
from invoke.backend.families import FAMILIES, folder_family
from invoke.backend.job import EmbeddingFile, Job, Noise, StepInfo
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.backend.noise import image_noise
from invoke.backend.schedulers import make_scheduler
from invoke.backend.single_file import CONFIG_ROOT
from invoke.errors import InvokeError, ModelError
from tests.helpers import (
    make_job,
    pixels,
    roll_error,
    sdxl_pipeline,
    smooth_picture,
    vae_mean_latents,
)


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir: Path) -> Model:
    return load_model(tiny_sdxl_dir, device="cpu")


@pytest.fixture(scope="module")
def refiner(tiny_refiner_dir: Path) -> Model:
    return load_model(tiny_refiner_dir, device="cpu")


@pytest.fixture(scope="module")
def kandinsky(tiny_kandinsky_dir: Path) -> Model:
    return load_model(tiny_kandinsky_dir, device="cpu")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    return smooth_picture()


def job(**changes: object) -> Job:
    """The shared small job, with 3 steps (the values these tests were written against)."""
    return make_job(**{"steps": 3, **changes})


# -- detection ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd-1", "sd-2", "sd-2-v", "sdxl", "sdxl-refiner"])
def test_shipped_config_folders_are_detected_as_their_family(family: str) -> None:
    folder = CONFIG_ROOT / family
    index = json.loads((folder / "model_index.json").read_text())
    assert folder_family(folder, index) == family


def test_loaded_models_know_their_family(
    tiny_model_dir: Path, sdxl: Model, refiner: Model, kandinsky: Model
) -> None:
    assert load_model(tiny_model_dir, device="cpu").family == "sd-1"
    assert (sdxl.family, refiner.family, kandinsky.family) == (
        "sdxl",
        "sdxl-refiner",
        "kandinsky-2.2",
    )
    assert refiner.text_encoder is None and refiner.text_encoder_2 is not None
    assert set(FAMILIES) >= {sdxl.family, refiner.family, kandinsky.family}


def test_v_prediction_folder_is_sd_2_v_and_samples_with_v(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "v")
    config_file = copy / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    model = load_model(copy, device="cpu")
    assert model.family == "sd-2-v"
    assert make_scheduler("ddim", model.scheduler_config).config.prediction_type == "v_prediction"
    eps = load_model(tiny_model_dir, device="cpu").generate(job(sampler="ddim", steps=2))
    assert not np.array_equal(pixels(model.generate(job(sampler="ddim", steps=2))), pixels(eps))


def test_family_given_that_contradicts_the_folder(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="family sdxl given, but the folder holds sd-1"):
        load_model(tiny_model_dir, device="cpu", family="sdxl")
    with pytest.raises(ModelError, match="family: sd-9 is not one of sd-1"):
        load_model(tiny_model_dir, device="cpu", family="sd-9")


# -- SDXL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "negative"), [("a red circle [blue]", "blue"), ("a red circle", None)]
)
def test_sdxl_txt2img_equals_diffusers_pipeline(
    sdxl: Model, prompt: str, negative: str | None
) -> None:
    """Both text encoders, pooled embeds, time ids; an empty negative prompt is zeros."""
    ours = sdxl.generate(job(prompt=prompt))
    noise, _ = image_noise(Noise(42), (4, 8, 8))
    theirs = sdxl_pipeline(sdxl, "k_euler")(
        prompt="a red circle",
        negative_prompt=negative,
        num_inference_steps=3,
        guidance_scale=7.5,
        width=64,
        height=64,
        latents=noise,
        output_type="pil",
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


@pytest.mark.parametrize("which", ["sdxl", "refiner"])
def test_sdxl_img2img_equals_diffusers_pipeline(
    which: str, sdxl: Model, refiner: Model, picture: Image.Image
) -> None:
    """int(strength * steps) steps from the init latents; the refiner's aesthetic-score ids."""
    model = sdxl if which == "sdxl" else refiner
    steps: list[int] = []
    ours = model.generate(job(init_image=picture, strength=0.5, steps=4), steps.append)
    assert len(steps) == 1 + 2  # the start, then int(0.5 * 4) steps
    pipe = sdxl_pipeline(model, "k_euler", "StableDiffusionXLImg2ImgPipeline")
    theirs = pipe(
        prompt="a red circle",
        negative_prompt="blue",
        image=vae_mean_latents(pipe, picture),  # ours are the posterior's mean, not a sample
        strength=0.5,
        num_inference_steps=4,
        guidance_scale=7.5,
        generator=torch.Generator().manual_seed(42),
        output_type="pil",
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


def test_sdxl_batch_is_its_seeds_alone(sdxl: Model) -> None:
    both = sdxl.generate(job(noises=(Noise(1), Noise(2)), steps=2))
    alone = sdxl.generate(job(noises=(Noise(2),), steps=2))
    assert np.abs(pixels(both[1:]) - pixels(alone)).max() <= 1
    assert not np.array_equal(pixels(both[:1]), pixels(both[1:]))


def test_sdxl_variations_and_samplers_change_the_image(sdxl: Model) -> None:
    plain = pixels(sdxl.generate(job(steps=2)))
    varied = pixels(sdxl.generate(job(steps=2, noises=(Noise(42, ((7, 0.5),)),))))
    other = pixels(sdxl.generate(job(steps=2, sampler="ddim")))
    assert not np.array_equal(plain, varied) and not np.array_equal(plain, other)


def test_sdxl_weights_act_on_both_encoders_and_and_runs(sdxl: Model) -> None:
    from invoke.backend.families.sdxl import encode_prompt
    from invoke.line.prompt_syntax import parse_prompt

    plain, _, pooled, _ = encode_prompt(sdxl, parse_prompt("a red circle"))
    empty, *_ = encode_prompt(sdxl, parse_prompt(""))
    weighted, _, weighted_pooled, _ = encode_prompt(sdxl, parse_prompt("a (red)1.5 circle"))
    red = 2  # start, "a", "red": the features of both encoders, side by side
    expected = empty[:, red] + 1.5 * (plain - empty)[:, red]
    assert torch.allclose(weighted[:, red], expected, atol=1e-4)
    assert torch.allclose(weighted[:, 3:], plain[:, 3:], atol=1e-5)
    assert torch.equal(weighted_pooled, pooled)  # the pooled text embedding is the words'
    cond, uncond, *_ = encode_prompt(sdxl, parse_prompt('("a red circle", "on blue").and()'))
    assert cond.shape[1] == uncond.shape[1] == 154 and not uncond.any()  # zeros: no negative
    image = sdxl.generate(job(prompt='("a red circle", "on blue").and() [green]', steps=2))[0]
    assert image.size == (64, 64)


def test_sdxl_seamless_picture_is_a_torus(sdxl: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    """SDXL runs the shared loop, so --seamless holds there as on SD (test_seamless.py)."""
    seamless = job(steps=2, seamless_axes=("x", "y"))
    # Its tiny UNet downsamples once, as SD's: 2 latent cells are one of its coarse grid.
    latents, picture = roll_error(sdxl, seamless, monkeypatch, 2, 2)
    assert latents <= 1e-3 and picture <= 16
    latents, picture = roll_error(sdxl, job(steps=2), monkeypatch, 2, 2)
    assert latents > 0.5 and picture > 60


def test_sdxl_hires_fix_conditions_each_pass_on_its_own_size(sdxl: Model) -> None:
    seen: list[tuple[tuple[int, ...], list[float]]] = []

    def record(_module: object, args: tuple, kwargs: dict) -> None:
        seen.append((tuple(args[0].shape[-2:]), kwargs["added_cond_kwargs"]["time_ids"][-1]))

    handle = sdxl.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        images = sdxl.generate(job(width=128, height=96, first_pass=(72, 48), steps=2))
    finally:
        handle.remove()
    assert images[0].size == (128, 96)
    # SDXL's size micro-conditioning says the size each pass draws at.
    assert [(size, ids.tolist()) for size, ids in seen] == [
        ((6, 9), [48, 72, 0, 0, 48, 72]),
        ((6, 9), [48, 72, 0, 0, 48, 72]),
        ((12, 16), [96, 128, 0, 0, 96, 128]),
    ]


def test_refiner_refuses_txt2img_and_refines(refiner: Model, picture: Image.Image) -> None:
    with pytest.raises(InvokeError, match=r"\(sdxl-refiner\) only refines images: give an init"):
        refiner.generate(job())
    assert refiner.generate(job(init_image=picture, strength=0.5, steps=4))[0].size == (64, 64)


# -- Kandinsky 2.2 --------------------------------------------------------------------------------


def kjob(**changes: object) -> Job:
    return job(**{"sampler": "ddim", "width": 32, "height": 32, "cfg_scale": 4.0, **changes})


def test_kandinsky_img2img_is_seeded_and_reports_steps(
    kandinsky: Model, picture: Image.Image
) -> None:
    small = picture.resize((32, 32))
    steps: list[StepInfo] = []
    first = kandinsky.generate(kjob(init_image=small, strength=0.7, steps=4), steps.append)
    assert first[0].size == (32, 32) and first[0].mode == "RGB"
    assert [s.step for s in steps] == [1, 2]  # int(0.7 * 4)
    again = kandinsky.generate(kjob(init_image=small, strength=0.7, steps=4))
    other = kandinsky.generate(kjob(init_image=small, strength=0.7, steps=4, noises=(Noise(7),)))
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))
    assert len(kandinsky.generate(kjob(steps=2))) == 1  # txt2img through AutoPipelineForText2Image


def test_kandinsky_seamless_wraps_its_unet_and_movq_for_one_job(kandinsky: Model) -> None:
    # diffusers' pipeline runs the very unet and movq objects the Model holds: the UNet's
    # convolutions wrap and the movq decodes with a circular margin, as on SD.
    before = pixels(kandinsky.generate(kjob(steps=2)))
    seen: list[tuple[int, bool]] = []

    def count_wrapped(info: StepInfo) -> None:
        wrapped = sum("_conv_forward" in vars(m) for m in kandinsky.unet.modules())
        seen.append((wrapped, "decode" in vars(kandinsky.vae)))

    wrapped = kandinsky.generate(kjob(steps=2, seamless_axes=("x", "y")), count_wrapped)
    assert seen and min(n for n, _ in seen) > 10 and all(margin for _, margin in seen)
    assert "decode" not in vars(kandinsky.vae)
    assert not np.array_equal(pixels(wrapped), before)
    assert np.array_equal(pixels(kandinsky.generate(kjob(steps=2))), before)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"noises": (Noise(1, ((2, 0.3),)),)}, r"-v/-V: model kandinsky \(kandinsky-2.2\) cannot"),
        ({"intermediate_every": 1}, "--save_intermediates: .* cannot save intermediates"),
        ({"sampler": "k_lms"}, "-A/--sampler: k_lms is not available .*; use ddim, k_dpmpp_2"),
        ({"prompt": "a cat:0.5 a dog:0.5"}, "takes no weighted sub-prompts"),
        ({"width": 30}, "-W/--width: 30 is not a positive multiple of 4"),
        ({"prompt": '("a cat", "a dog").blend(1, 1)'}, r"\(kandinsky-2.2\) takes no .blend\(\)"),
        (
            {"prompt": "a <ink> cat", "embeddings": (EmbeddingFile("ink", "ink.safetensors"),)},
            r"embeddings: model kandinsky \(kandinsky-2.2\) .* drop <ink> from the prompt",
        ),
        (
            {"width": 64, "height": 64, "first_pass": (32, 32)},
            r"--hires_fix: model kandinsky \(kandinsky-2.2\) runs diffusers' own pipeline",
        ),
        (
            {"init_image": Image.new("RGB", (64, 64)), "init_latents": np.zeros((1, 4, 8, 8))},
            r"--latents: model kandinsky \(kandinsky-2.2\) runs .* drop --latents",
        ),
    ],
)
def test_kandinsky_refuses_what_its_pipeline_cannot_do(
    kandinsky: Model, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvokeError, match=message) as err:
        kandinsky.generate(kjob(**changes))
    assert "\n" not in str(err.value)


def test_kandinsky_reads_weighted_words_as_plain_text(
    kandinsky: Model, caplog: pytest.LogCaptureFixture
) -> None:
    plain = pixels(kandinsky.generate(kjob(prompt="a red cat [blurry]", steps=2)))
    with caplog.at_level(logging.WARNING):
        weighted = kandinsky.generate(kjob(prompt="a (red)1.4 cat [blurry+]", steps=2))
    assert np.array_equal(pixels(weighted), plain)
    assert "(kandinsky-2.2) takes no word weights; using the words as plain text" in caplog.text


def test_kandinsky_refuses_masks(kandinsky: Model, picture: Image.Image) -> None:
    small = picture.resize((32, 32))
    with pytest.raises(InvokeError, match=r"-M/--init_mask: .* cannot inpaint"):
        kandinsky.generate(kjob(init_image=small, mask=Image.new("L", (32, 32), 255)))
    assert kandinsky.default_sampler == "ddim"


# -- precision and memory -------------------------------------------------------------------------


def test_auto_precision_per_device() -> None:
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert pick_dtype("auto", torch.device("mps")) == torch.float16
    assert pick_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16


def test_vae_nan_in_half_precision_decodes_again_in_float32(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_model(tiny_model_dir, device="cpu", precision="bfloat16")
    real_decode = model.vae.decode

    def nan_unless_float32(z: torch.Tensor, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        out = real_decode(z, *args, **kwargs)
        if z.dtype != torch.float32:
            out.sample = torch.full_like(out.sample, float("nan"))
        return out

    monkeypatch.setattr(model.vae, "decode", nan_unless_float32)
    latents = image_noise(Noise(3), (4, 8, 8))[0]
    with caplog.at_level(logging.WARNING):
        first = model.decode(latents)
        second = model.decode(latents)
    said = [r.message for r in caplog.records if "NaN" in r.message]
    assert len(said) == 1 and "float32" in said[0]
    assert np.array_equal(pixels(first), pixels(second))
    assert pixels(first).std() > 0  # a picture, not the black of NaN
    assert next(model.vae.parameters()).dtype == torch.bfloat16  # back for the next encode


def test_offload_on_the_cpu_is_a_no_op(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu", offload=True)
    assert model.offloader is None
    assert model.generate(job(steps=1))[0].size == (64, 64)


def test_vae_tiles_images_well_above_native_size(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    big = model.generate(job(steps=1, width=192, height=192))
    assert big[0].size == (192, 192) and model.vae.use_tiling
    model.generate(job(steps=1))
    assert not model.vae.use_tiling


def test_offloader_brings_each_part_in_as_it_is_used(tiny_model_dir: Path) -> None:
    """The hooks fire for the text encoder, the UNet and the VAE's decode, in that order.

    (On the CPU the moves themselves cost nothing; on a GPU the same hooks move the parts.)
    """
    from invoke.backend.offload import Offloader

    model = load_model(tiny_model_dir, device="cpu")
    parts = {"text_encoder": model.text_encoder, "unet": model.unet, "vae": model.vae}
    offloader = Offloader(parts, torch.device("cpu"))
    used: list[str] = []
    names = {id(part): name for name, part in parts.items()}
    real_use = offloader.use

    def spy(part: object) -> None:
        if not used or used[-1] != names[id(part)]:
            used.append(names[id(part)])
        real_use(part)

    offloader.use = spy  # type: ignore[method-assign]
    model.generate(job(steps=2))
    assert used == ["text_encoder", "unet", "vae"]
    assert offloader.active is model.vae
    offloader.remove()


def test_kandinsky_decoder_folder_without_its_prior(tmp_path: Path, kandinsky: Model) -> None:
    decoder = tmp_path / "decoder"
    for part in ("unet", "scheduler", "movq"):
        shutil.copytree(kandinsky.path / part, decoder / part)
    index = {
        "_class_name": "KandinskyV22Pipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "movq": ["diffusers", "VQModel"],
    }
    (decoder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match=r"a Kandinsky 2\.2 decoder folder needs its prior") as err:
        load_model(decoder, device="cpu")
    assert "\n" not in str(err.value)
