"""ControlNet in our loop against diffusers' ControlNet pipelines (the oracle), on tiny models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from invoke.backend.control import keep_schedule
from invoke.backend.job import Control, Job, Noise
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.errors import InvokeError
from tests.fixtures.tiny_families import controlnet_to_ldm
from tests.fixtures.tiny_models import build_test_controlnet
from tests.helpers import (
    make_job,
    pixels,
    sd_pipeline,
    sdxl_pipeline,
    smooth_picture,
    vae_mean_latents,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine: threads only spin
    return tmp_path_factory.mktemp("controlnet")


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def net(tiny_controlnet_dir: Path) -> Path:
    return tiny_controlnet_dir


@pytest.fixture(scope="module")
def edges() -> Image.Image:
    """A conditioning picture: a white ring on black, as an edge map looks."""
    y, x = np.mgrid[0:64, 0:64]
    ring = np.abs(np.hypot(x - 32, y - 32) - 18) < 2
    return Image.fromarray(np.where(ring, 255, 0).astype(np.uint8)).convert("RGB")


def control(net: Path, image: Image.Image, **changes: object) -> Control:
    weights = net / "diffusion_pytorch_model.safetensors"
    return replace(Control("edges", str(weights), image), **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampler", "weight", "start", "end"),
    [("k_euler", 1.0, 0.0, 1.0), ("ddim", 0.6, 0.2, 0.7), ("k_heun", 1.3, 0.0, 0.5)],
)
def test_txt2img_with_a_controlnet_equals_diffusers_pipeline(
    model: Model,
    net: Path,
    edges: Image.Image,
    sampler: str,
    weight: float,
    start: float,
    end: float,
) -> None:
    """Residuals on both halves of guidance, times the weight, only within start..end (k_heun:
    two UNet calls per step, counted as diffusers counts them)."""
    job = make_job(
        sampler=sampler, steps=5, control=control(net, edges, weight=weight, start=start, end=end)
    )
    ours = model.generate(job)
    theirs = sd_pipeline(
        model, sampler, "StableDiffusionControlNetPipeline", controlnet=model.controlnet[1]
    )(
        prompt="a red circle",
        negative_prompt="blue",
        image=edges,
        num_inference_steps=5,
        guidance_scale=7.5,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(42)],
        controlnet_conditioning_scale=weight,
        control_guidance_start=start,
        control_guidance_end=end,
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1
    plain = model.generate(replace(job, control=None))
    assert np.abs(pixels(ours) - pixels(plain)).max() > 10  # it does guide the picture


def test_img2img_with_a_controlnet_equals_diffusers_pipeline(
    model: Model, net: Path, edges: Image.Image
) -> None:
    picture = smooth_picture()
    job = make_job(
        steps=6, strength=0.6, init_image=picture, control=control(net, edges, weight=0.8)
    )
    ours = model.generate(job)
    pipe = sd_pipeline(
        model, "k_euler", "StableDiffusionControlNetImg2ImgPipeline", controlnet=model.controlnet[1]
    )
    theirs = pipe(
        prompt="a red circle",
        negative_prompt="blue",
        image=vae_mean_latents(pipe, picture),  # ours are the posterior's mean, not a sample
        control_image=edges,
        strength=0.6,
        num_inference_steps=6,
        guidance_scale=7.5,
        generator=[torch.Generator().manual_seed(42)],
        controlnet_conditioning_scale=0.8,
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


def ldm_file(net: Path, model_dir: Path, out: Path) -> Path:
    """The ControlNet folder `net` as one file in the original layout (control_model...)."""
    state = load_file(str(net / "diffusion_pytorch_model.safetensors"))
    unet_config = json.loads((model_dir / "unet" / "config.json").read_text())
    save_file(controlnet_to_ldm(state, unet_config), str(out))
    return out


def test_sdxl_with_a_controlnet_equals_diffusers_pipeline(
    folder: Path, edges: Image.Image, tiny_model_dir: Path, tiny_sdxl_dir: Path
) -> None:
    """The ControlNet gets SDXL's pooled embeddings and size ids, as the UNet does; one file in
    the original layout draws the same."""
    from invoke.backend.noise import image_noise

    sdxl = load_model(tiny_sdxl_dir, device="cpu")
    net = build_test_controlnet(folder / "sdxl-edges", tiny_sdxl_dir)
    ours = sdxl.generate(make_job(steps=3, control=control(net, edges, weight=0.9)))
    noise, _ = image_noise(Noise(42), (4, 8, 8))
    assert sdxl.controlnet is not None
    theirs = sdxl_pipeline(
        sdxl, "k_euler", "StableDiffusionXLControlNetPipeline", controlnet=sdxl.controlnet[1]
    )(
        prompt="a red circle",
        negative_prompt="blue",
        image=edges,
        num_inference_steps=3,
        guidance_scale=7.5,
        width=64,
        height=64,
        latents=noise,
        controlnet_conditioning_scale=0.9,
        output_type="pil",
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1
    single = ldm_file(net, tiny_sdxl_dir, folder / "sdxl-edges.safetensors")
    again = sdxl.generate(make_job(steps=3, control=Control("edges", str(single), edges, 0.9)))
    assert np.array_equal(pixels(again), pixels(ours))
    with pytest.raises(InvokeError, match=r"ControlNet edges \(.*\): made for .* not for"):
        load_model(tiny_model_dir, device="cpu").generate(
            make_job(control=Control("edges", str(single), edges))
        )


@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_a_single_file_draws_what_its_folder_draws(
    folder: Path, model: Model, net: Path, tiny_model_dir: Path, edges: Image.Image, layout: str
) -> None:
    """lllyasviel's and AUTOMATIC1111's files (control_model.input_blocks...), and a diffusers
    state dict saved as one file: the model's UNet config describes them."""
    single = folder / f"{layout}.safetensors"
    if layout == "original":
        ldm_file(net, tiny_model_dir, single)
    else:
        save_file(load_file(str(net / "diffusion_pytorch_model.safetensors")), str(single))
    from_folder = model.generate(make_job(control=control(net, edges)))
    from_file = model.generate(make_job(control=Control("edges", str(single), edges)))
    assert np.array_equal(pixels(from_file), pixels(from_folder))
    lora = folder / "not-a-controlnet.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(InvokeError, match="holds no ControlNet"):
        model.generate(make_job(control=Control("x", str(lora), edges)))


