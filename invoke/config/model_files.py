"""What a model's files say without loading it: its native size, its latent cell, its default
sampler, and a fingerprint that changes when the files do.

A --dry-run prints what a real run would (sizes rounded to the model's cell, its sampler) from
these, without reading any weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from invoke.config.settings import SIZE_MULTIPLE
from invoke.errors import ModelError

# The default model's size when its folder is not there to read (a broken install says so later).
EMBEDDED_NATIVE_SIZE = (64, 64)
# A checkpoint file's size before it is read (--dry-run): the family's usual training size.
FAMILY_SIZES = {"sd-2-v": 768, "sdxl": 1024, "sdxl-refiner": 1024}  # others: 512


def fingerprint(source: Path, depth: int = 3) -> tuple[tuple[str, int, int], ...]:
    """(path, size, modification time) of a model file, or of the files of a model folder down
    to `depth` levels (a diffusers folder's weights sit at the second): what changes when the
    user fixes a model's files."""
    found: list[tuple[str, int, int]] = []
    pending = [(source, 0)]
    while pending:
        path, level = pending.pop()
        try:
            info = path.stat()
        except OSError:
            continue
        found.append((str(path), info.st_size, info.st_mtime_ns))
        if path.is_dir() and level < depth:
            try:
                pending.extend((child, level + 1) for child in path.iterdir())
            except OSError:
                continue
    return tuple(sorted(found))


def checkpoint_size(family: str | None) -> tuple[int, int]:
    """A single checkpoint file's size before it is read: its family's usual, else SD 1.x's."""
    side = FAMILY_SIZES.get(family or "", 512)
    return (side, side)


def native_size(folder: Path) -> tuple[int, int]:
    """A diffusers folder's native size, read from its configs without loading weights."""
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        return (512, 512)  # the loader will say what is wrong with the folder
    sample = unet.get("sample_size", 64)
    factor = _vae_cell(vae)
    if isinstance(sample, list):
        return (sample[1] * factor, sample[0] * factor)
    return (sample * factor, sample * factor)


def cell(folder: Path | None) -> int:
    """A diffusers folder's pixels per latent cell without loading it (Model.size_multiple):
    its VAE's, or the square of Kandinsky's MoVQ cell, as its pipeline rounds sides."""
    if folder is None:
        return SIZE_MULTIPLE
    for part, squared in (("vae", False), ("movq", True)):
        try:
            config = json.loads((folder / part / "config.json").read_text())
        except (OSError, ValueError):
            continue
        side = _vae_cell(config)
        return side * side if squared else side
    return SIZE_MULTIPLE


def latent_space(folder: Path | None) -> str | None:
    """The latents a diffusers folder's VAE reads, in words (upscaler_kinds.latent_space), from
    its vae/config.json alone; None when there is none to read (a checkpoint file, Kandinsky)."""
    from invoke.backend.upscaler_kinds import latent_space as words

    if folder is None:
        return None
    try:
        config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return words(config.get("_class_name"), config) if isinstance(config, dict) else None


def folder_sampler(folder: Path | None, family: str | None) -> str:
    """The sampler a line without -A gets on a model not loaded yet: read from its folder (the
    default model's training.json names one), else its family's."""
    from invoke.backend.families import default_sampler, folder_family, recommended_sampler

    if folder is None:
        return default_sampler(family or "sd-1")
    if family is None:
        try:
            index = json.loads((folder / "model_index.json").read_text())
            family = folder_family(folder, index)
        except (OSError, ValueError, ModelError):
            family = "sd-1"  # loading will say what is wrong with the folder
    return default_sampler(family, recommended_sampler(folder))


def _vae_cell(config: dict[str, Any]) -> int:
    """Each down block of the VAE but the last halves the image."""
    return 2 ** (len(config.get("block_out_channels", [0, 0, 0, 0])) - 1)
