"""Single checkpoint files in the original (LDM / sgm) layout, loaded offline.

The weights come from the file; the architecture comes from a diffusers-format config folder:
one shipped per family in configs/model-configs/ (made by scripts/make_model_configs.py), or the
user's own (`<file stem>.config/` beside the checkpoint, or `config=`). diffusers' key conversion
functions rename the weights; we build and fill each part ourselves so that a checkpoint that does
not fit its config is an error naming the missing weights, not a silently random part.

Model files are untrusted: safetensors by default; pickle files (.ckpt/.pt/.pth/.bin) only when
the user allowed them, and then through torch.load(weights_only=True), which unpickles tensors and
plain containers only, never arbitrary objects.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from invoke import CONFIGS_DIR
from invoke.backend.components import weights_name
from invoke.backend.finite import check_weights
from invoke.errors import ModelError

CONFIG_ROOT = CONFIGS_DIR / "model-configs"
TOKENIZER_FILES = CONFIG_ROOT / "clip-tokenizer"
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SIDECAR_CONFIG = ".config"  # model.safetensors + model.config/ (a diffusers config folder)
UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"

PART_NAMES = {
    "unet": "UNet",
    "vae": "VAE",
    "text_encoder": "text encoder",
    "text_encoder_2": "second text encoder",
}

# A family's text encoders in a checkpoint: (part, the prefix its weights live under, OpenCLIP
# layout?) for each (families/ say theirs).
TextEncoders = tuple[tuple[str, str, bool], ...]


def read_checkpoint(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    """The file's tensors by name, on the CPU."""
    suffix = path.suffix.lower()
    if suffix not in SAFE_SUFFIXES + PICKLE_SUFFIXES:
        raise ModelError(
            f"model {path}: {suffix or 'no suffix'} is not a model file; give a diffusers folder, "
            f"a .safetensors checkpoint, or a .ckpt/.pt/.bin one with --allow-pickle"
        )
    data = read_weights(path, allow_pickle)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]  # Lightning checkpoints wrap the weights
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelError(f"model {path}: the file holds no table of weights")
    return data