def test_weight_zero_and_an_empty_range_draw_the_plain_picture(
    model: Model, net: Path, edges: Image.Image
) -> None:
    plain = pixels(model.generate(make_job()))
    assert np.array_equal(
        pixels(model.generate(make_job(control=control(net, edges, weight=0)))), plain
    )
    late = control(net, edges, start=0.9, end=1.0)  # 4 steps: no step lies in 0.9..1
    assert keep_schedule(4, 0.9, 1.0) == [False] * 4
    assert np.array_equal(pixels(model.generate(make_job(control=late))), plain)


def test_batch_images_equal_each_seed_alone(model: Model, net: Path, edges: Image.Image) -> None:
    guided = control(net, edges)
    both = model.generate(make_job(noises=(Noise(1), Noise(2)), control=guided))
    alone = model.generate(make_job(noises=(Noise(2),), control=guided))
    assert np.abs(pixels(both[1:]) - pixels(alone)).max() <= 1


def test_inpainting_unet_and_hires_fix_run_with_a_controlnet(
    model: Model, net: Path, edges: Image.Image, tiny_inpainting_dir: Path
) -> None:
    """A 9-channel UNet: the ControlNet reads the 4 latent channels. --hires_fix: the first,
    smaller pass reads the image scaled to its size."""
    inpainting = load_model(tiny_inpainting_dir, device="cpu")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    job = make_job(
        init_image=smooth_picture(), mask=mask, strength=1.0, control=control(net, edges)
    )
    painted = inpainting.generate(job)
    assert (
        np.abs(pixels(painted) - pixels(inpainting.generate(replace(job, control=None)))).max() > 0
    )

    big = Image.fromarray(np.asarray(edges.resize((96, 96)))).convert("RGB")
    hires = make_job(width=96, height=96, first_pass=(64, 64), control=control(net, big))
    out = model.generate(hires)
    assert out[0].size == (96, 96)
    assert np.abs(pixels(out) - pixels(model.generate(replace(hires, control=None)))).max() > 10


def test_a_controlnet_for_another_kind_of_model_is_refused_before_loading(
    folder: Path, model: Model, net: Path, edges: Image.Image
) -> None:
    wide = folder / "wide"
    wide.mkdir(exist_ok=True)
    config = json.loads((net / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "cross_attention_dim": 768}))
    (wide / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    with pytest.raises(
        InvokeError,
        match=r"ControlNet edges \(.*wide\): made for SD 1.x models \(text width 768\), not for",
    ):
        model.generate(make_job(control=control(wide, edges)))
    unet = folder / "not-a-controlnet"
    unet.mkdir(exist_ok=True)
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    (unet / "diffusion_pytorch_model.safetensors").write_bytes(b"never read")
    with pytest.raises(InvokeError, match="holds a UNet2DConditionModel, not a ControlNetModel"):
        model.generate(make_job(control=control(unet, edges)))


def test_a_file_changed_on_disk_is_loaded_again(
    folder: Path, model: Model, tiny_model_dir: Path, edges: Image.Image
) -> None:
    path = build_test_controlnet(folder / "retrained", tiny_model_dir, seed=1)
    first = control(path, edges, stamp=(1, 1))
    before = model.generate(make_job(control=first))
    build_test_controlnet(folder / "retrained", tiny_model_dir, seed=2)
    again = model.generate(make_job(control=first))  # same stamp: the loaded one is kept
    assert np.array_equal(pixels(again), pixels(before))
    after = model.generate(make_job(control=replace(first, stamp=(2, 2))))
    assert not np.array_equal(pixels(after), pixels(before))


def test_kandinsky_refuses_a_controlnet(
    net: Path, edges: Image.Image, tiny_kandinsky_dir: Path
) -> None:
    kandinsky = load_model(tiny_kandinsky_dir, device="cpu")
    job: Job = make_job(sampler="ddim", control=control(net, edges))
    with pytest.raises(InvokeError, match=r"--controlnet: model .* runs diffusers. own pipeline"):
        kandinsky.generate(job)


@pytest.mark.gpu
def test_cuda_controlnet_matches_the_cpu_path(
    tiny_model_dir: Path, model: Model, net: Path, edges: Image.Image
) -> None:
    """On a GPU: the ControlNet in fp16 with fused QKV and channels_last, with a compiled-eligible
    model (a ControlNet line runs the eager UNet), and under --offload, stays within fp16
    tolerance of the CPU picture."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    job = make_job(steps=3, control=control(net, edges, weight=0.9))
    reference = model.generate(job)
    for options in ({"compile": True}, {"offload": True}):
        cuda = load_model(tiny_model_dir, device="cuda", **options)
        assert np.abs(pixels(cuda.generate(job)) - pixels(reference)).max() <= 4, options
