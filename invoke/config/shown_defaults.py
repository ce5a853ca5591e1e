"""What each line switch is when a line leaves it out, in words: the one home of that knowledge.

`!help` shows it for the active model and this session's launch options; docs/switches.md's
table (tests/test_docs.py) for the default model; `invoke --help` says the true default sampler
with `sampler_help()`. Each value is read from the code that decides it (settings' built-in
defaults, the model's own size and sampler, the backend's and the outputs' defaults), so the
words cannot drift from what a line gets.

Torch-free: `invoke --help` reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from invoke.config.models_yaml import ModelEntry
from invoke.config.settings import BUILTIN_DEFAULTS, DEFAULT_OUTDIR, EMBEDDED_MODEL_DIR, Settings
from invoke.line.switch_defaults import OUTCROP_STRENGTH, UPSCALER_REPOS
from invoke.line.switches import SEAMLESS_AXES, UPSCALE_STRENGTH, number_text
from invoke.line.table import SWITCHES
from invoke.outputs.folder import DEFAULT_PNG_COMPRESSION
from invoke.outputs.names import DEFAULT_FNFORMAT


@dataclass(frozen=True)
class ActiveModel:
    """The active model as the shell's banner and `!help` describe it, without loading it."""

    name: str
    kind: str  # "embedded", "folder", "file", "hub" (model_kind)
    size: tuple[int, int] | None  # None: a checkpoint file, whose size is known once read
    sampler: str  # what a line without -A gets on it
    device: str  # where it runs (or will): "cpu", "cuda", ...


def model_kind(entry: ModelEntry) -> str:
    """Where a model's files come from, in one word."""
    if entry.embedded:
        return "embedded"
    if entry.file is not None:
        return "file"
    if entry.repo_id is not None and entry.path is None:
        return "hub"
    return "folder"


def size_text(size: tuple[int, int]) -> str:
    """64x64 as `64 px`, 512x768 as `512x768 px`."""
    return f"{size[0]} px" if size[0] == size[1] else f"{size[0]}x{size[1]} px"


def embedded_sampler() -> str:
    """The default model's sampler, as its training.json recommends (torch-free: the backend
    reads the same key when it loads the model), else the built-in default."""
    try:
        recommended = json.loads((EMBEDDED_MODEL_DIR / "training.json").read_text())
    except (OSError, ValueError):
        return str(BUILTIN_DEFAULTS.sampler)
    value = recommended.get("default_sampler") if isinstance(recommended, dict) else None
    return value if isinstance(value, str) else str(BUILTIN_DEFAULTS.sampler)


def sampler_help() -> str:
    """`invoke --sampler`'s help: the default it overrides, which is the model's own."""
    return (
        f"Default -A [the model's own: {embedded_sampler()} on the default model, "
        f"{BUILTIN_DEFAULTS.sampler} on Stable Diffusion]."
    )


def switch_defaults(
    model: ActiveModel | None = None, settings: Settings | None = None
) -> dict[str, str]:
    """Each switch's field -> what a line without it gets, in words. Without `model` it says what
    the default model gets (the docs); with it, what the active model gets, and with `settings`
    the launch options' defaults win, as `resolve` has them win."""
    from invoke.backend.job import Control, Job  # plain data; no torch

    known = {**_general(Control, Job), **_of_model(model)}
    launch = settings.defaults if settings is not None else None
    if settings is not None:
        known["outdir"] = f"{settings.outdir.as_posix()} (the launch --outdir)"
        known["fnformat"] = f"{settings.fnformat} (the launch --fnformat)"
    defaults = {}
    for switch in SWITCHES:
        given = getattr(launch, switch.field, None) if launch is not None else None
        builtin = getattr(BUILTIN_DEFAULTS, switch.field, None)
        if given not in (None, (), "", False):
            shown = "on" if given is True else switch.show(given)
            defaults[switch.field] = f"{shown} (a launch option)"
        elif switch.field in known:
            defaults[switch.field] = known[switch.field]
        elif not switch.takes_value:
            defaults[switch.field] = "off"
        elif builtin not in (None, (), ""):
            defaults[switch.field] = number_text(builtin) if _number(builtin) else str(builtin)
        else:
            defaults[switch.field] = "none"
    return defaults


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _general(control: type, job: type) -> dict[str, str]:
    """The defaults no model changes."""

    def field_default(cls: type, name: str) -> object:
        return next(f.default for f in fields(cls) if f.name == name)

    return {
        "seed": "random",
        "iterations": "1",
        "strength": f"{BUILTIN_DEFAULTS.strength}; {OUTCROP_STRENGTH} with --outcrop",
        "control_weight": number_text(field_default(control, "weight")),
        "control_start": number_text(field_default(control, "start")),
        "control_end": number_text(field_default(control, "end")),
        "ip_weight": "1",  # backend/job.ImagePrompt's weight, as prepare.py fills it in
        "seamless_axes": ",".join(SEAMLESS_AXES),
        "upscale": f"none; STRENGTH {UPSCALE_STRENGTH}",
        "upscaler": ", ".join(f"{repo} for -U {f}" for f, repo in UPSCALER_REPOS.items()),
        "outdir": f"the launch --outdir [{DEFAULT_OUTDIR.as_posix()}]",
        "save_intermediates": f"{field_default(job, 'intermediate_every')} (none)",
        "intermediates": str(field_default(job, "intermediates")),
        "fnformat": f"the launch --fnformat [{DEFAULT_FNFORMAT}]",
        "png_compression": str(DEFAULT_PNG_COMPRESSION),
    }


def _of_model(model: ActiveModel | None) -> dict[str, str]:
    """Size and sampler: the active model's own, or (for the docs) the default model's."""
    if model is None:
        from invoke.config.model_files import native_size

        width, height = native_size(EMBEDDED_MODEL_DIR)
        sampler = str(BUILTIN_DEFAULTS.sampler)
        own = embedded_sampler()
        if own != sampler:
            sampler = f"{sampler}; the default model's: {own}"
        return {
            "width": f"the model's width ({width} on the default model)",
            "height": f"the model's height ({height} on the default model)",
            "sampler": sampler,
        }
    whose = "the active model's"
    if model.size is None:
        size = {side: f"the model's {side}, known once it is read" for side in ("width", "height")}
    else:
        size = {"width": f"{model.size[0]} ({whose})", "height": f"{model.size[1]} ({whose})"}
    sampler = model.sampler
    if sampler != BUILTIN_DEFAULTS.sampler:
        sampler = f"{sampler} ({whose})"
    return {**size, "sampler": sampler}
