"""File names: the one home of the `--fnformat` template, prefixes, and the names derived from
them (grids, intermediates folders, the `-1`, `-2`... names that keep a file from being
overwritten).

Every name built from a template is a safe name inside the output folder: templates never
leave it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence

from invoke.errors import OutputError
from invoke.line.request import Request
from invoke.line.table import SWITCHES

DEFAULT_FNFORMAT = "{prefix}.{seed}.png"
MAX_NAME_BYTES = 200

# Names Windows refuses for files whatever the extension; refused everywhere so outputs copy across.
_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)
# Bidi controls too: they make a name display as another (`x\u202egnp.exe` shows as `xexe.png`).
_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\u202a-\u202e\u2066-\u2069]')
_PREFIX_RE = re.compile(r"^(\d{6,})\.")


def check_fnformat(fnformat: str) -> None:
    """Raise ParseError (naming --fnformat) unless `fnformat` is a valid file name template.

    The line parser owns the rules (known fields only, small format specs, ends in .png); a
    template from the launch options or a config file gets the same check here.
    """
    switch = next(s for s in SWITCHES if s.field == "fnformat")
    switch.check(fnformat)


def sanitize_file_name(name: str) -> str:
    """A safe file name inside a folder: no separators, NUL, control chars, hidden/device names.

    Applied to every name built from a template, so `../x`, `/etc/x`, `CON.png`, `.bashrc` and
    names with NUL all become plain files in the output folder.
    """
    name = unicodedata.normalize("NFC", name)
    name = _UNSAFE_NAME_CHARS.sub("_", name)
    # Leading dots hide files (and `..` climbs); trailing dots/spaces are dropped by Windows.
    name = name.strip(" ").lstrip(".").rstrip(". ")
    stem, dot, ext = name.partition(".")
    if stem.upper().rstrip(" ") in _RESERVED_NAMES:
        name = f"_{stem}{dot}{ext}"
    if not name.lower().endswith(".png"):
        name = f"{name}.png" if name else "image.png"
    if name == ".png":
        name = "image.png"
    while len(name.encode("utf-8")) > MAX_NAME_BYTES:
        stem = name[: -len(".png")]
        name = stem[: max(1, len(stem) - 8)] + ".png"
    return name


def format_file_name(
    fnformat: str,
    *,
    prefix: str,
    seed: int | None,
    steps: int | None = None,
    cfg_scale: float | None = None,
    sampler: str | None = None,
    width: int | None = None,
    height: int | None = None,
    iteration: int = 1,
) -> str:
    """Fill a `--fnformat` template; the result is a safe file name (see sanitize_file_name)."""
    check_fnformat(fnformat)
    fields = {
        "prefix": prefix,
        "seed": seed,
        "steps": steps,
        "cfg_scale": cfg_scale,
        "sampler": sampler,
        "width": width,
        "height": height,
        "iteration": iteration,
    }
    try:
        name = fnformat.format_map(fields)
    except (ValueError, TypeError) as err:
        raise OutputError(f"--fnformat: {fnformat!r} cannot be filled in ({err})") from None
    return sanitize_file_name(name)


def file_seed(request: Request) -> int | None:
    """The seed a file is named by: its last variation seed, else its own (InvokeAI's naming),
    so the images of one `-v` command get distinct names."""
    if request.with_variations:
        return request.with_variations[-1].seed
    return request.seed


def image_name(fnformat: str, prefix: str, request: Request, iteration: int = 1) -> str:
    """The file name (no folder) of one image made from `request`, by the template `fnformat`."""
    return format_file_name(
        fnformat,
        prefix=prefix,
        seed=file_seed(request),
        steps=request.steps,
        cfg_scale=request.cfg_scale,
        sampler=request.sampler,
        width=request.width,
        height=request.height,
        iteration=iteration,
    )


def grid_name(prefix: str, requests: Sequence[Request]) -> str:
    """`<prefix>.<first image's file seed>.grid.png`: each image of a grid is saved on its own
    too, so the grid's name says what it is."""
    return sanitize_file_name(f"{prefix}.{file_seed(requests[0])}.grid.png")


def step_folder_name(prefix: str, seed: int | None) -> str:
    """`<prefix>.<seed>`: the folder of one image's intermediates."""
    return sanitize_file_name(f"{prefix}.{seed}.png")[: -len(".png")]


def prefix_text(number: int) -> str:
    """A prefix as file names carry it: `000001`."""
    return f"{number:06d}"


def prefix_of(name: str) -> int | None:
    """The number of a file name's `NNNNNN.` prefix, None when it has none."""
    m = _PREFIX_RE.match(name)
    return int(m.group(1)) if m else None


def alternatives(name: str) -> Iterator[str]:
    """`a.png`, then `a-1.png`, `a-2.png`, ...: the names tried so nothing is overwritten."""
    yield name
    stem = name[: -len(".png")] if name.lower().endswith(".png") else name
    for n in range(1, 10_000):
        yield f"{stem}-{n}.png"
