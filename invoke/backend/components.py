"""A diffusers folder's parts, each loaded on its own from local files.

Safetensors unless the user allowed pickle (model files are untrusted), so a broken folder is
reported as the one part that is wrong, in one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from invoke.backend.finite import check_weights
from invoke.errors import ModelError

# What loading one part raises for a file it cannot use: damaged files (OSError, RuntimeError,
# SafetensorError), configs whose values do not build a network (ValueError, KeyError, TypeError,
# IndexError: an empty block list, ZeroDivisionError: zero heads).
PART_ERRORS = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
    IndexError,
    ZeroDivisionError,
)

# The folders of a Stable Diffusion pipeline (what a folder without model_index.json lacks).
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def load_parts(
    folder: Path, dtype: torch.dtype, components: tuple[str, ...], allow_pickle: bool = False
) -> dict[str, Any]:
    """The Model's parts from the `components` folders of `folder`."""
    from transformers.utils import logging as transformers_logging

    loaders = _loaders(folder, dtype, allow_pickle)
    wanted = [p for p in loaders if p.removesuffix("_config") in components]
    parts: dict[str, Any] = {"tokenizer": None, "text_encoder": None}
    # transformers draws a "Loading weights" bar per model; the front ends draw their own.
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        for part in wanted:
            try:
                parts[part] = loaders[part]()
            except (*PART_ERRORS, SafetensorError) as err:
                # Library messages run to many lines; the first names the file or key at fault.
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                where = part.removesuffix("_config")
                damage = _damaged_weights(folder / where)
                if damage is not None:
                    name, why = damage
                    raise ModelError(
                        f"model {folder}: {where}/{name} is damaged ({why}); download or convert "
                        f"the model again"
                    ) from err
                raise ModelError(f"model {folder}: cannot load {where}/ ({first})") from err
            if isinstance(parts[part], torch.nn.Module):
                check_weights(f"model {weights_name(folder / part)}", parts[part], dtype=dtype)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return parts


def _loaders(folder: Path, dtype: torch.dtype, allow_pickle: bool) -> dict[str, Callable[[], Any]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    # Pickle weights (.bin) only when allowed; both libraries then read them weights_only=True.
    safetensors = None if allow_pickle else True
    # low_cpu_mem_usage=False: without accelerate diffusers warns at length and does this anyway.
    diffusers_options = {
        "torch_dtype": dtype,
        "local_files_only": True,
        "use_safetensors": safetensors,
    }
    text_options = {"dtype": dtype, "local_files_only": True, "use_safetensors": safetensors}
    return {
        "tokenizer": lambda: _tokenizer(CLIPTokenizer, folder / "tokenizer"),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(
            folder / "text_encoder", **text_options
        ),
        "tokenizer_2": lambda: _tokenizer(CLIPTokenizer, folder / "tokenizer_2"),
        "text_encoder_2": lambda: CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder_2", **text_options
        ),
        "unet": lambda: UNet2DConditionModel.from_pretrained(
            folder / "unet", low_cpu_mem_usage=False, **diffusers_options
        ),
        "vae": lambda: AutoencoderKL.from_pretrained(
            folder / "vae", low_cpu_mem_usage=False, **diffusers_options
        ),
        "scheduler_config": lambda: _read_json(folder / "scheduler" / "scheduler_config.json"),
    }


def _tokenizer(cls: Any, folder: Path) -> Any:
    """A tokenizer from its folder. The tokenizers library reports a damaged vocabulary or merges
    file as a plain Exception, which becomes a ValueError here (load_parts names the part)."""
    try:
        return cls.from_pretrained(folder, local_files_only=True)
    except PART_ERRORS:
        raise
    except Exception as err:  # tokenizers' Rust errors have no narrower class
        raise ValueError(str(err).strip() or type(err).__name__) from err


def _damaged_weights(part: Path) -> tuple[str, str] | None:
    """The first .safetensors file in `part` whose header is unreadable, and why.

    diffusers reports a bad file as "Unable to load weights from checkpoint file for X at X",
    hiding the reason; reading just the header (safe_open checks it against the file's size, so a
    truncated download shows too) tells the user which file to replace.
    """
    from safetensors import safe_open

    if not part.is_dir():
        return None
    for file in sorted(part.glob("*.safetensors")):
        try:
            with safe_open(file, framework="pt"):
                pass
        except SafetensorError as err:
            return file.name, str(err).strip().splitlines()[0] or type(err).__name__
    return None


def weights_name(part: Path) -> Path:
    """What a message names for a part's weights: its one weights file, else the folder."""
    files = [p for p in part.glob("*") if p.suffix in (".safetensors", ".bin") and p.is_file()]
    return files[0] if len(files) == 1 else part


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data
