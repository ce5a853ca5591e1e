"""A picture's final latents beside its PNG (`NAME.latents.safetensors`), for --save_latents and
--latents: a later img2img line starts from them instead of re-encoding the 8-bit picture, and
`!fix FILE -U 2` hands them to the x2 latent upscaler instead of FILE's pixels.

The file's metadata names the model that made it, the latents its VAE reads (in words,
upscaler_kinds.latent_space) and a digest of the picture they were decoded into, so a picture
changed since, or an upscaler whose VAE reads other latents, is known before anything runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from invoke import atomic, plan
from invoke.errors import InvokeError
from invoke.line.request import Request
from invoke.reading import read_file

if TYPE_CHECKING:
    from PIL import Image

SUFFIX = ".latents.safetensors"
KEY = "latents"
# A 4096x4096 picture's latents are 4 MB (4 channels, 512x512 cells, float32).
MAX_BYTES = 64_000_000


def latents_path(picture: Path) -> Path:
    """Where the picture's latents are kept: 000001.1.png -> 000001.1.latents.safetensors."""
    return picture.with_name(picture.stem + SUFFIX)


def picture_digest(image: Image.Image) -> str:
    """sha256 of a picture's RGB pixels: what a latents file says it was decoded into."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def save_latents(
    picture: Path, latents: np.ndarray, model: str, *, space: str = "", digest: str = ""
) -> Path:
    """Write (1, channels, h, w) latents beside `picture`, naming the model that made them, the
    latents its VAE reads (`space`) and the picture's `digest` (picture_digest)."""
    from safetensors.numpy import save

    metadata = {"model": model, "latent_space": space, "picture": digest}
    data = save({KEY: np.ascontiguousarray(latents, dtype=np.float32)}, metadata)
    path = latents_path(picture)
    return atomic.write_new(path.parent, [path.name], data)


def latents_file(request: Request, outdir: Path, files: Sequence[Path], model: str) -> Request:
    """The request with --latents as the file it names (-1: the previous picture's), so the
    stored command names the file; InvokeError unless it is there and `model` made it."""
    if request.latents is None:
        return request
    path = _locate(request.latents, outdir, files)
    made_by = _read(path)[1].get("model", "")
    if made_by != model:
        raise InvokeError(
            f"--latents: {path.name} was made by model {made_by or '?'}, not {model}: its VAE "
            "may differ; give -I the picture without --latents"
        )
    return replace(request, latents=str(path))


def upscale_latents(
    request: Request,
    outdir: Path,
    files: Sequence[Path],
    picture: Callable[[], Image.Image],
    upscaler: tuple[str | None, int],
) -> tuple[Request, np.ndarray | None, str | None]:
    """`!fix FILE -U`'s latents: --latents' file, else the one beside FILE (request.init_img),
    FILE read by `picture` (only when there are latents to check), for an upscaler whose VAE
    reads `upscaler`'s latent space (None: it takes pixels only) at its pixels a cell.

    Returns the request naming the file used (so the stored command does), its latents (None:
    FILE's pixels are upscaled) and a note when the file beside FILE cannot be used. A file
    --latents names that cannot be used is refused in one line."""
    assert request.init_img is not None
    space, cell = upscaler
    named = request.latents is not None
    if named:
        path = _locate(str(request.latents), outdir, files)
        if space is None:
            raise InvokeError(
                f"--latents: -U {request.upscale[0]}'s upscaler takes pixels, not latents (only "
                "the x2 latent upscaler takes latents); drop --latents"
            )
    else:
        path = latents_path(Path(request.init_img))
        if space is None or not path.exists():
            return request, None, None
    try:
        latents = _fitting(path, picture(), space, cell)
    except InvokeError as err:
        if named:
            raise
        why = str(err).removeprefix("--latents: ")
        return request, None, f"{why}: upscaling {Path(request.init_img).name}'s pixels instead"
    return replace(request, latents=str(path)), latents, None


def _fitting(path: Path, image: Image.Image, space: str, cell: int) -> np.ndarray:
    """The latents in `path`; InvokeError unless they were decoded into `image` and are the
    latents of a VAE reading `space`, `cell` pixels a cell."""
    latents, metadata = _read(path)
    if metadata.get("latent_space") != space:
        raise InvokeError(
            f"--latents: {path.name} holds latents of another VAE "
            f"({metadata.get('latent_space') or '?'}) than the upscaler's ({space})"
        )
    width, height = image.size
    # 4 channels: diffusers' latent upscaler takes `image` as latents only with 4.
    want = (1, 4, height // cell, width // cell)
    if latents.shape != want or width % cell or height % cell:
        raise InvokeError(
            f"--latents: {path.name} holds latents of shape {tuple(latents.shape)}, not the "
            f"{width}x{height} picture's {want}"
        )
    if metadata.get("picture") != picture_digest(image):
        raise InvokeError(
            f"--latents: {path.name} was not decoded into this picture (it was changed since, "
            "or they were saved without saying which)"
        )
    return latents


def _locate(value: str, outdir: Path, files: Sequence[Path]) -> Path:
    """The file --latents names (-1: the previous picture's); InvokeError unless it is there."""
    if value == "-1":
        path = latents_path(plan.previous_file("--latents", files))
        if not path.exists():
            raise InvokeError(
                f"--latents: -1 means {path.name}, which was not saved; "
                "add --save_latents to the line that makes the picture"
            )
        return path
    path = Path(value)
    path = path if path.exists() else outdir / path.name
    if not path.exists():
        raise InvokeError(f"--latents: {value}: no such file")
    return path


def _read(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """The latents in `path` and its metadata; InvokeError when unreadable or not finite. Read
    as the user's files are (reading.read_file): a regular file, bounded; never a FIFO's wait."""
    import json
    import struct

    from safetensors.numpy import load

    data = read_file(path, f"--latents: {path}", MAX_BYTES)
    try:
        latents = load(data)[KEY]
        header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
        metadata = {str(k): str(v) for k, v in (header.get("__metadata__") or {}).items()}
    except Exception as err:  # any unreadable file: the same one-line refusal
        raise InvokeError(f"--latents: {path}: not a latents file ({err})") from None
    if not np.issubdtype(latents.dtype, np.floating) or not np.isfinite(latents).all():
        raise InvokeError(f"--latents: {path.name} holds NaN, infinite or non-float numbers")
    return latents, metadata


def load_latents(path: Path, width: int, height: int, cell: int) -> np.ndarray:
    """The latents in `path`; InvokeError unless they fit a width x height picture."""
    latents = _read(path)[0]
    want = (1, latents.shape[1] if latents.ndim == 4 else 0, height // cell, width // cell)
    if latents.ndim != 4 or latents.shape != want:
        raise InvokeError(
            f"--latents: {path.name} holds latents of shape {tuple(latents.shape)}, not the "
            f"{width}x{height} picture's {want}"
        )
    return latents
