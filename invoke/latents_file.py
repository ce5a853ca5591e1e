"""A picture's final latents beside its PNG (`NAME.latents.safetensors`), for --save_latents and
--latents: a later img2img line starts from them instead of re-encoding the 8-bit picture."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from invoke import atomic, plan
from invoke.errors import InvokeError
from invoke.line.request import Request

SUFFIX = ".latents.safetensors"
KEY = "latents"


def latents_path(picture: Path) -> Path:
    """Where the picture's latents are kept: 000001.1.png -> 000001.1.latents.safetensors."""
    return picture.with_name(picture.stem + SUFFIX)


def save_latents(picture: Path, latents: np.ndarray, model: str) -> Path:
    """Write (1, channels, h, w) latents beside `picture`, naming the model that made them."""
    from safetensors.numpy import save

    data = save({KEY: np.ascontiguousarray(latents, dtype=np.float32)}, {"model": model})
    path = latents_path(picture)
    return atomic.write_new(path.parent, [path.name], data)


def latents_file(request: Request, outdir: Path, files: Sequence[Path], model: str) -> Request:
    """The request with --latents as the file it names (-1: the previous picture's), so the
    stored command names the file; InvokeError unless it is there and `model` made it."""
    if request.latents is None:
        return request
    if request.latents == "-1":
        path = latents_path(plan.previous_file("--latents", files))
        if not path.exists():
            raise InvokeError(
                f"--latents: -1 means {path.name}, which was not saved; "
                "add --save_latents to the line that makes the picture"
            )
    else:
        path = Path(request.latents)
        path = path if path.exists() else outdir / path.name
        if not path.exists():
            raise InvokeError(f"--latents: {request.latents}: no such file")
    made_by = _read(path)[1]
    if made_by != model:
        raise InvokeError(
            f"--latents: {path.name} was made by model {made_by or '?'}, not {model}: its VAE "
            "may differ; give -I the picture without --latents"
        )
    return replace(request, latents=str(path))


def _read(path: Path) -> tuple[np.ndarray, str]:
    """The latents in `path` and the model that made them; InvokeError when unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            return file.get_tensor(KEY), (file.metadata() or {}).get("model", "")
    except Exception as err:  # any unreadable file: the same one-line refusal
        raise InvokeError(f"--latents: {path}: not a latents file ({err})") from None


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