def read_weights(path: Path, allow_pickle: bool, kind: str = "model", what: str = "") -> Any:
    """A .safetensors file's tensors by name, or what a pickle file (.ckpt/.pt/.bin) holds, on
    the CPU. Errors begin with `what` (default: "model PATH") and say what to do about the
    `kind` of file it is."""
    what = what or f"{kind} {path}"
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelError(
                f"{what}: {suffix} is a pickle file, which can run code when loaded; "
                f"pickle files need --allow-pickle (then only tensors are read), or convert it "
                f"to .safetensors"
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
            # weights_only refuses anything but tensors and containers with UnpicklingError.
            raise ModelError(f"{what}: cannot read the pickle file ({_first(err)})") from err
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except SafetensorError as err:
        # A bad header or a truncated download: nothing to fix but fetching the file again.
        raise ModelError(
            f"{what}: is damaged ({_first(err)}); download or convert the {kind} again"
        ) from err
    except OSError as err:  # permissions, a folder named *.safetensors: not the file's fault
        raise ModelError(f"{what}: cannot read the safetensors file ({_first(err)})") from err


def config_folder(path: Path, family: str, config: str | Path | None) -> Path:
    """A checkpoint's diffusers config folder: given, beside it, or the family's shipped one."""
    if config is not None:
        folder = Path(config).expanduser()
    elif path.with_name(path.stem + SIDECAR_CONFIG).is_dir():
        folder = path.with_name(path.stem + SIDECAR_CONFIG)
    else:
        folder = CONFIG_ROOT / family
    if not (folder / "unet" / "config.json").is_file():
        raise ModelError(
            f"model {path}: config folder {folder} has no unet/config.json; give a diffusers "
            f"config folder for this checkpoint"
        )
    return folder


def v_prediction_from_yaml(path: Path) -> bool | None:
    """`parameterization: v` in the original config beside a checkpoint (x.yaml for x.ckpt)."""
    yaml_file = path.with_suffix(".yaml")
    if not yaml_file.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
        params = data["model"]["params"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
        raise ModelError(f"model {path}: cannot read {yaml_file.name} ({_first(err)})") from err
    return params.get("parameterization") == "v" if isinstance(params, dict) else None


def load_single_file(
    path: Path,
    checkpoint: dict[str, torch.Tensor],
    folder: Path,
    dtype: torch.dtype,
    text_encoders: TextEncoders,
) -> dict[str, Any]:
    """The Model's parts from one checkpoint's weights, on the architecture in config `folder`."""
    try:
        parts = _build_parts(checkpoint, folder, text_encoders)
    except (OSError, ValueError, KeyError, RuntimeError, IndexError) as err:
        raise ModelError(f"model {path}: does not fit {folder.name} ({_first(err)})") from err
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if parts.get(part) is not None:
            # nn.Module.to: diffusers' own .to() warns about fp32 modules these models lack.
            torch.nn.Module.to(parts[part], dtype)
            noun = f"{PART_NAMES[part]} weight"
            check_weights(f"model {path}", parts[part], noun=noun, dtype=dtype)
    return parts


def config_index(path: Path, folder: Path) -> dict[str, Any]:
    """The config folder's model_index.json (what a pipeline of this family says of itself)."""
    try:
        return _json(folder / "model_index.json")
    except (OSError, ValueError) as err:
        raise ModelError(f"model {path}: does not fit {folder.name} ({_first(err)})") from err


def _build_parts(
    checkpoint: dict[str, torch.Tensor], folder: Path, text_encoders: TextEncoders
) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    if UNET_IN_KEY not in checkpoint:
        raise KeyError(f"no UNet weights ({UNET_IN_KEY})")
    if checkpoint[UNET_IN_KEY].ndim != 4:
        shape = list(checkpoint[UNET_IN_KEY].shape)
        raise ValueError(f"{UNET_IN_KEY} is {shape}, not a convolution's 4-D weight")
    unet_config = dict(UNet2DConditionModel.load_config(folder / "unet"))
    # The same family comes as a 4-channel and a 9-channel (inpainting) UNet.
    unet_config["in_channels"] = int(checkpoint[UNET_IN_KEY].shape[1])
    unet = _fill(
        UNet2DConditionModel, unet_config, convert_ldm_unet_checkpoint(checkpoint, unet_config)
    )
    vae_config = dict(AutoencoderKL.load_config(folder / "vae"))
    vae = _fill(AutoencoderKL, vae_config, convert_ldm_vae_checkpoint(checkpoint, vae_config))
    parts: dict[str, Any] = {
        "unet": unet,
        "vae": vae,
        "scheduler_config": _json(folder / "scheduler" / "scheduler_config.json"),
        "tokenizer": None,
        "text_encoder": None,
    }
    for part, prefix, open_clip in text_encoders:
        with_projection = part == "text_encoder_2"
        parts[part] = _text_encoder(checkpoint, folder / part, prefix, open_clip, with_projection)
        tokenizer = part.replace("text_encoder", "tokenizer")
        parts[tokenizer] = clip_tokenizer(folder / tokenizer)
    return parts


def load_vae(
    source: str | Path, like: dict[str, Any], dtype: torch.dtype, allow_pickle: bool
) -> Any:
    """A replacement VAE (models.yaml `vae:`): a diffusers VAE folder, a model folder's vae/, or
    one VAE file (original layout, as vae-ft-mse-840000-ema-pruned, or diffusers keys) built on
    the model's own VAE config `like`."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    path = Path(source).expanduser()
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if path.is_dir():
        try:
            vae = AutoencoderKL.from_pretrained(
                path,
                torch_dtype=dtype,
                local_files_only=True,
                use_safetensors=None if allow_pickle else True,
                low_cpu_mem_usage=False,
            )
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            raise ModelError(f"vae {path}: cannot load it ({_first(err)})") from err
        check_weights(f"vae {weights_name(path)}", vae, dtype=dtype)
        return vae.eval()
    if not path.is_file():
        raise ModelError(f"vae {path}: no such folder or file; give a VAE folder or .safetensors")
    state = read_checkpoint(path, allow_pickle)
    config = {k: v for k, v in like.items() if not k.startswith("_")}
    try:
        if not any(k.startswith("decoder.up_blocks.") for k in state):
            state = convert_ldm_vae_checkpoint(state, config)
        vae = _fill(AutoencoderKL, config, state)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"vae {path}: does not fit this model's VAE ({_first(err)})") from err
    torch.nn.Module.to(vae, dtype)
    check_weights(f"vae {path}", vae, dtype=dtype)
    return vae


def clip_tokenizer(settings_folder: Path) -> Any:
    """CLIP's tokenizer: the shared BPE files plus this folder's tokenizer_config.json.

    The 1.6 MB vocabulary is shipped once (configs/model-configs/clip-tokenizer/); the families
    differ only in settings (SD 2.x and SDXL's second tokenizer pad with "!").
    """
    from transformers import CLIPTokenizer

    if (settings_folder / "vocab.json").is_file():  # a user's config folder with its own files
        return CLIPTokenizer.from_pretrained(settings_folder, local_files_only=True)
    settings = _json(settings_folder / "tokenizer_config.json")
    keep = ("bos_token", "eos_token", "unk_token", "pad_token", "model_max_length")
    options = {k: settings[k] for k in keep if isinstance(settings.get(k), (str, int))}
    return CLIPTokenizer(
        vocab=str(TOKENIZER_FILES / "vocab.json"),
        merges=str(TOKENIZER_FILES / "merges.txt"),
        **options,
    )


def _fill(cls: Any, config: dict[str, Any], state: dict[str, torch.Tensor]) -> Any:
    """A diffusers model built from `config` with exactly the converted weights.

    Built on the meta device (no random init of 2.6 B SDXL parameters) and then given the file's
    tensors; any parameter the file lacks is an error.
    """
    with torch.device("meta"):
        model = cls.from_config(config)
    _check_shapes(cls.__name__, model, state)
    missing, _ = model.load_state_dict(state, strict=False, assign=True)
    left = missing or [n for n, t in model.state_dict().items() if t.is_meta]
    if left:
        raise KeyError(f"{cls.__name__} weights missing: {len(left)}, e.g. {left[0]}")
    return model.eval()


def _text_encoder(
    checkpoint: dict[str, torch.Tensor],
    folder: Path,
    prefix: str,
    open_clip: bool,
    projection: bool,
) -> Any:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    if open_clip:
        state = convert_open_clip_checkpoint(model, checkpoint, prefix=prefix)
    else:
        own = {k: v for k, v in checkpoint.items() if k.startswith(prefix)}
        state = convert_ldm_clip_checkpoint(own)
    if not hasattr(model, "text_model"):
        # transformers >= 5.6 flattened CLIPTextModel; the converters still write text_model.*
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    _check_shapes(folder.name, model, state)
    missing, _ = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise KeyError(f"{folder.name} weights missing: {len(missing)}, e.g. {missing[0]}")
    return model.eval()


def _check_shapes(what: str, model: Any, state: dict[str, torch.Tensor]) -> None:
    """A checkpoint of another size than the config (SD 1.x weights, SDXL config...) in one line."""
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(
                f"{what} {key} is {list(value.shape)} in the file but {list(own[key].shape)} "
                f"in the config"
            )


def _json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
