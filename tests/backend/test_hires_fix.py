"""--hires_fix (InvokeAI's txt2img2img) on the tiny model: the two passes, their sizes, seeds, the
step count, the speed bookkeeping, and diffusers' pipelines as the oracle for the whole thing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from invoke.backend import speed
from invoke.backend.job import (
    Job,
    Noise,
    StepInfo,
    hires_first_pass,
    second_pass_noise,
)
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.errors import InvokeError
from tests.helpers import make_job, pixels, sd_pipeline

# The tiny model is native 64x64: 128x96 starts at 72x48 (latents 9x6), then 128x96 (16x12).
FIRST = (72, 48)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


def hires_job(**changes: object) -> Job:
    return make_job(**{"width": 128, "height": 96, "first_pass": FIRST, **changes})


@contextmanager
def unet_inputs(model: Model) -> Iterator[list[tuple[int, ...]]]:
    """The shape of every latent batch the UNet is called with."""
    shapes: list[tuple[int, ...]] = []
    handle = model.unet.register_forward_pre_hook(
        lambda _module, args: shapes.append(tuple(args[0].shape))
    )
    try:
        yield shapes
    finally:
        handle.remove()


def test_first_pass_size_follows_invokeai() -> None:
    assert hires_first_pass(128, 96, (64, 64), 8) == FIRST
    assert hires_first_pass(128, 128, (64, 64), 8) == (64, 64)
    # InvokeAI 2.3's numbers for SD 1.5: the native area at the aspect, floored to the cell.
    assert hires_first_pass(1024, 768, (512, 512), 8) == (584, 440)
    assert hires_first_pass(2048, 1024, (1024, 1024), 8) == (1448, 720)
    # The short side stays at least half native: a wide picture starts wide, not as a strip.
    assert hires_first_pass(3072, 512, (512, 512), 8) == (1536, 256)  # not (1254, 208)
    # No larger than native by area, or nothing smaller to start from: one pass.
    for width, height in ((64, 64), (48, 64), (128, 32), (4096, 128)):
        assert hires_first_pass(width, height, (64, 64) if width < 200 else (512, 512), 8) is None


def test_first_pass_runs_small_then_the_second_at_full_size(model: Model) -> None:
    job = hires_job(steps=6, strength=0.5)
    with unet_inputs(model) as shapes:
        images = model.generate(job)
    assert [image.size for image in images] == [(128, 96)]
    # Guidance doubles the batch; 6 steps at 9x6 latents, then int(0.5 * 6) = 3 at 16x12.
    assert shapes == [(2, 4, 6, 9)] * 6 + [(2, 4, 12, 16)] * 3


def test_progress_runs_through_both_passes(model: Model) -> None:
    seen: list[StepInfo] = []
    job = hires_job(steps=5, strength=0.8)
    model.generate(job, seen.append)
    assert job.steps_taken == 5 + 4
    # One report per step, numbered on across the passes; the second pass's start is no step.
    assert [info.step for info in seen] == list(range(10))
    assert all(info.total == 9 for info in seen)
    sizes = [tuple(info.latents.shape[-2:]) for info in seen]
    assert sizes == [(6, 9)] * 6 + [(12, 16)] * 4


@pytest.mark.parametrize("sampler", ["k_lms", "k_euler_a", "ddim"])
def test_equals_diffusers_txt2img_then_img2img_on_upscaled_latents(
    model: Model, sampler: str
) -> None:
    """The oracle: diffusers' txt2img at the first-pass size (latents out), bilinear upscale,
    then diffusers' img2img on those latents with the second pass's seed."""
    ours = model.generate(hires_job(sampler=sampler, steps=4, strength=0.75))
    text = sd_pipeline(model, sampler, "StableDiffusionPipeline")
    common = {"prompt": "a red circle", "negative_prompt": "blue", "guidance_scale": 7.5}
    small = text(
        **common,
        num_inference_steps=4,
        width=FIRST[0],
        height=FIRST[1],
        generator=[torch.Generator().manual_seed(42)],
        output_type="latent",
    ).images
    upscaled = torch.nn.functional.interpolate(small, size=(12, 16), mode="bilinear")
    again = sd_pipeline(model, sampler, "StableDiffusionImg2ImgPipeline")
    second_seed = second_pass_noise(Noise(42)).seed
    theirs = again(
        **common,
        image=upscaled,
        strength=0.75,
        num_inference_steps=4,
        generator=[torch.Generator().manual_seed(second_seed)],
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


@pytest.mark.parametrize("sampler", ["k_euler_a", "k_lms"])
def test_batch_images_equal_each_seed_alone(model: Model, sampler: str) -> None:
    noises = (Noise(7), Noise(8, ((9, 0.3),)), Noise(10))
    batch = model.generate(hires_job(sampler=sampler, noises=noises, steps=3))
    alone = [model.generate(hires_job(sampler=sampler, noises=(n,), steps=3))[0] for n in noises]
    assert np.abs(pixels(batch) - pixels(alone)).max() <= 2
    assert np.abs(pixels(batch[:1]) - pixels(batch[2:])).max() > 2


def test_second_pass_noise_is_the_images_own_and_fixed() -> None:
    noise = Noise(5, ((6, 0.2), (7, 0.1)))
    second = second_pass_noise(noise)
    assert second == second_pass_noise(noise)
    assert [w for _, w in second.variations] == [0.2, 0.1]  # the same recipe, other seeds
    seeds = {second.seed, *(s for s, _ in second.variations)}
    assert not seeds & {5, 6, 7}
    assert len({second_pass_noise(Noise(s)).seed for s in range(1000)}) == 1000


def test_variations_change_the_picture_and_remake_it(model: Model) -> None:
    base = pixels(model.generate(hires_job(noises=(Noise(5),), steps=3)))
    varied = hires_job(noises=(Noise(5, ((6, 0.3),)),), steps=3)
    first, second = pixels(model.generate(varied)), pixels(model.generate(varied))
    assert np.array_equal(first, second)
    assert np.abs(first - base).max() > 2


def test_differs_from_plain_txt2img_at_the_same_size(model: Model) -> None:
    plain = pixels(model.generate(hires_job(first_pass=None, steps=3)))
    fixed = pixels(model.generate(hires_job(steps=3)))
    assert plain.shape == fixed.shape
    assert np.abs(plain - fixed).max() > 2


def test_zero_second_pass_steps_names_the_switch(model: Model) -> None:
    with pytest.raises(InvokeError, match=r"^--hires_fix: -f/--strength: 0.05 with -s 10"):
        model.generate(hires_job(steps=10, strength=0.05))


def test_a_first_pass_that_is_no_smaller_is_refused(model: Model) -> None:
    with pytest.raises(InvokeError, match="--hires_fix: first pass side 136"):
        model.generate(hires_job(first_pass=(136, 48)))


def test_each_pass_counts_toward_its_own_shape(tiny_model_dir: Path) -> None:
    fresh = load_model(tiny_model_dir, device="cpu")
    fresh.generate(hires_job(steps=2))
    # Eager time is kept per UNet shape: the small pass's and the full-size pass's, apart.
    assert set(speed._state(fresh).eager_seconds) == {(2, 4, 6, 9, 77), (2, 4, 12, 16, 77)}


@pytest.mark.slow  # torch.compile in this process: 4-10 s; CI runs it
def test_compile_path_with_the_eager_backend_captures_both_shapes_and_keeps_the_picture(
    tiny_model_dir: Path, model: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "eager"})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    compiled = load_model(tiny_model_dir, device="cpu", compile=True)
    job = hires_job(sampler="ddim", steps=2)
    images = compiled.generate(job)
    assert speed._state(compiled).bought == {(2, 4, 6, 9, 77), (2, 4, 12, 16, 77)}
    assert np.abs(pixels(images) - pixels(model.generate(job))).max() <= 1


def test_latent_upscale_is_bilinear_and_wraps_where_the_picture_does() -> None:
    from invoke.backend.generate import upscale_latents

    torch.manual_seed(0)
    small = torch.randn(2, 4, 9, 6)
    for size in ((16, 12), (12, 11), (9, 6)):
        expected = torch.nn.functional.interpolate(small, size=size, mode="bilinear")
        assert torch.allclose(upscale_latents(small, *size), expected, atol=1e-5)
    # --seamless: the edges blend with the opposite edge, as if the latents were tiled around.
    around = small.repeat(1, 1, 3, 3)
    tiled = torch.nn.functional.interpolate(around, size=(54, 36), mode="bilinear")
    wrapped = upscale_latents(small, 18, 12, ("x", "y"))
    assert torch.allclose(wrapped, tiled[..., 18:36, 12:24], atol=1e-5)
    only_x = upscale_latents(small, 18, 12, ("x",))
    assert torch.allclose(only_x[..., 1:-1, :], wrapped[..., 1:-1, :], atol=1e-5)
    assert not torch.allclose(only_x[..., :1, :], wrapped[..., :1, :], atol=1e-3)
