"""A picture's final latents beside its PNG (`NAME.latents.safetensors`), for --save_latents and
--latents: a later img2img line starts from them instead of re-encoding the 8-bit picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from invoke import atomic
from invoke.errors import InvokeError

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


def load_latents(path: Path, model: str, width: int, height: int, cell: int) -> np.ndarray:
    """The latents in `path`; InvokeError unless the same model made them at this size."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as file:
            made_by = (file.metadata() or {}).get("model", "")
            latents = file.get_tensor(KEY)
    except Exception as err:  # any unreadable file: the same one-line refusal
        raise InvokeError(f"--latents: {path}: not a latents file ({err})") from None
    if made_by != model:
        raise InvokeError(
            f"--latents: {path.name} was made by model {made_by or '?'}, not {model}: its VAE "
            "may differ; use -I with the picture instead"
        )
    want = (1, latents.shape[1] if latents.ndim == 4 else 0, height // cell, width // cell)
    if latents.ndim != 4 or latents.shape != want:
        raise InvokeError(
            f"--latents: {path.name} holds latents of shape {tuple(latents.shape)}, not the "
            f"{width}x{height} picture's {want}"
        )
    return latents
