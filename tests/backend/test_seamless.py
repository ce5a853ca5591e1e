"""--seamless on the tiny model: the convolutions wrap around, for one job only.

A picture tiles when the model treats it as a torus. With every convolution of UNet and VAE
padding circularly the whole pipeline commutes with rolling the picture: start from the starting
noise rolled by whole cells of the UNet's coarsest grid, and the picture comes out rolled by the
same amount, exactly (up to float rounding). With zero padding the edges are special and it does
not. That is what these tests hold, instead of a seam statistic: a random-weight model draws
noise-like pictures whose seams say little, but the equivariance holds for any weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from invoke.backend import speed
from invoke.backend.job import Noise, StepInfo
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.backend.seamless import wrapped_convolutions, wrapped_decoder
from invoke.errors import InvokeError
from tests.helpers import make_job, pixels, roll_error, smooth_picture

# The tiny UNets downsample once: rolling 8x8 latents by 2 cells is 1 cell of the coarse grid.
CELLS = 2


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


# -- the padding itself ------------------------------------------------------------------------


def test_wrapped_convolution_is_circular_padding_per_axis_and_is_undone() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    torch_circular = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    torch_circular.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 8, 10)
    with torch.no_grad():
        plain = conv(x)
        with wrapped_convolutions([conv], ("x", "y")):
            both = conv(x)
        with wrapped_convolutions([conv], ("x",)):
            only_x = conv(x)
        with wrapped_convolutions([conv], ("y",)):
            only_y = conv(x)
        assert torch.equal(both, torch_circular(x))
        # One axis: that axis wraps, the other still sees zeros past the edge.
        wrap_x = F.pad(F.pad(x, (1, 1, 0, 0), mode="circular"), (0, 0, 1, 1))
        wrap_y = F.pad(F.pad(x, (0, 0, 1, 1), mode="circular"), (1, 1, 0, 0))
        assert torch.allclose(only_x, F.conv2d(wrap_x, conv.weight, conv.bias), atol=1e-6)
        assert torch.allclose(only_y, F.conv2d(wrap_y, conv.weight, conv.bias), atol=1e-6)
        assert not torch.allclose(only_x, both) and not torch.allclose(only_x, plain)
        # Afterwards the layer is the class's own again, bit for bit.
        assert "_conv_forward" not in vars(conv)
        assert torch.equal(conv(x), plain)


def test_wrapped_convolutions_are_undone_on_an_error_too() -> None:
    conv = nn.Conv2d(3, 3, 3, padding=1)
    with pytest.raises(KeyboardInterrupt), wrapped_convolutions([conv], ("x", "y")):
        assert "_conv_forward" in vars(conv)
        raise KeyboardInterrupt
    assert "_conv_forward" not in vars(conv)


def test_unknown_axis_is_one_line() -> None:
    wrapped = wrapped_convolutions([nn.Conv2d(3, 3, 3, padding=1)], ("z",))
    with pytest.raises(InvokeError, match=r"^--seamless_axes: z is not an axis; use x, y or x,y$"):
        wrapped.__enter__()


# -- whole jobs --------------------------------------------------------------------------------


def is_torus(model: Model, job: object, monkeypatch: pytest.MonkeyPatch, dx: int, dy: int) -> bool:
    """Latents exactly a torus (float rounding), the decoded picture nearly (its circular margin);
    a picture with zero padding misses both by far (latents by > 1, pixels by > 100 here)."""
    latents, picture = roll_error(model, job, monkeypatch, dx, dy)
    if latents <= 1e-3 and picture <= 16:
        return True
    assert latents > 0.5 and picture > 60, (latents, picture)  # not in between
    return False


def test_seamless_picture_is_a_torus(model: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_torus(model, make_job(seamless_axes=("x", "y")), monkeypatch, CELLS, CELLS)
    # The same check without --seamless fails by far: the edges are not like the middle.
    assert not is_torus(model, make_job(), monkeypatch, CELLS, CELLS)


def test_x_only_wraps_left_right_but_not_top_bottom(
    model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_x = make_job(seamless_axes=("x",))
    assert is_torus(model, only_x, monkeypatch, CELLS, 0)
    assert not is_torus(model, only_x, monkeypatch, 0, CELLS)
    only_y = make_job(seamless_axes=("y",))
    assert is_torus(model, only_y, monkeypatch, 0, CELLS)
    assert not is_torus(model, only_y, monkeypatch, CELLS, 0)


def test_the_decoder_sees_a_margin_and_is_put_back(model: Model) -> None:
    """The VAE keeps its zero padding: it decodes the latents extended circularly, cropped back."""
    latents = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        plain = model.vae.decode(latents).sample
        with wrapped_decoder(model.vae, ("x",)):
            wrapped = model.vae.decode(latents).sample
        extended = F.pad(latents, (8, 8, 0, 0), mode="circular")
        by_hand = model.vae.decode(extended).sample[..., :, 64:128]
    assert wrapped.shape == plain.shape == (1, 3, 64, 64)
    assert torch.equal(wrapped, by_hand)
    assert "decode" not in vars(model.vae)
    assert torch.equal(model.vae.decode(latents).sample, plain)


def test_seamless_does_not_leak_into_the_next_job(model: Model) -> None:
    before = pixels(model.generate(make_job()))
    seamless = pixels(model.generate(make_job(seamless_axes=("x", "y"))))
    after = pixels(model.generate(make_job()))
    assert np.array_equal(before, after)
    assert np.abs(seamless - before).max() > 20

    # Ctrl-C in the middle of a seamless job: the convolutions are put back all the same.
    def interrupt(info: StepInfo) -> None:
        if info.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.generate(make_job(seamless_axes=("x",)), on_step=interrupt)
    assert not [m for m in model.unet.modules() if "_conv_forward" in vars(m)]
    assert not [m for m in model.vae.modules() if "_conv_forward" in vars(m)]
    assert "decode" not in vars(model.vae)
    assert np.array_equal(pixels(model.generate(make_job())), before)


def test_seamless_batch_img2img_and_inpainting(model: Model) -> None:
    # -n on CUDA: a batch is each seed alone, seamless or not.
    noises = (Noise(7), Noise(8, ((9, 0.3),)))
    batch = model.generate(make_job(noises=noises, seamless_axes=("x", "y")))
    alone = [model.generate(make_job(noises=(n,), seamless_axes=("x", "y")))[0] for n in noises]
    assert np.abs(pixels(batch) - pixels(alone)).max() <= 2

    # img2img and inpainting: the loop wraps (the init image is encoded as usual); kept pixels
    # stay kept.
    init = smooth_picture()
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[20:40, 24:44] = 255
    for changes in (
        {"init_image": init, "strength": 0.6, "steps": 5},
        {"init_image": init, "mask": Image.fromarray(mask), "strength": 1.0},
    ):
        plain = pixels(model.generate(make_job(**changes)))[0]
        out = pixels(model.generate(make_job(**changes, seamless_axes=("x", "y"))))[0]
        assert np.abs(out - plain).max() > 10
    kept = np.asarray(init, dtype=np.int16)
    assert np.array_equal(out[mask == 0], kept[mask == 0])


def test_big_seamless_pictures_decode_whole(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VAE tiles sit at fixed places and blend where they overlap: a tiled picture is not the same
    across the wrapped edges (tried: 255 levels off where the untiled one is 37 off on this
    random-weight VAE). A big seamless picture decodes whole, a big plain one in tiles."""
    model = load_model(tiny_model_dir, device="cpu")
    big = make_job(steps=1, width=192, height=192, seamless_axes=("x", "y"))
    latents, _ = roll_error(model, big, monkeypatch, CELLS, CELLS)
    assert latents <= 1e-3 and not model.vae.use_tiling
    model.generate(make_job(steps=1, width=192, height=192))
    assert model.vae.use_tiling


