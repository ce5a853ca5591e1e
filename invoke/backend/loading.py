"""Loading a model onto a device: a diffusers folder or one original-layout checkpoint -> Model.

Sources: a diffusers folder (SD 1.x/2.x, SDXL base and refiner, Kandinsky 2.2), or one original-
layout checkpoint file (single_file.py). The family is read from the files (families/), and the
family loads its parts (components.py: each on its own from local files, safetensors unless the
user allowed pickle: model files are untrusted), so a broken folder is reported as the one part
that is wrong, in one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from invoke.backend import speed
from invoke.backend.components import COMPONENTS
from invoke.backend.device import pick_device, pick_dtype
from invoke.backend.families import (
    FAMILIES,
    Family,
    check_family,
    checkpoint_family,
    folder_family,
    recommended_sampler,
)
from invoke.backend.model import Model
from invoke.backend.offload import enable_offload
from invoke.backend.run import RUNNER
from invoke.backend.schedulers import schedule_problem
from invoke.backend.single_file import read_checkpoint, v_prediction_from_yaml
from invoke.errors import ModelError

# 4: plain latents; 9: an inpainting UNet, which also sees the mask and the masked image's latents.
UNET_CHANNELS = (4, 9)
LATENT_CHANNELS = 4  # what the VAE makes and the UNet denoises (an inpainting UNet reads 9)
# A UNet's sample_size, in latent cells a side: 512 cells are 4096 pixels, the largest -W/-H.
MAX_SAMPLE_SIZE = 512
# transformers' model_max_length when a tokenizer_config.json gives none (VERY_LARGE_INTEGER).
UNSET_MAX_LENGTH = int(1e29)


def load_model(
    path: str | Path,
    device: str = "auto",
    precision: str = "auto",
    name: str | None = None,
    *,
    offload: bool = False,
    allow_pickle: bool = False,
    compile: bool | None = None,
    family: str | None = None,
    config: str | Path | None = None,
    vae: str | Path | None = None,
) -> Model:
    """Load a diffusers folder or a single checkpoint file; raise ModelError naming what is wrong.

    offload: keep parts in CPU memory, on the GPU only while used (small GPUs; no-op on the CPU).
    allow_pickle: let pickle checkpoints (.ckpt/.pt/.bin) load, still with weights_only=True.
    compile: torch.compile the UNet (None = decide by device and workload).
    family: the family when the files cannot tell (SD 2.x single files: sd-2 or sd-2-v).
    config: a diffusers config folder for a single file (default: the family's shipped one).
    vae: another VAE for the model (a VAE folder, a model folder, or one VAE file).
    """
    source = Path(path).expanduser()
    if source.is_file():
        return _load_file(
            source, device, precision, name, offload, allow_pickle, compile, family, config, vae
        )
    folder = source
    index = _read_index(folder)
    detected = FAMILIES[folder_family(folder, index)]
    chosen = detected if family is None else check_family(family)
    if chosen.files != detected.files:
        raise ModelError(
            f"model {folder}: family {chosen.name} given, but the folder holds {detected.name}"
        )
    components = chosen.components(index)
    missing = [c for c in components if not (folder / c).is_dir()]
    if missing:
        raise ModelError(f"model {folder}: missing {', '.join(m + '/' for m in missing)}")
    if not allow_pickle:
        _refuse_pickle_only(folder, components)

    torch_device = pick_device(device)
    dtype = pick_dtype(precision, torch_device)
    parts = chosen.load(
        folder, index, torch_device, dtype, offload=offload, allow_pickle=allow_pickle
    )
    if vae is not None:
        chosen.replace_vae(parts, vae, dtype, allow_pickle)
    return _finish(
        name or folder.name, folder, torch_device, dtype, chosen, parts, offload, compile,
        _preview_factors(folder),
    )  # fmt: skip


def _read_index(folder: Path) -> dict[str, Any]:
    """A diffusers folder's model_index.json."""
    if not folder.is_dir():
        raise ModelError(
            f"model {folder}: no such folder or file; give a diffusers model folder or a "
            f".safetensors checkpoint"
        )
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelError(
            f"model {folder}: not a diffusers model folder (no model_index.json); "
            f"it needs model_index.json and {', '.join(COMPONENTS)}/"
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"model {folder}: model_index.json is unreadable ({err})") from err
    if not isinstance(index, dict):
        raise ModelError(f"model {folder}: model_index.json is not a JSON object")
    return index


def _load_file(
    file: Path,
    device: str,
    precision: str,
    name: str | None,
    offload: bool,
    allow_pickle: bool,
    compile: bool | None,
    family: str | None,
    config: str | Path | None,
    vae: str | Path | None = None,
) -> Model:
    torch_device = pick_device(device)
    dtype = pick_dtype(precision, torch_device)
    checkpoint = read_checkpoint(file, allow_pickle)  # the pickle refusal comes first
    if family is not None:
        chosen = check_family(family)
    else:
        try:
            chosen = FAMILIES[checkpoint_family(checkpoint, v_prediction_from_yaml(file))]
        except ModelError as err:
            raise ModelError(f"model {file}: {err}") from None
    loaded, parts = chosen.load_checkpoint(file, checkpoint, dtype, config)
    chosen = FAMILIES[loaded]  # sd-2 with a .yaml beside it that says v-prediction: sd-2-v
    if vae is not None:
        chosen.replace_vae(parts, vae, dtype, allow_pickle)
    return _finish(
        name or file.stem, file, torch_device, dtype, chosen, parts, offload, compile, {}
    )


def _finish(
    name: str,
    path: Path,
    torch_device: torch.device,
    dtype: torch.dtype,
    family: Family,
    parts: dict[str, Any],
    offload: bool,
    compile: bool | None,
    preview: dict[str, Any],
) -> Model:
    check_settings(path, parts)
    for module in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if parts.get(module) is not None:
            parts[module].eval().requires_grad_(False)
            if not offload and parts.get("pipeline") is None:
                parts[module].to(torch_device)
    if family.latent_rgb is not None and "latent_rgb_factors" not in preview:
        factors, bias = family.latent_rgb
        preview |= {"latent_rgb_factors": factors, "latent_rgb_bias": bias}
    recommended = preview.pop("recommended_sampler", None)
    cell = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    model = Model(
        name=name, path=path, device=torch_device, dtype=dtype, runner=RUNNER,
        family=family.name, size_multiple=family.size_multiple(cell),
        default_sampler=recommended or family.default_sampler, **parts, **preview,
    )  # fmt: skip
    if offload and model.pipeline is None:
        model.offloader = enable_offload(model)
    # The CUDA fast path (channels_last, fused QKV, compile where it pays): see speed.py.
    speed.prepare(model, compile)
    return model


def check_settings(path: Path, parts: dict[str, Any]) -> None:
    """The numbers in the parts' configs that the rest of the code relies on, each refused in
    one line naming its file: a damaged or hand-edited config fails here, at load, and not
    halfway through a line as a library's error (or a black picture)."""
    unet, vae = parts["unet"].config, parts["vae"].config
    if unet.in_channels not in UNET_CHANNELS:
        raise ModelError(
            f"model {path}: its UNet takes {unet.in_channels} input channels; "
            f"only 4 (Stable Diffusion) or 9 (its inpainting models) are supported"
        )
    problem = schedule_problem(parts["scheduler_config"])
    if problem is not None:
        raise ModelError(f"model {path}: scheduler/scheduler_config.json: {problem}")
    for tokenizer, encoder in (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2")):
        _fit_tokenizer(path, parts.get(tokenizer), parts.get(encoder), tokenizer)
    if parts.get("pipeline") is None:  # our loop joins the parts (Kandinsky's pipeline its own)
        _check_loop_parts(path, unet, vae, parts)


def _check_loop_parts(path: Path, unet: Any, vae: Any, parts: dict[str, Any]) -> None:
    """What our loop reads of the configs, and parts that fit one another: a folder assembled
    from two models (another model's VAE or text encoder copied in) would otherwise fail at its
    first step with a matrix-shape error."""
    size = unet.sample_size
    if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= MAX_SAMPLE_SIZE:
        raise ModelError(
            f"model {path}: unet/config.json has sample_size {size!r}; it must be a whole "
            f"number in 2..{MAX_SAMPLE_SIZE} (latent cells a side: 64 for SD 1.5)"
        )
    scale = getattr(vae, "scaling_factor", 1.0)
    if not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0):
        raise ModelError(
            f"model {path}: vae/config.json has scaling_factor {scale!r}; it must be a number "
            f"above 0 (0.18215 for SD 1.5)"
        )
    if vae.latent_channels != LATENT_CHANNELS or unet.out_channels != LATENT_CHANNELS:
        raise ModelError(
            f"model {path}: its VAE has {vae.latent_channels} latent channels and its UNet "
            f"gives {unet.out_channels}; Stable Diffusion's parts both have {LATENT_CHANNELS} "
            f"(are vae/ and unet/ from the same model?)"
        )
    encoders = [parts[e] for e in ("text_encoder", "text_encoder_2") if parts.get(e) is not None]
    width = sum(int(e.config.hidden_size) for e in encoders)
    if isinstance(unet.cross_attention_dim, int) and width != unet.cross_attention_dim:
        raise ModelError(
            f"model {path}: its UNet reads text {unet.cross_attention_dim} wide but its text "
            f"encoder{'s give' if len(encoders) > 1 else ' gives'} {width} (are unet/ and "
            f"text_encoder/ from the same model?)"
        )


def _fit_tokenizer(path: Path, tokenizer: Any, encoder: Any, name: str) -> None:
    """A tokenizer's model_max_length within its text encoder's positions (77 for CLIP).

    transformers says 10^30 when tokenizer_config.json gives none: that means "as many as the
    encoder takes"; an explicit number outside 3..positions is refused."""
    positions = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    if tokenizer is None or not isinstance(positions, int):
        return
    length = tokenizer.model_max_length
    if length >= UNSET_MAX_LENGTH:
        tokenizer.model_max_length = positions
    elif not 3 <= length <= positions:
        raise ModelError(
            f"model {path}: {name}/tokenizer_config.json has model_max_length {length}; its "
            f"text encoder takes 3..{positions} tokens"
        )


def _refuse_pickle_only(folder: Path, components: tuple[str, ...]) -> None:
    """A part whose weights exist only as pickle (.bin/.ckpt/.pt) needs --allow-pickle."""
    for part in components:
        files = [p.suffix for p in (folder / part).iterdir() if p.is_file()]
        if (
            any(s in (".bin", ".ckpt", ".pt", ".pth") for s in files)
            and ".safetensors" not in files
        ):
            raise ModelError(
                f"model {folder}: {part}/ has only pickle weights (.bin), which can run code "
                f"when loaded; pickle files need --allow-pickle"
            )


def _preview_factors(folder: Path) -> dict[str, Any]:
    """What a model folder's training.json (the default model's) says of it: its VAE's own
    latent->RGB fit, whether its previews are decodes ("preview": "decode") and the sampler it
    works best with.

    SD 1.x's table is wrong for any other VAE; a missing or unusable file just keeps it.
    """
    try:
        meta = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    decodes = isinstance(meta, dict) and meta.get("preview") == "decode"
    notes: dict[str, Any] = {"preview_decodes": decodes}
    recommended = recommended_sampler(folder)
    if recommended is not None:
        notes["recommended_sampler"] = recommended
    try:
        factors = tuple(tuple(float(v) for v in row) for row in meta["latent_rgb_factors"])
        bias = tuple(float(v) for v in meta.get("latent_rgb_bias", (0.0, 0.0, 0.0)))
    except (ValueError, KeyError, TypeError):
        return notes
    if len(factors) == 4 and all(len(row) == 3 for row in factors) and len(bias) == 3:
        notes |= {"latent_rgb_factors": factors, "latent_rgb_bias": bias}
    return notes
