"""Settings: built-in defaults < configs/models.yaml < launch options < line switches, merged once.

Pure: no torch. `Settings` is immutable; `resolve()` turns a parsed line into a complete request.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from invoke.errors import InvokeError, ModelError
from invoke.request import Request

PACKAGE_DIR = Path(__file__).resolve().parent
EMBEDDED_MODEL_DIR = PACKAGE_DIR / "default_model"
SHIPPED_CONFIG = PACKAGE_DIR.parent / "configs" / "models.yaml"

# What a line gets when neither the line, the launch options nor the model say otherwise.
BUILTIN_DEFAULTS = Request(
    steps=50,
    cfg_scale=7.5,
    sampler="k_lms",
    strength=0.75,
)
DEFAULT_OUTDIR = Path("outputs") / "img-samples"
DEFAULT_FNFORMAT = "{prefix}.{seed}.png"
DEFAULT_PNG_COMPRESSION = 6
SIZE_MULTIPLE = 8  # what the VAE needs; InvokeAI used 64


@dataclass(frozen=True)
class ModelEntry:
    """One entry of models.yaml."""

    name: str
    description: str = ""
    path: Path | None = None  # a local diffusers folder; None with `embedded`
    embedded: bool = False
    width: int | None = None
    height: int | None = None
    default: bool = False


@dataclass(frozen=True)
class Settings:
    """Everything fixed at launch."""

    outdir: Path = DEFAULT_OUTDIR
    model: str | None = None  # a models.yaml name or a folder path; None = the default entry
    config: Path | None = None
    precision: str = "auto"
    device: str = "auto"
    fnformat: str = DEFAULT_FNFORMAT
    png_compression: int = DEFAULT_PNG_COMPRESSION
    defaults: Request = field(default_factory=Request)  # line-switch defaults given at launch
    debug: bool = False
    offload: bool = False  # model parts on the GPU only while used
    allow_pickle: bool = False  # pickle checkpoints are code: refused unless asked for
    compile: bool | None = None  # torch.compile the UNet; None = where it pays
    max_loaded_models: int = 2  # models kept in memory for a fast !switch


def user_config_path() -> Path:
    """Where a user's own models.yaml lives, by platform convention."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "invoke-dream" / "models.yaml"


def config_path(settings: Settings) -> Path | None:
    """--config wins; then the user's copy; then the shipped one (absent when not a checkout)."""
    if settings.config is not None:
        if not settings.config.is_file():
            raise InvokeError(
                f"--config: {settings.config} does not exist; give a models.yaml file"
            )
        return settings.config
    for candidate in (user_config_path(), SHIPPED_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_model_entries(path: Path | None) -> dict[str, ModelEntry]:
    """Read models.yaml; without one, the embedded model is the only entry."""
    if path is None:
        return {
            "default": ModelEntry("default", "embedded default model", embedded=True, default=True)
        }
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read the model list ({exc.__class__.__name__})") from exc
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: expected named model entries at the top level")
    entries: dict[str, ModelEntry] = {}
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise ModelError(f"{path}: entry {name!r} must be a mapping of settings")
        source = body.get("path")
        entries[str(name)] = ModelEntry(
            name=str(name),
            description=str(body.get("description", "")),
            path=(path.parent / source).resolve() if source else None,
            embedded=bool(body.get("embedded", False)),
            width=body.get("width"),
            height=body.get("height"),
            default=bool(body.get("default", False)),
        )
    if not entries:
        raise ModelError(f"{path}: no models listed")
    return entries


def pick_model(settings: Settings) -> ModelEntry:
    """The entry `--model` names (a name or a folder), else the `default: true` one."""
    entries = load_model_entries(config_path(settings))
    wanted = settings.model
    if wanted is None:
        defaults = [e for e in entries.values() if e.default]
        return defaults[0] if defaults else next(iter(entries.values()))
    if wanted in entries:
        return entries[wanted]
    folder = Path(wanted).expanduser()
    if folder.exists():
        return ModelEntry(name=folder.name, description=str(folder), path=folder.resolve())
    known = ", ".join(sorted(entries))
    raise ModelError(f"--model: {wanted} is neither a model in models.yaml ({known}) nor a path")


def round_size(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, value - value % multiple)


def resolve(
    request: Request,
    settings: Settings,
    native_size: tuple[int, int],
    multiple: int = SIZE_MULTIPLE,
) -> tuple[Request, list[str]]:
    """Fill every unset switch: line > launch options > model size > built-in defaults.

    Returns the complete request and notes for the user (sizes rounded to the model's multiple).
    Seeds and init images are resolved later, by the session.
    """
    merged = request
    for layer in (settings.defaults, BUILTIN_DEFAULTS):
        merged = _fill(merged, layer)
    notes: list[str] = []
    width = merged.width if merged.width is not None else native_size[0]
    height = merged.height if merged.height is not None else native_size[1]
    rounded = (round_size(width, multiple), round_size(height, multiple))
    if rounded != (width, height):
        notes.append(
            f"size {width}x{height} rounded down to {rounded[0]}x{rounded[1]} "
            f"(a multiple of {multiple})"
        )
    merged = replace(merged, width=rounded[0], height=rounded[1])
    if merged.init_img is None:
        # strength, fit and masks only mean something for img2img
        merged = replace(merged, strength=None, fit=False)
    return merged, notes


def _fill(request: Request, layer: Request) -> Request:
    """Take each of `layer`'s values where `request` has none (flags: either one set)."""
    changes = {}
    for name in request.__dataclass_fields__:
        mine, theirs = getattr(request, name), getattr(layer, name)
        if isinstance(mine, bool):
            changes[name] = mine or theirs
        elif mine is None and theirs is not None:
            changes[name] = theirs
    return replace(request, **changes)