@pytest.mark.slow  # torch.compile in this process: 4-10 s; CI runs it
def test_seamless_jobs_bypass_the_eager_backend_compile_path_and_do_not_buy_a_compile(
    tiny_model_dir: Path, model: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The compile path (graph capture, dispatch) with the eager backend, not inductor or CUDA
    graphs: seamless jobs skip it, and plain jobs through it keep the eager model's pictures."""
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "eager"})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    compiled = load_model(tiny_model_dir, device="cpu", compile=True)
    seamless = make_job(seamless_axes=("x", "y"))
    assert speed.unet_for(compiled, make_job()) is not compiled.unet
    assert speed.unet_for(compiled, seamless) is compiled.unet
    # Seamless after plain, plain after seamless: each is the eager model's own picture.
    plain_first = pixels(compiled.generate(make_job()))
    wrapped = pixels(compiled.generate(seamless))
    plain_again = pixels(compiled.generate(make_job()))
    assert np.abs(wrapped - pixels(model.generate(seamless))).max() <= 1
    assert np.abs(plain_again - plain_first).max() <= 1
    assert np.abs(plain_first - pixels(model.generate(make_job()))).max() <= 1

    # Eager seamless time is not counted toward compiling the plain shape.
    rented = speed._state(compiled)
    rented.force = False
    before = dict(rented.eager_seconds)
    speed.record(compiled, seamless, 1e6)
    assert rented.eager_seconds == before
