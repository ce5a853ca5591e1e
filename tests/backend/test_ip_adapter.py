"""IP-Adapter (image prompts) in our loop against diffusers' pipeline with `load_ip_adapter`
(the oracle), on the tiny model and a tiny adapter built offline."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from invoke.backend.job import ImagePrompt
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.errors import InvokeError
from tests.fixtures.tiny_models import IP_ADAPTER_FILE
from tests.helpers import make_job, pixels, sd_pipeline, smooth_picture, vae_mean_latents


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """The image prompt: a yellow disc on purple, 48x40 (the encoder's processor sizes it)."""
    y, x = np.mgrid[0:40, 0:48]
    disc = np.hypot(x - 24, y - 20) < 12
    rgb = np.where(disc[..., None], [230, 210, 20], [90, 30, 120]).astype(np.uint8)
    return Image.fromarray(rgb)


def prompt(adapter: Path, image: Image.Image, weight: float = 1.0) -> ImagePrompt:
    stat = adapter.stat()
    return ImagePrompt(
        "tiny",
        str(adapter),
        str(adapter.parent / "image_encoder"),
        image,
        weight,
        (stat.st_size, stat.st_mtime_ns),
    )


def adapted(pipe: Any, adapter: Path, weight: float, **call: object) -> np.ndarray:
    """`pipe` (a diffusers pipeline) run on the tests' prompt, seed 42 unless `call` says, with
    the adapter loaded by diffusers' own loader, offline, at `weight`; unloaded again so that
    the model's UNet is as it was."""
    pipe.load_ip_adapter(
        str(adapter.parent),
        subfolder="",
        weight_name=adapter.name,
        image_encoder_folder="image_encoder",
        local_files_only=True,
    )
    try:
        pipe.set_ip_adapter_scale(weight)
        call = {"generator": [torch.Generator().manual_seed(42)], **call}
        images = pipe(
            prompt="a red circle", negative_prompt="blue", guidance_scale=7.5, **call
        ).images
    finally:
        pipe.unload_ip_adapter()
    return pixels(images)


def diffusers_pictures(model: Model, adapter: Path, weight: float, **call: object) -> np.ndarray:
    """diffusers' own SD pipeline on the model's parts with the adapter (see adapted)."""
    pipeline = "StableDiffusionImg2ImgPipeline" if "strength" in call else "StableDiffusionPipeline"
    return adapted(
        sd_pipeline(model, "k_euler", pipeline, image_encoder=None), adapter, weight, **call
    )


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_txt2img_with_an_image_prompt_equals_diffusers_pipeline(
    model: Model, tiny_ip_adapter_file: Path, picture: Image.Image, weight: float
) -> None:
    """The same seed, sampler and adapter give the same picture as diffusers' pipeline with
    load_ip_adapter + ip_adapter_image, and the weight is its adapter scale."""
    job = make_job(steps=5, image_prompt=prompt(tiny_ip_adapter_file, picture, weight))
    ours = pixels(model.generate(job))
    theirs = diffusers_pictures(
        model,
        tiny_ip_adapter_file,
        weight,
        ip_adapter_image=picture,
        num_inference_steps=5,
        height=64,
        width=64,
    )
    assert np.abs(ours - theirs).max() <= 1
    plain = pixels(model.generate(replace(job, image_prompt=None)))
    assert np.abs(ours - plain).max() > 10  # the picture does prompt
    # The Job is plain data: another process that has the model draws the same from a copy.
    assert np.array_equal(pixels(model.generate(pickle.loads(pickle.dumps(job)))), ours)


def test_an_ip_adapter_plus_equals_diffusers_pipeline(
    model: Model, picture: Image.Image, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """IP-Adapter Plus: its resampler reads the image encoder's hidden states, and the
    unconditional half gets a black picture's (not zeros), as diffusers encodes them."""
    from tests.fixtures.tiny_models import build_test_ip_adapter

    adapter = build_test_ip_adapter(tmp_path / "plus", tiny_model_dir, plus=True)
    job = make_job(steps=4, image_prompt=prompt(adapter, picture, 0.8))
    ours = pixels(model.generate(job))
    assert model.ip_adapter is not None and not model.ip_adapter[1].plain
    theirs = diffusers_pictures(
        model, adapter, 0.8, ip_adapter_image=picture, num_inference_steps=4, height=64, width=64
    )
    assert np.abs(ours - theirs).max() <= 1
    plain = pixels(model.generate(replace(job, image_prompt=None)))
    assert np.abs(ours - plain).max() > 10


def test_img2img_and_a_batch_with_an_image_prompt_equal_diffusers(
    model: Model, tiny_ip_adapter_file: Path, picture: Image.Image
) -> None:
    """img2img, two pictures in one batch: each gets the image prompt on both halves of
    guidance, as diffusers repeats it per picture."""
    start = smooth_picture()
    from invoke.backend.job import Noise

    job = make_job(
        steps=6,
        strength=0.6,
        init_image=start,
        noises=(Noise(42), Noise(43)),
        image_prompt=prompt(tiny_ip_adapter_file, picture, 0.8),
    )
    ours = pixels(model.generate(job))
    pipe = sd_pipeline(model, "k_euler", "StableDiffusionImg2ImgPipeline")
    latents = vae_mean_latents(pipe, start)
    theirs = adapted(
        pipe,
        tiny_ip_adapter_file,
        0.8,
        image=latents,
        strength=0.6,
        num_inference_steps=6,
        num_images_per_prompt=2,
        generator=[torch.Generator().manual_seed(s) for s in (42, 43)],
        ip_adapter_image=picture,
    )
    assert np.abs(ours - theirs).max() <= 1


def test_weight_zero_is_the_plain_picture_and_the_unet_is_given_back(
    model: Model, tiny_ip_adapter_file: Path, picture: Image.Image
) -> None:
    """At weight 0 diffusers' processors skip the adapter: the plain picture. After a job with
    an adapter the UNet has its own processors again, and draws the plain picture exactly."""
    plain_job = make_job(steps=4)
    before = pixels(model.generate(plain_job))
    processors = {n: type(p) for n, p in model.unet.attn_processors.items()}
    zero = pixels(
        model.generate(replace(plain_job, image_prompt=prompt(tiny_ip_adapter_file, picture, 0)))
    )
    assert np.array_equal(zero, before)
    model.generate(replace(plain_job, image_prompt=prompt(tiny_ip_adapter_file, picture)))
    assert {n: type(p) for n, p in model.unet.attn_processors.items()} == processors
    assert model.unet.encoder_hid_proj is None
    assert np.array_equal(pixels(model.generate(plain_job)), before)


def test_a_damaged_or_foreign_adapter_is_one_line(
    model: Model, tiny_ip_adapter_file: Path, picture: Image.Image, tmp_path: Path
) -> None:
    encoder = tiny_ip_adapter_file.parent / "image_encoder"

    def refusal(state: dict[str, torch.Tensor] | bytes) -> str:
        path = tmp_path / IP_ADAPTER_FILE
        if isinstance(state, bytes):
            path.write_bytes(state)
        else:
            save_file(state, str(path))
        (tmp_path / "image_encoder").mkdir(exist_ok=True)
        for part in encoder.iterdir():
            target = tmp_path / "image_encoder" / part.name
            if not target.exists():
                target.write_bytes(part.read_bytes())
        model.ip_adapter = None
        with pytest.raises(InvokeError) as caught:
            model.generate(make_job(image_prompt=prompt(path, picture)))
        message = str(caught.value)
        assert "\n" not in message
        return message

    state = load_file(str(tiny_ip_adapter_file))
    assert "cannot be read" in refusal(b"not a safetensors file")
    assert "holds no IP-Adapter" in refusal({"weight": torch.zeros(2)})
    wide = {k: (torch.zeros(v.shape[0], 768) if "to_k_ip" in k else v) for k, v in state.items()}
    assert "made for SD 1.x models (text width 768)" in refusal(wide)
    fewer = {k: v for k, v in state.items() if not k.startswith("ip_adapter.1.")}
    assert "cross-attention layers" in refusal(fewer)
    nan = torch.full_like(state["ip_adapter.3.to_v_ip.weight"], torch.nan)
    poisoned = {**state, "ip_adapter.3.to_v_ip.weight": nan}
    assert "NaN or infinite; the file is damaged" in refusal(poisoned)
    narrow = {
        **state,
        "image_proj.proj.weight": state["image_proj.proj.weight"][:, :8].contiguous(),
    }
    assert "image encoder gives 16" in refusal(narrow)


def test_sdxl_with_an_image_prompt_equals_diffusers_pipeline(
    tiny_sdxl_dir: Path, picture: Image.Image, tmp_path: Path
) -> None:
    """SDXL: the image embeddings go beside its pooled embeddings and time ids."""
    from tests.fixtures.tiny_models import build_test_ip_adapter
    from tests.helpers import sdxl_pipeline

    sdxl = load_model(tiny_sdxl_dir, device="cpu")
    adapter = build_test_ip_adapter(tmp_path / "sdxl", tiny_sdxl_dir)
    job = make_job(steps=3, image_prompt=prompt(adapter, picture, 0.9))
    ours = pixels(sdxl.generate(job))
    pipe = sdxl_pipeline(sdxl, "k_euler")
    theirs = adapted(
        pipe, adapter, 0.9, num_inference_steps=3, height=64, width=64, ip_adapter_image=picture
    )
    assert np.abs(ours - theirs).max() <= 1
    plain = pixels(sdxl.generate(replace(job, image_prompt=None)))
    assert np.abs(ours - plain).max() > 10


def test_a_family_without_such_a_unet_is_refused_in_one_line(
    tiny_kandinsky_dir: Path, tiny_ip_adapter_file: Path, picture: Image.Image
) -> None:
    kandinsky = load_model(tiny_kandinsky_dir, device="cpu")
    with pytest.raises(InvokeError) as caught:
        kandinsky.generate(make_job(image_prompt=prompt(tiny_ip_adapter_file, picture)))
    assert str(caught.value) == (
        f"--ip_adapter: model {kandinsky.name} (kandinsky-2.2) takes no IP-Adapter; they act on "
        "SD 1.x, SD 2.x and SDXL base models"
    )


def test_an_image_prompt_and_a_controlnet_together_equal_diffusers(
    model: Model, tiny_ip_adapter_file: Path, tiny_controlnet_dir: Path, picture: Image.Image
) -> None:
    """The ControlNet reads the text embeddings alone, the UNet the image prompt too, as in
    diffusers' ControlNet pipeline with an IP-Adapter loaded."""
    from invoke.backend.job import Control

    edges = Image.new("RGB", (64, 64))
    edges.paste((255, 255, 255), (20, 20, 44, 44))
    weights = tiny_controlnet_dir / "diffusion_pytorch_model.safetensors"
    job = make_job(
        steps=4,
        control=Control("edges", str(weights), edges, weight=0.8),
        image_prompt=prompt(tiny_ip_adapter_file, picture, 0.6),
    )
    ours = pixels(model.generate(job))
    assert model.controlnet is not None
    pipe = sd_pipeline(
        model, "k_euler", "StableDiffusionControlNetPipeline", controlnet=model.controlnet[1]
    )
    theirs = adapted(
        pipe,
        tiny_ip_adapter_file,
        0.6,
        image=edges,
        num_inference_steps=4,
        height=64,
        width=64,
        controlnet_conditioning_scale=0.8,
        ip_adapter_image=picture,
    )
    assert np.abs(ours - theirs).max() <= 1
