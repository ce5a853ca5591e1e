"""Settings: built-in defaults < configs/models.yaml < launch options < line switches, merged once.
Launch options come from the defaults file (invoke.init), then the command line.

Pure: no torch. `Settings` is immutable; `resolve()` turns a parsed line into a complete request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from invoke.config.user_dir import user_config_path as user_config_path  # its home is user_dir
from invoke.errors import InvokeError
from invoke.line.request import Request
from invoke.line.switch_defaults import OUTCROP_STRENGTH, REFINER_START
from invoke.line.switches import SEAMLESS_AXES
from invoke.outputs.folder import DEFAULT_PNG_COMPRESSION
from invoke.outputs.names import DEFAULT_FNFORMAT

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # invoke/
EMBEDDED_MODEL_DIR = PACKAGE_DIR / "default_model"

# What a line gets when neither the line, the launch options nor the model say otherwise.
BUILTIN_DEFAULTS = Request(
    steps=50,
    cfg_scale=7.5,
    sampler="k_lms",
    strength=0.75,
)
DEFAULT_OUTDIR = Path("outputs") / "img-samples"
SIZE_MULTIPLE = 8  # what the VAE needs; InvokeAI used 64


# models.yaml: the keys an entry may have, and what each one means (also the error hints).
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
    allow_downloads: bool = False  # repo_id models: fetch from the hub when not cached
    lora_dir: Path | None = None  # where withLora(name) looks; None = LORAS.folder()'s default
    embedding_dir: Path | None = None  # where <name> looks; None = EMBEDDINGS.folder()'s default
    controlnet_dir: Path | None = None  # where --controlnet looks; None = CONTROLNETS.folder()'s
    ip_adapter_dir: Path | None = None  # where --ip_adapter looks; None = IP_ADAPTERS.folder()'s
    upscaler_dir: Path | None = None  # where -U finds upscalers; None = UPSCALERS.folder()'s
    threads: int | None = None  # torch's CPU threads; None = the free cores (device.use_threads)


def round_size(value: int, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, value - value % multiple)


def resolve(
    request: Request,
    settings: Settings,
    native_size: tuple[int, int],
    multiple: int = SIZE_MULTIPLE,
    model_defaults: Request | None = None,
) -> tuple[Request, list[str]]:
    """Fill every unset switch: line > launch options > the model's > built-in defaults.

    Returns the complete request and notes for the user (sizes rounded to the model's multiple).
    Seeds and init images are resolved later, by the session.
    """
    merged = request
    if merged.outcrop and merged.strength is None:
        merged = replace(merged, strength=OUTCROP_STRENGTH)  # before any default strength
    for layer in (settings.defaults, model_defaults or Request(), BUILTIN_DEFAULTS):
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
    if merged.outcrop:
        merged = _round_outcrop(merged, multiple, notes)
    if merged.init_img is None:
        if merged.init_mask is not None:
            raise InvokeError("-M/--init_mask: a mask needs an init image; add -I FILE")
        # fit and mask inversion only mean something for img2img; strength also for
        # --hires_fix, whose second pass is img2img (so its line keeps -f and remakes exactly)
        strength = merged.strength if merged.hires_fix else None
        merged = replace(merged, strength=strength, fit=False, invert_mask=False)
    if not merged.seamless or set(merged.seamless_axes) == set(SEAMLESS_AXES):
        # Axes only mean something with --seamless, and both axes is what --seamless alone
        # means: the printed command says it the short way, as InvokeAI wrote it.
        merged = replace(merged, seamless_axes=())
    if merged.refiner is not None and merged.refiner_start is None:
        merged = replace(merged, refiner_start=REFINER_START)  # the command says where it split
    return merged, notes


def _round_outcrop(request: Request, multiple: int, notes: list[str]) -> Request:
    """--outcrop's pixels rounded up to the model's cell, so the canvas stays a size the model
    takes (InvokeAI rounded up to 64); up, so a side never gets less than was asked for."""
    pairs = tuple((side, -(-pixels // multiple) * multiple) for side, pixels in request.outcrop)
    changed = [
        f"{side} {old} to {new}"
        for (side, old), (_, new) in zip(request.outcrop, pairs, strict=True)
        if old != new
    ]
    if changed:
        notes.append(f"--outcrop: {', '.join(changed)} (rounded up to a multiple of {multiple})")
    return replace(request, outcrop=pairs)


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
