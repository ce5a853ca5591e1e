"""A diffusers folder's parts, each loaded on its own from local files.

Safetensors unless the user allowed pickle (model files are untrusted), so a broken folder is
reported as the one part that is wrong, in one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from invoke.backend.finite import check_weights
from invoke.errors import InvokeError, ModelError

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


@contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' loading bars off for the block (the front ends draw their
    own), and both libraries' warnings below errors: what a pipeline imports but does not use
    here (the x4 upscaler's image processor wants torchvision), weights a file has that its
    config does not use (a file that lacks some is refused: complete). Each is put back."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars = (
        diffusers_logging.is_progress_bar_enabled(),
        transformers_logging.is_progress_bar_enabled(),
    )
    verbosity = (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity())
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity[0])
        transformers_logging.set_verbosity(verbosity[1])
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def load_parts(
    folder: Path, dtype: torch.dtype, components: tuple[str, ...], allow_pickle: bool = False
) -> dict[str, Any]:
    """The Model's parts from the `components` folders of `folder`."""
    loaders = _loaders(folder, dtype, allow_pickle)
    wanted = [p for p in loaders if p.removesuffix("_config") in components]
    parts: dict[str, Any] = {"tokenizer": None, "text_encoder": None}
    with quiet_loading():
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
    return parts


def _loaders(folder: Path, dtype: torch.dtype, allow_pickle: bool) -> dict[str, Callable[[], Any]]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    # Pickle weights (.bin) only when allowed; both libraries then read them weights_only=True.
    safetensors = None if allow_pickle else True
    # low_cpu_mem_usage=False: without accelerate diffusers warns at length and does this anyway.
    # output_loading_info: which weights the config asks for and the file lacks (complete).
    diffusers_options = {
        "torch_dtype": dtype,
        "local_files_only": True,
        "use_safetensors": safetensors,
        "output_loading_info": True,
    }
    text_options = {
        "dtype": dtype,
        "local_files_only": True,
        "use_safetensors": safetensors,
        "output_loading_info": True,
    }
    return {
        "tokenizer": lambda: _tokenizer(CLIPTokenizer, folder / "tokenizer"),
        "text_encoder": lambda: complete(
            CLIPTextModel.from_pretrained(folder / "text_encoder", **text_options)
        ),
        "tokenizer_2": lambda: _tokenizer(CLIPTokenizer, folder / "tokenizer_2"),
        "text_encoder_2": lambda: complete(
            CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", **text_options)
        ),
        "unet": lambda: complete(
            UNet2DConditionModel.from_pretrained(
                folder / "unet", low_cpu_mem_usage=False, **diffusers_options
            )
        ),
        "vae": lambda: complete(
            AutoencoderKL.from_pretrained(
                folder / "vae", low_cpu_mem_usage=False, **diffusers_options
            )
        ),
        "scheduler_config": lambda: _read_json(folder / "scheduler" / "scheduler_config.json"),
    }


def load_network(cls: Any, folder: Path, failed: Callable[[str], str], **options: Any) -> Any:
    """`cls.from_pretrained(folder, **options)` from local safetensors only, quietly, checked
    whole (complete); one that cannot load is one line, `failed(why)`."""
    try:
        with quiet_loading():
            loaded = cls.from_pretrained(
                folder,
                local_files_only=True,
                use_safetensors=True,
                output_loading_info=True,
                **options,
            )
        return complete(loaded)
    except PART_ERRORS as exc:
        raise InvokeError(failed(first_line(exc))) from exc


def first_line(exc: Exception) -> str:
    """An exception's first line (at most 200 characters), or its name when it has no text."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def complete(loaded: tuple[Any, dict[str, Any]]) -> Any:
    """A network from from_pretrained(output_loading_info=True), refused when its weights file
    lacks weights its config.json asks for: both libraries fill those with random (diffusers:
    uninitialised) numbers and only log it. (Weights the config does not use are left out, as
    the libraries do: a file may carry extras.)"""
    model, info = loaded
    missing = [k for k in info.get("missing_keys", ()) if not k.endswith("position_ids")]
    if missing:
        raise ValueError(
            f"config.json asks for {len(missing)} weights its weights file lacks, e.g. "
            f"{sorted(missing)[0]}; the config or the file is from another model"
        )
    return model


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
