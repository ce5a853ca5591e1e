"""--latents files: what is refused, in one line, before anything is drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from invoke.errors import InvokeError
from invoke.latents_file import latents_file, latents_path, load_latents, save_latents
from invoke.line.request import Request


def test_latents_live_beside_their_picture(tmp_path: Path) -> None:
    picture = tmp_path / "000003.7.png"
    path = save_latents(picture, np.ones((1, 4, 8, 8), np.float32), "tiny")
    assert path == latents_path(picture) == tmp_path / "000003.7.latents.safetensors"
    request = Request(prompt="x", init_img=str(picture), latents="-1")
    found = latents_file(request, tmp_path, [picture], "tiny")
    assert found.latents == str(path)
    assert np.array_equal(load_latents(path, 64, 64, 8), np.ones((1, 4, 8, 8)))


def test_another_models_latents_are_refused(tmp_path: Path) -> None:
    picture = tmp_path / "000001.1.png"
    save_latents(picture, np.zeros((1, 4, 8, 8), np.float32), "sd15")
    request = Request(prompt="x", init_img=str(picture), latents="000001.1.latents.safetensors")
    with pytest.raises(InvokeError, match="made by model sd15, not tiny: its VAE may differ"):
        latents_file(request, tmp_path, [], "tiny")


def test_latents_of_another_size_or_no_file_are_refused(tmp_path: Path) -> None:
    path = save_latents(tmp_path / "a.png", np.zeros((1, 4, 8, 8), np.float32), "tiny")
    with pytest.raises(InvokeError, match=r"shape \(1, 4, 8, 8\), not the 128x64 picture's"):
        load_latents(path, 128, 64, 8)
    (tmp_path / "junk.latents.safetensors").write_bytes(b"not one")
    request = Request(prompt="x", init_img="a.png", latents="junk.latents.safetensors")
    with pytest.raises(InvokeError, match="not a latents file"):
        latents_file(request, tmp_path, [], "tiny")
    with pytest.raises(InvokeError, match=r"--latents: gone\.safetensors: no such file"):
        latents_file(Request(prompt="x", latents="gone.safetensors"), tmp_path, [], "tiny")


def test_fix_upscale_latents_beside_a_picture_or_named(tmp_path: Path) -> None:
    """!fix FILE -U's latents: none beside FILE, or an upscaler taking pixels only: FILE's
    pixels, silently; a junk file beside it: its pixels, with a note; a named file of another
    size: refused. Latents saved with the picture's digest and VAE are taken, and named."""
    from PIL import Image

    from invoke.latents_file import picture_digest, upscale_latents

    space = "AutoencoderKL, 4 channels, 8 px a cell, scaling factor 0.18215"
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    picture = tmp_path / "000001.1.png"
    request = Request(prompt="x", init_img=str(picture), upscale=(2, 0.75))
    assert upscale_latents(request, tmp_path, [], lambda: image, (space, 8)) == (
        request,
        None,
        None,
    )
    latents = np.ones((1, 4, 8, 8), np.float32)
    save_latents(picture, latents, "tiny", space=space, digest=picture_digest(image))
    assert upscale_latents(request, tmp_path, [], lambda: image, (None, 8)) == (request, None, None)
    used, found, note = upscale_latents(request, tmp_path, [], lambda: image, (space, 8))
    assert used.latents == str(latents_path(picture)) and note is None
    assert np.array_equal(found, latents)
    with pytest.raises(InvokeError, match=r"shape \(1, 4, 8, 8\), not the 128x64 picture's"):
        wide = Image.new("RGB", (128, 64))
        named = Request(prompt="x", init_img=str(picture), latents="-1", upscale=(2, 0.75))
        upscale_latents(named, tmp_path, [picture], lambda: wide, (space, 8))
    latents_path(picture).write_bytes(b"junk")
    kept, none, note = upscale_latents(request, tmp_path, [], lambda: image, (space, 8))
    assert (kept, none) == (request, None)
    assert note is not None and note.endswith("upscaling 000001.1.png's pixels instead")
    assert "not a latents file" in note


def test_a_fifo_beside_a_picture_is_no_wait(tmp_path: Path) -> None:
    """A named pipe where the latents would be: read as the user's files are, so !fix says what
    it is and upscales the pixels instead of waiting forever for a writer."""
    import os

    from PIL import Image

    from invoke.latents_file import upscale_latents

    picture = tmp_path / "000001.1.png"
    os.mkfifo(latents_path(picture))
    request = Request(prompt="x", init_img=str(picture), upscale=(2, 0.75))
    space = "AutoencoderKL, 4 channels, 8 px a cell, scaling factor 0.18215"
    _, latents, note = upscale_latents(
        request, tmp_path, [], lambda: Image.new("RGB", (64, 64)), (space, 8)
    )
    assert latents is None and note is not None and "is a named pipe (FIFO)" in note
