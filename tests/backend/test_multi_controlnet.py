"""Several ControlNets on one line: each --controlnet starts a unit; in our loop their residuals
add up, each with its own image, weight and steps, as diffusers' multi-ControlNet pipeline does
(the oracle), on tiny models."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.job import Control
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.errors import ParseError
from invoke.line.parse import parse_request
from invoke.line.request import ControlUnit
from tests.fixtures.tiny_models import build_test_controlnet
from tests.helpers import make_job, pixels, sd_pipeline


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    torch.set_num_threads(1)
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def second_net(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny ControlNet, made as tiny_controlnet_dir is, from another seed."""
    return build_test_controlnet(tmp_path_factory.mktemp("nets") / "shapes", tiny_model_dir, 7)


def _shape(ring: bool) -> Image.Image:
    y, x = np.mgrid[0:64, 0:64]
    if ring:
        inside = np.abs(np.hypot(x - 32, y - 32) - 18) < 2
    else:
        inside = (np.abs(x - 32) < 12) & (np.abs(y - 32) < 12)
    return Image.fromarray(np.where(inside, 255, 0).astype(np.uint8)).convert("RGB")


def _control(net: Path, image: Image.Image, **changes: object) -> Control:
    weights = net / "diffusion_pytorch_model.safetensors"
    return replace(Control(net.name, str(weights), image), **changes)  # type: ignore[arg-type]


def test_two_controlnets_equal_diffusers_multi_controlnet_pipeline(
    model: Model, tiny_controlnet_dir: Path, second_net: Path
) -> None:
    """Each net's residuals times its weight, within its own start..end, summed."""
    ring, square = _shape(True), _shape(False)
    first = _control(tiny_controlnet_dir, ring, weight=0.8)
    second = _control(second_net, square, weight=1.5, start=0.2, end=0.7)
    job = make_job(sampler="k_euler", steps=5, control=first, more_controls=(second,))
    ours = model.generate(job)
    nets = [model.controlnet[1], model.more_controlnets[1][1]]
    assert nets[0] is not nets[1]
    theirs = sd_pipeline(model, "k_euler", "StableDiffusionControlNetPipeline", controlnet=nets)(
        prompt="a red circle",
        negative_prompt="blue",
        image=[ring, square],
        num_inference_steps=5,
        guidance_scale=7.5,
        height=64,
        width=64,
        generator=[torch.Generator().manual_seed(42)],
        controlnet_conditioning_scale=[0.8, 1.5],
        control_guidance_start=[0.0, 0.2],
        control_guidance_end=[1.0, 0.7],
    ).images
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1
    alone = model.generate(replace(job, more_controls=()))
    assert np.abs(pixels(ours) - pixels(alone)).max() > 5  # the second unit does guide
    assert model.more_controlnets == {}  # a line with one unit lets the second one go


def test_each_controlnet_starts_a_unit_and_the_control_switches_follow_it() -> None:
    line = (
        "a cat --control_weight 0.5 --controlnet edges --control_image ring.png "
        "--controlnet shapes --control_end 0.7 --control_image square.png "
        "--control_processor invert"
    )
    request = parse_request(line)
    assert request.controls == (
        ControlUnit("edges", "ring.png", control_weight=0.5),
        ControlUnit("shapes", "square.png", "invert", control_end=0.7),
    )
    command = request.to_command()
    assert command == (
        '"a cat" --controlnet edges --control_image ring.png --control_weight 0.5 '
        "--controlnet shapes --control_image square.png --control_processor invert "
        "--control_end 0.7"
    )
    assert parse_request(command) == request


def test_a_one_unit_line_is_what_it_was() -> None:
    request = parse_request("a cat --controlnet edges --control_image ring.png -s 5")
    assert request.more_controls == ()
    assert request.to_command() == '"a cat" -s 5 --controlnet edges --control_image ring.png'


def test_a_unit_without_its_image_is_refused_by_name() -> None:
    with pytest.raises(ParseError, match=r"unit 2: --controlnet shapes.*needs --control_image"):
        parse_request("a cat --controlnet edges --control_image ring.png --controlnet shapes")


def test_a_two_unit_line_records_both_and_its_command_remakes_the_picture(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """--dry-run shows both units; the picture's Dream, sd-metadata and A1111 parameters name
    both; each chunk alone reads back to the command, which makes the same pixels again."""
    from tests.test_cli import each_chunk_alone_reads_back, invoke, png_text
    from tests.test_cli import pixels as file_pixels

    build_test_controlnet(isolated / "nets" / "edges", tiny_model_dir)
    build_test_controlnet(isolated / "nets" / "shapes", tiny_model_dir, 7)
    _shape(True).save(isolated / "ring.png")
    _shape(False).save(isolated / "square.png")
    args = ("--model", str(tiny_model_dir), "--controlnet_dir", "nets", "--outdir", "o")
    line = (
        "a red circle -s 4 -S 7 --controlnet edges --control_image ring.png --control_weight 0.8 "
        "--controlnet shapes --control_image square.png --control_start 0.2"
    )
    code, out, err = invoke(*args, "--dry-run", line)
    assert code == 0, err
    units = (
        "--controlnet edges --control_image ring.png --control_weight 0.8 "
        "--controlnet shapes --control_image square.png --control_start 0.2"
    )
    assert units in out
    code, _, err = invoke(*args, line)
    assert code == 0, err
    assert err.count("ControlNet edges loaded") == err.count("ControlNet shapes loaded") == 1
    picture = isolated / "o" / "000001.7.png"
    chunks = png_text(picture)
    assert chunks["Dream"].endswith(units)
    meta = json.loads(chunks["sd-metadata"])["image"]
    assert meta["controlnet"]["model"] == "edges"
    assert meta["more_controlnets"] == [
        {"model": "shapes", "image": "square.png", "processor": None, "weight": 1.0,
         "start": 0.2, "end": 1.0}
    ]  # fmt: skip
    assert 'ControlNet 0: "Module: none, Model: edges, Weight: 0.8,' in chunks["parameters"]
    assert 'ControlNet 1: "Module: none, Model: shapes, Weight: 1,' in chunks["parameters"]
    each_chunk_alone_reads_back(picture, isolated)
    code, _, err = invoke(*args, chunks["Dream"])
    assert code == 0, err
    assert file_pixels(isolated / "o" / "000002.7.png") == file_pixels(picture)


def test_a_second_controlnet_no_longer_silently_replaces_the_first() -> None:
    """Once the later --controlnet won and the first was dropped unsaid; now each is a unit, and
    the first one's missing image is said."""
    with pytest.raises(ParseError, match=r"unit 1: --controlnet edges.*needs --control_image"):
        parse_request("a cat --controlnet edges --controlnet shapes --control_image ring.png")
