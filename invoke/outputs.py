"""Everything the program writes: image files, their PNG metadata, logs, grids, intermediates.

Nothing else in the package writes files. Three promises hold for every file written here:
- a file under its final name is complete (written to a temporary file, fsynced, then linked into
  place), and no existing file is ever replaced;
- prefixes (`000001`, one per command line) stay unique when several processes share a folder;
- names made from templates never leave the output folder.

`read_command` goes the other way for `!fetch`: a PNG's metadata (ours, InvokeAI's, AUTOMATIC1111's)
back into a canonical command line. The file is untrusted, so its text is only ever parsed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import shlex
import tempfile
import unicodedata
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, PngImagePlugin

from invoke import __version__
from invoke.errors import InvokeError, MetadataError, OutputError
from invoke.prompt_syntax import split_loras
from invoke.request import (
    CONTROL_PROCESSORS,
    SEAMLESS_AXES,
    SWITCHES,
    Request,
    Variation,
)
from invoke.samplers import SAMPLER_TABLE, SAMPLERS
from invoke.settings import OUTCROP_STRENGTH, UPSCALER_REPOS

try:  # POSIX; Windows falls back to msvcrt below
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

APP_ID = "invoke-dream"
APP_VERSION = __version__
DEFAULT_FNFORMAT = "{prefix}.{seed}.png"
DEFAULT_PNG_COMPRESSION = 6
LOG_TXT = "invoke_log.txt"
LOG_MD = "invoke_log.md"
PREFIX_COUNTER = ".next_prefix"
INTERMEDIATES_DIR = "intermediates"
# Metadata chunks are a few hundred bytes; anything far larger is not ours to trust.
MAX_CHUNK_BYTES = 64 * 1024
MAX_NAME_BYTES = 200
METADATA_KEYS = ("Dream", "sd-metadata", "parameters")

# Our sampler names <-> the names AUTOMATIC1111 writes into `parameters`.
A1111_SAMPLERS: dict[str, str] = {name: row.a1111 for name, row in SAMPLER_TABLE.items()}
_SAMPLER_FROM_A1111 = {v.lower(): k for k, v in A1111_SAMPLERS.items()}

# Names Windows refuses for files whatever the extension; refused everywhere so outputs copy across.
_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in [*"123456789", "¹", "²", "³"]]
)
# Bidi controls too: they make a name display as another (`x\u202egnp.exe` shows as `xexe.png`).
_UNSAFE_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|\u202a-\u202e\u2066-\u2069]')
_PREFIX_RE = re.compile(r"^(\d{6,})\.")


# --------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------


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


def _alternatives(name: str) -> Iterator[str]:
    """`a.png`, then `a-1.png`, `a-2.png`, ...: the names tried so nothing is overwritten."""
    yield name
    stem = name[: -len(".png")] if name.lower().endswith(".png") else name
    for n in range(1, 10_000):
        yield f"{stem}-{n}.png"


# --------------------------------------------------------------------------------------------
# PNG metadata: writing
# --------------------------------------------------------------------------------------------


def _split_prompt(request: Request) -> tuple[tuple[tuple[str, float], ...], str]:
    from invoke.prompt_syntax import split_prompt

    parts = split_prompt(request.prompt, request.skip_normalize)
    return tuple((str(t), float(w)) for t, w in parts.positive), str(parts.negative)


def image_hash(image: Image.Image) -> str:
    """sha256 of the pixels (not the file), so re-saving with other metadata keeps the hash."""
    h = hashlib.sha256()
    h.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def image_metadata(
    request: Request, *, orig_hash: str = "", lora_hashes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The `image` object of `sd-metadata` (InvokeAI 2.x shape) for one resolved request.

    lora_hashes: each LoRA's hash by name (lora_hash), recorded beside its name and weight."""
    positive, negative = _split_prompt(request)
    if len(positive) <= 1:
        # InvokeAI kept an unweighted prompt whole, `[negative]` included: same here.
        prompt = [{"prompt": request.prompt, "weight": 1.0}]
    else:
        prompt = [{"prompt": text, "weight": weight} for text, weight in positive]
        if negative:
            prompt[-1]["prompt"] = f"{prompt[-1]['prompt']} [{negative}]"
        # split_prompt leaves LoRA references out; they hold for the whole line, so they go
        # with the last part, as the negative prompt does, and a fetched line keeps them.
        for use in split_loras(request.prompt)[1]:
            prompt[-1]["prompt"] += f" withLora({use.name}, {use.weight:g})"
    img2img = request.init_img is not None
    meta: dict[str, Any] = {
        "type": "img2img" if img2img else "txt2img",
        "prompt": prompt,
        "seed": request.seed,
        "variations": [{"seed": v.seed, "weight": v.weight} for v in request.with_variations],
        "sampler": request.sampler,
        "steps": request.steps,
        "cfg_scale": request.cfg_scale,
        "threshold": 0,
        "perlin": 0,
        "width": request.width,
        "height": request.height,
        "seamless": request.seamless,
        # InvokeAI 2.3 wrote this flag (type stays txt2img). The strength is kept with it: it
        # sets the second pass, which InvokeAI left unrecorded (its default, 0.75, is ours too).
        "hires_fix": request.hires_fix,
        "postprocessing": _postprocessing(request),
        "init_img": request.init_img,
        "init_mask": request.init_mask,
        "strength": request.strength if img2img or request.hires_fix else None,
        "orig_hash": orig_hash,
    }
    loras = split_loras(request.prompt)[1]
    if loras:
        hashes = lora_hashes or {}
        meta["loras"] = [
            {"name": u.name, "weight": u.weight, "hash": hashes.get(u.name, "")} for u in loras
        ]
    if request.seamless:
        # InvokeAI 2.x wrote only the flag (both axes); the axes say which, for one-axis tiles.
        meta["seamless_axes"] = list(request.seamless_axes or SEAMLESS_AXES)
    if request.controlnet is not None:
        meta["controlnet"] = {
            "model": request.controlnet,
            "image": request.control_image,
            "processor": request.control_processor,
            "weight": _or(request.control_weight, 1.0),
            "start": _or(request.control_start, 0.0),
            "end": _or(request.control_end, 1.0),
        }
    return meta


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _postprocessing(request: Request) -> list[dict[str, Any]] | None:
    """InvokeAI 2.x recorded a `!fix` in `postprocessing` as {tool, dream_command}; an outcrop
    is recorded the same way, with its sides and pixels (as InvokeAI's -c took them) so that
    sd-metadata alone can bring the extension back. -U comes last, as InvokeAI's {type: esrgan,
    scale, strength} did, with the upscaler that made it."""
    steps: list[dict[str, Any]] = []
    if request.outcrop and request.init_img is not None:
        steps.append(
            {
                "tool": "outcrop",
                "outcrop": [str(word) for pair in request.outcrop for word in pair],
                "dream_command": request.to_fix_command(),
            }
        )
    if request.upscale:
        factor, strength = request.upscale
        entry: dict[str, Any] = {
            "type": UPSCALE_TYPE,
            "scale": factor,
            "strength": strength,
            "model": request.upscaler or UPSCALER_REPOS[factor],
        }
        if is_file_upscale(request):
            entry["dream_command"] = request.to_fix_command()
        steps.append(entry)
    return steps or None


def is_file_upscale(request: Request) -> bool:
    """`!fix FILE -U`'s request: the init image enlarged, nothing drawn (so no steps)."""
    return bool(request.upscale) and request.init_img is not None and request.steps is None


UPSCALE_TYPE = "sd-upscale"  # ours; InvokeAI's "esrgan" was Real-ESRGAN, which this is not


def sd_metadata(
    request: Request,
    *,
    model_id: str,
    model_hash: str,
    orig_hash: str = "",
    lora_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The whole `sd-metadata` object for one image."""
    return {
        "model": "stable diffusion",
        "model_id": model_id,
        "model_hash": model_hash,
        "app_id": APP_ID,
        "app_version": APP_VERSION,
        "image": image_metadata(request, orig_hash=orig_hash, lora_hashes=lora_hashes),
    }


def _a1111_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def a1111_parameters(
    request: Request,
    *,
    model_id: str,
    model_hash: str = "",
    lora_hashes: Mapping[str, str] | None = None,
) -> str:
    """AUTOMATIC1111's `parameters` text, so other tools show our settings."""
    positive, negative = _split_prompt(request)
    if len(positive) == 1:
        prompt_text = positive[0][0]
    else:
        prompt_text = " ".join(f"{t.replace(':', chr(92) + ':')}:{w:g}" for t, w in positive)
    # AUTOMATIC1111 names LoRAs in the prompt as <lora:name:weight>.
    uses = split_loras(request.prompt)[1]
    lines = [" ".join([prompt_text, *(f"<lora:{u.name}:{u.weight:g}>" for u in uses)])]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields: list[tuple[str, str]] = []
    if request.steps is not None:
        fields.append(("Steps", str(request.steps)))
    if request.sampler is not None:
        fields.append(("Sampler", A1111_SAMPLERS.get(request.sampler, request.sampler)))
    if request.cfg_scale is not None:
        fields.append(("CFG scale", _a1111_number(request.cfg_scale)))
    if request.seed is not None:
        fields.append(("Seed", str(request.seed)))
    if request.width is not None and request.height is not None:
        fields.append(("Size", f"{request.width}x{request.height}"))
    if model_hash:
        fields.append(("Model hash", model_hash[:10]))
    fields.append(("Model", model_id))
    if request.init_img is not None and request.strength is not None:
        fields.append(("Denoising strength", _a1111_number(request.strength)))
    if len(request.with_variations) == 1:
        v = request.with_variations[0]
        fields.append(("Variation seed", str(v.seed)))
        fields.append(("Variation seed strength", _a1111_number(v.weight)))
    if request.seamless and set(request.seamless_axes or SEAMLESS_AXES) == set(SEAMLESS_AXES):
        # AUTOMATIC1111's tiling is both axes or none: a one-axis picture has no honest way to
        # say it here (Dream and sd-metadata do).
        fields.append(("Tiling", "True"))
    if request.controlnet is not None:
        # As the sd-webui-controlnet extension writes a unit: the preprocessor ("none" when the
        # image is used as it is), and the image scaled to cover the picture ("Crop and Resize").
        unit = [
            ("Module", request.control_processor or "none"),
            ("Model", request.controlnet),
            ("Weight", _a1111_number(_or(request.control_weight, 1.0))),
            ("Resize Mode", "Crop and Resize"),
            ("Guidance Start", _a1111_number(_or(request.control_start, 0.0))),
            ("Guidance End", _a1111_number(_or(request.control_end, 1.0))),
        ]
        fields.append(("ControlNet 0", ", ".join(f"{k}: {v}" for k, v in unit)))
    if request.upscale:
        # the keys AUTOMATIC1111's Extras tab writes for an upscale
        fields.append(("Postprocess upscale by", str(request.upscale[0])))
        upscaler = request.upscaler or UPSCALER_REPOS[request.upscale[0]]
        fields.append(("Postprocess upscaler", upscaler))
    known = lora_hashes or {}
    hashes = [f"{u.name}: {known[u.name]}" for u in uses if known.get(u.name)]
    if hashes:
        fields.append(("Lora hashes", ", ".join(hashes)))  # as AUTOMATIC1111 writes them
    fields.append(("Version", f"{APP_ID} {APP_VERSION}"))

    def quoted(value: str) -> str:
        # A1111 quotes values that contain its separators.
        return json.dumps(value) if ("," in value or ":" in value or '"' in value) else value

    lines.append(", ".join(f"{k}: {quoted(v)}" for k, v in fields))
    return "\n".join(lines)


def png_chunks(
    request: Request,
    *,
    model_id: str,
    model_hash: str,
    image: Image.Image | None = None,
    command: str | None = None,
    lora_hashes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`Dream`, `sd-metadata` and `parameters` texts for one image made from `request`."""
    dream = command if command is not None else request.to_command()
    meta = sd_metadata(
        request,
        model_id=model_id,
        model_hash=model_hash,
        orig_hash=image_hash(image) if image is not None else "",
        lora_hashes=lora_hashes,
    )
    parameters = a1111_parameters(
        request, model_id=model_id, model_hash=model_hash, lora_hashes=lora_hashes
    )
    return {
        "Dream": dream,
        "sd-metadata": json.dumps(meta, ensure_ascii=False),
        "parameters": parameters,
    }


def grid_chunks(
    requests: Sequence[Request],
    *,
    model_id: str,
    model_hash: str,
    images: Sequence[Image.Image] = (),
    command: str | None = None,
    lora_hashes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Chunks for a grid: `sd-metadata` with `images: [...]`, `Dream` the command line."""
    if not requests:
        raise OutputError("grid: no images to put in it")
    hashes = [image_hash(im) for im in images] if images else [""] * len(requests)
    meta = {
        "model": "stable diffusion",
        "model_id": model_id,
        "model_hash": model_hash,
        "app_id": APP_ID,
        "app_version": APP_VERSION,
        "images": [
            image_metadata(r, orig_hash=h, lora_hashes=lora_hashes)
            for r, h in zip(requests, hashes, strict=False)
        ],
    }
    first = requests[0]
    parameters = a1111_parameters(
        first, model_id=model_id, model_hash=model_hash, lora_hashes=lora_hashes
    )
    return {
        "Dream": command if command is not None else first.to_command(),
        "sd-metadata": json.dumps(meta, ensure_ascii=False),
        "parameters": parameters,
    }


def make_grid(images: Sequence[Image.Image]) -> Image.Image:
    """All images in a near-square grid (columns = ceil(sqrt(n))), row by row, black background."""
    if not images:
        raise OutputError("grid: no images to put in it")
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell_w = max(im.width for im in images)
    cell_h = max(im.height for im in images)
    grid = Image.new("RGB", (cols * cell_w, rows * cell_h))
    for i, im in enumerate(images):
        grid.paste(im.convert("RGB"), ((i % cols) * cell_w, (i // cols) * cell_h))
    return grid


# --------------------------------------------------------------------------------------------
# Writing files
# --------------------------------------------------------------------------------------------


def _why(err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    if err.errno == errno.EDQUOT:
        return "the disk quota is used up"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    return err.strerror or type(err).__name__


@contextlib.contextmanager
def _locked(fd: int) -> Iterator[None]:
    """An exclusive lock on an open file, held for the block (blocks until it is ours)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    else:  # pragma: no cover - Windows
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
        try:
            yield
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _fsync_dir(folder: Path) -> None:
    # Makes the new name itself durable; not possible (or needed) everywhere.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()  # read once at import: os.umask can only be read by setting it


def file_seed(request: Request) -> int | None:
    """The seed a file is named by: its last variation seed, else its own (InvokeAI's naming),
    so the images of one `-v` command get distinct names."""
    if request.with_variations:
        return request.with_variations[-1].seed
    return request.seed


class OutputFolder:
    """One output folder: prefixes, image files, logs, grids and intermediates.

    The folder is created on the first write. Paths returned keep the folder as given (relative
    stays relative), which is what the `Outputs:` block and the logs show.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fnformat: str = DEFAULT_FNFORMAT,
        png_compression: int = DEFAULT_PNG_COMPRESSION,
    ) -> None:
        check_fnformat(fnformat)
        if not 0 <= png_compression <= 9:
            raise OutputError(f"-z/--png_compression: {png_compression} is not in 0..9")
        self.path = Path(path)
        self.fnformat = fnformat
        self.png_compression = png_compression

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r})"

    # -- the folder and its prefixes -----------------------------------------------------------

    def ensure(self) -> Path:
        """Create the folder if needed; OutputError if it cannot be a writable folder."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(
                f"{self.path}: is a file, not a folder; choose another with -o/--outdir"
            ) from None
        except OSError as err:
            raise OutputError(
                f"{self.path}: cannot create the output folder ({_why(err)}); "
                "choose another with -o/--outdir"
            ) from None
        return self.path

    def largest_prefix(self) -> int:
        """The largest `NNNNNN.` prefix among the files in the folder (0 when none)."""
        largest = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.path) as entries:
            for entry in entries:
                m = _PREFIX_RE.match(entry.name)
                if m and entry.is_file():
                    largest = max(largest, int(m.group(1)))
        return largest

    def reserve_prefix(self) -> str:
        """The next `NNNNNN` prefix, unique among all processes sharing this folder.

        The counter lives in `.next_prefix` and is read-modify-written under an exclusive lock; it
        never goes below 1 + the largest prefix already present, so files copied in (or a deleted
        counter) cannot cause reuse.
        """
        self.ensure()
        counter = self.path / PREFIX_COUNTER
        try:
            fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(
                f"{counter}: cannot open the prefix counter ({_why(err)}); "
                "choose another folder with -o/--outdir"
            ) from None
        try:
            with _locked(fd):
                raw = os.read(fd, 64).decode("ascii", "replace").strip()
                stored = int(raw) if raw.isdigit() else 1
                prefix = max(stored, self.largest_prefix() + 1, 1)
                data = f"{prefix + 1}\n".encode()
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write")
                os.fsync(fd)
        except OSError as err:
            raise OutputError(
                f"{counter}: cannot update the prefix counter ({_why(err)}); "
                "free some space or choose another folder with -o/--outdir"
            ) from None
        finally:
            os.close(fd)
        return f"{prefix:06d}"

    # -- names ---------------------------------------------------------------------------------

    def image_name(self, prefix: str, request: Request, iteration: int = 1) -> str:
        """The file name (no folder) of one image: request.fnformat, else the folder's template."""
        return format_file_name(
            request.fnformat or self.fnformat,
            prefix=prefix,
            seed=file_seed(request),
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            sampler=request.sampler,
            width=request.width,
            height=request.height,
            iteration=iteration,
        )

    # -- atomic writes -------------------------------------------------------------------------

    def write_bytes(self, name: str, data: bytes, *, folder: Path | None = None) -> Path:
        """Write `data` as a new file `name` (or `name-1.png`...) atomically; never overwrites.

        Temporary file in the same folder -> fsync -> hard link to the final name (fails instead of
        replacing when the name is taken) -> remove the temporary name.
        """
        target_dir = folder if folder is not None else self.ensure()
        name = sanitize_file_name(name) if name.lower().endswith(".png") else name
        if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
            raise OutputError(f"{name!r}: not a plain file name")
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=".tmp-", suffix=".part")
            tmp = Path(tmp_name)
            # mkstemp makes 0600; pictures get the mode any new file gets here (umask applies)
            os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            final = self._link_into_place(tmp, target_dir, name)
        except OSError as err:
            raise OutputError(
                f"{target_dir / name}: cannot write ({_why(err)}); nothing was saved under that "
                "name; free some space or choose another folder with -o/--outdir"
            ) from None
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
        _fsync_dir(target_dir)
        return final

    @staticmethod
    def _link_into_place(tmp: Path, folder: Path, name: str) -> Path:
        for candidate in _alternatives(name):
            final = folder / candidate
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                continue
            except OSError as err:
                if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                # No hard links here (some FUSE/SMB mounts): claim the name, then rename over the
                # still-empty claim. rename() is atomic, so readers see empty or complete.
                try:
                    os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError:
                    continue
                os.replace(tmp, final)
                return final
        raise OSError(errno.EEXIST, f"no free name like {name}")

    def write_png(
        self,
        image: Image.Image,
        name: str,
        chunks: Mapping[str, str] | None = None,
        *,
        png_compression: int | None = None,
        folder: Path | None = None,
    ) -> Path:
        """Encode `image` with text `chunks` and write it as a new file (see write_bytes)."""
        info = PngImagePlugin.PngInfo()
        for key, value in (chunks or {}).items():
            info.add_text(key, value)  # iTXt when the text is not Latin-1
        level = self.png_compression if png_compression is None else png_compression
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=info, compress_level=level)
        return self.write_bytes(name, buf.getvalue(), folder=folder)

    # -- images, grids, logs -------------------------------------------------------------------

    def save_image(
        self,
        image: Image.Image,
        request: Request,
        prefix: str,
        *,
        model_id: str,
        model_hash: str,
        iteration: int = 1,
        command: str | None = None,
        log: bool = True,
        lora_hashes: Mapping[str, str] | None = None,
    ) -> Path:
        """Save one generated image with its metadata, then log it. Returns the path written.

        `request` is the resolved per-image request (its own seed, size, variations, init file);
        `command` defaults to `request.to_command()` and is what `Dream` and the logs hold.
        """
        command = command if command is not None else request.to_command()
        chunks = png_chunks(
            request,
            model_id=model_id,
            model_hash=model_hash,
            image=image,
            command=command,
            lora_hashes=lora_hashes,
        )
        level = request.png_compression
        path = self.write_png(
            image, self.image_name(prefix, request, iteration), chunks, png_compression=level
        )
        if log:
            self.append_log(path, command)
        return path

    def save_grid(
        self,
        images: Sequence[Image.Image],
        requests: Sequence[Request],
        prefix: str,
        *,
        model_id: str,
        model_hash: str,
        command: str | None = None,
        name: str | None = None,
        log: bool = True,
        lora_hashes: Mapping[str, str] | None = None,
    ) -> Path:
        """Save `make_grid(images)` as `<prefix>.<first seed>.png` (or `name`), grid metadata."""
        if len(images) != len(requests):
            raise OutputError(f"grid: {len(images)} images but {len(requests)} requests")
        chunks = grid_chunks(
            requests,
            model_id=model_id,
            model_hash=model_hash,
            images=images,
            command=command,
            lora_hashes=lora_hashes,
        )
        name = name or sanitize_file_name(f"{prefix}.{requests[0].seed}.png")
        path = self.write_png(make_grid(images), name, chunks)
        if log:
            self.append_log(path, chunks["Dream"])
        return path

    def append_log(self, path: str | os.PathLike[str], command: str) -> None:
        """Append `path: command` to invoke_log.txt and a `## file` entry to invoke_log.md.

        Each entry is one write under an exclusive lock, so concurrent processes never interleave.
        """
        self.ensure()
        command = " ".join(command.splitlines())
        path = Path(path)
        fence = "```"
        while fence in command:
            fence += "`"
        link = path.name.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
        self._append(self.path / LOG_TXT, f"{path}: {command}\n")
        self._append(
            self.path / LOG_MD, f"## {path.name}\n![]({link})\n\n{fence}\n{command}\n{fence}\n\n"
        )

    @staticmethod
    def _append(log: Path, text: str) -> None:
        data = text.encode("utf-8")
        try:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"{log}: cannot open the log ({_why(err)})") from None
        try:
            with _locked(fd):
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, "short write")
        except OSError as err:
            raise OutputError(f"{log}: cannot append to the log ({_why(err)})") from None
        finally:
            os.close(fd)

    # -- intermediates -------------------------------------------------------------------------

    def intermediates(self, prefix: str, seed: int | None) -> Intermediates:
        """A writer for `<outdir>/intermediates/<prefix>.<seed>/` (created on the first step)."""
        folder_name = sanitize_file_name(f"{prefix}.{seed}.png")[: -len(".png")]
        return Intermediates(self, self.path / INTERMEDIATES_DIR / folder_name)


class Intermediates:
    """Step dumps of one image: `step-NNNN.safetensors` + `step-NNNN.png`, then `steps.png`."""

    def __init__(self, outputs: OutputFolder, folder: Path) -> None:
        self.outputs = outputs
        self.folder = folder
        self.previews: list[Image.Image] = []

    def _ensure(self) -> Path:
        self.outputs.ensure()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"{self.folder}: cannot create the folder ({_why(err)})") from None
        return self.folder

    def save_step(
        self, step: int, timestep: float | int, latents: np.ndarray, preview: Image.Image
    ) -> Path:
        """Save one step's latents (safetensors, step/timestep in its metadata) and its preview."""
        from safetensors.numpy import save

        folder = self._ensure()
        array = np.ascontiguousarray(np.asarray(latents))
        metadata = {"step": str(int(step)), "timestep": repr(float(timestep))}
        tensor_name = f"step-{int(step):04d}.safetensors"
        try:
            data = save({"latents": array}, metadata=metadata)
        except (ValueError, TypeError) as err:
            raise OutputError(
                f"{folder / tensor_name}: cannot store these latents ({err})"
            ) from None
        path = self.outputs.write_bytes(tensor_name, data, folder=folder)
        self.outputs.write_png(preview, f"step-{int(step):04d}.png", folder=folder)
        self.previews.append(preview.convert("RGB"))
        return path

    def finish(self) -> Path | None:
        """Write `steps.png`: all previews so far, left to right in step order. None if no steps."""
        if not self.previews:
            return None
        height = max(p.height for p in self.previews)
        strip = Image.new("RGB", (sum(p.width for p in self.previews), height))
        x = 0
        for p in self.previews:
            strip.paste(p, (x, 0))
            x += p.width
        return self.outputs.write_png(strip, "steps.png", folder=self._ensure())


# --------------------------------------------------------------------------------------------
# Reading metadata back (`!fetch`): untrusted input
# --------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode_text(raw: bytes) -> str:
    # tEXt is Latin-1 by the spec, but several tools put UTF-8 in it.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _inflate(data: bytes, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_CHUNK_BYTES + 1)
    except zlib.error as err:
        raise MetadataError(f"{what}: compressed text is corrupt ({err})") from None
    if len(out) > MAX_CHUNK_BYTES or d.unconsumed_tail:
        raise MetadataError(f"{what}: text is larger than {MAX_CHUNK_BYTES // 1024} KiB")
    return out


def _text_chunk(ctype: bytes, body: bytes, where: str) -> tuple[str, str] | None:
    key_raw, sep, rest = body.partition(b"\x00")
    if not sep:
        return None
    key = key_raw.decode("latin-1")
    what = f"{where}: {key!r} chunk"
    if ctype == b"tEXt":
        return key, _decode_text(rest)
    if ctype == b"zTXt":
        return key, _decode_text(_inflate(rest[1:], what))
    # iTXt: compression flag, method, language tag\0, translated keyword\0, text (UTF-8)
    if len(rest) < 2:
        return None
    flag = rest[0]
    _lang, _, rest2 = rest[2:].partition(b"\x00")
    _tkey, _, text = rest2.partition(b"\x00")
    if flag:
        text = _inflate(text, what)
    return key, text.decode("utf-8", "replace")


def read_chunks(path: str | os.PathLike[str]) -> dict[str, str]:
    """The `Dream`, `sd-metadata` and `parameters` texts of a PNG (those present).

    Reads chunk headers only (pixel data is skipped, never decoded) and refuses metadata chunks
    over MAX_CHUNK_BYTES.
    """
    p = Path(path)
    where = str(path)
    if not p.exists():
        raise MetadataError(f"{where}: no such file; give the path of a PNG made by invoke")
    if p.is_dir():
        raise MetadataError(f"{where}: is a folder; give the path of a PNG file")
    found: dict[str, str] = {}
    try:
        with open(p, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                raise MetadataError(f"{where}: not a PNG file; !fetch reads PNG metadata only")
            for ctype, length, stream in _chunks(fh, where):
                if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
                    continue
                # The keyword comes first (<= 79 bytes + NUL): peek before reading a big body.
                head = stream.read(min(length, 80))
                key = head.partition(b"\x00")[0].decode("latin-1")
                if key not in METADATA_KEYS:
                    continue
                if length > MAX_CHUNK_BYTES:
                    raise MetadataError(
                        f"{where}: the {key!r} chunk is {length} bytes, more than the "
                        f"{MAX_CHUNK_BYTES // 1024} KiB allowed; not metadata invoke can use"
                    )
                body = head + stream.read(length - len(head))
                if len(body) != length:
                    raise MetadataError(f"{where}: the file is truncated in the {key!r} chunk")
                item = _text_chunk(ctype, body, where)
                if item is not None and item[0] not in found:
                    found[item[0]] = item[1]
    except OSError as err:
        raise MetadataError(f"{where}: cannot read ({_why(err)})") from None
    return found


def _chunks(fh: IO[bytes], where: str) -> Iterator[tuple[bytes, int, IO[bytes]]]:
    """(type, length, stream positioned at the body) for each chunk; skips unread bodies."""
    for _ in range(100_000):
        header = fh.read(8)
        if len(header) < 8:
            return  # truncated or no IEND: use what was found
        length = int.from_bytes(header[:4], "big")
        ctype = header[4:]
        if length > 0x7FFFFFFF:
            raise MetadataError(f"{where}: not a valid PNG (chunk length {length})")
        start = fh.tell()
        yield ctype, length, fh
        if ctype == b"IEND":
            return
        fh.seek(start + length + 4)  # body + CRC
    raise MetadataError(f"{where}: not a valid PNG (too many chunks)")


def read_command(path: str | os.PathLike[str]) -> str:
    """The canonical command that made the PNG at `path`, for `!fetch`.

    Tries our `Dream` chunk, then InvokeAI's (`Dream`, or `sd-metadata` of InvokeAI 2.x), then
    AUTOMATIC1111's `parameters`. The text is never executed: it becomes a Request through the
    line parser, and the result is that request's canonical command.
    """
    where = str(path)
    chunks = read_chunks(path)
    if not chunks:
        raise MetadataError(
            f"{where}: has no Dream, sd-metadata or parameters text; "
            "it was not made by invoke, InvokeAI or AUTOMATIC1111"
        )
    meta: Any = None
    meta_error = ""
    if "sd-metadata" in chunks:
        try:
            meta = json.loads(chunks["sd-metadata"])
        except ValueError as err:
            meta_error = f"sd-metadata is not valid JSON ({err})"
        else:
            if not isinstance(meta, dict):
                meta, meta_error = None, "sd-metadata is not a JSON object"
    ours = isinstance(meta, dict) and meta.get("app_id") == APP_ID

    errors: list[str] = []
    if "Dream" in chunks:
        try:
            return _command_from_dream(chunks["Dream"], ours=ours)
        except InvokeError as err:
            errors.append(f"Dream: {err}")
    if meta is not None:
        try:
            return _command_from_sd_metadata(meta)
        except InvokeError as err:
            errors.append(f"sd-metadata: {err}")
    elif meta_error:
        errors.append(meta_error)
    if "parameters" in chunks:
        try:
            return _command_from_a1111(chunks["parameters"])
        except InvokeError as err:
            errors.append(f"parameters: {err}")
    raise MetadataError(f"{where}: no usable command in its metadata ({'; '.join(errors)})")


def _check_text(text: str, what: str) -> str:
    """Refuse control characters (terminal escapes, NUL); the result goes into an edit buffer."""
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            raise MetadataError(f"{what} holds a control character {ch!r}")
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _canonical(command: str) -> str:
    from invoke.parse import parse_request

    return parse_request(command).to_command()


def _canonical_fix(command: str) -> str:
    """Our own `!fix FILE ... -U` line (a file upscaled), canonical."""
    from invoke.parse import parse_fix

    if not command.startswith("!fix "):
        raise MetadataError(f"{command!r} is not a !fix line")
    fix = parse_fix(command.removeprefix("!fix "))
    request = replace(fix.line, init_img=fix.file).validate()
    if not is_file_upscale(request):
        raise MetadataError(f"{command!r} is not a !fix FILE -U line")
    return request.to_fix_command()


# InvokeAI switches with no meaning here (post-processing, features not in this program) and how
# many values each takes; dropped from a foreign Dream line so the rest of it still works.
_FOREIGN_SWITCHES: dict[str, int] = {
    "-G": 1,
    "--gfpgan_strength": 1,
    "-ft": 1,
    "--facetool": 1,
    "-cf": 1,
    "--codeformer_fidelity": 1,
    "--perlin": 1,
    "--threshold": 1,
    "-embiggen": -1,
    "--embiggen": -1,
    "-embiggen_tiles": -1,
    "--embiggen_tiles": -1,
    "--upscale_strength": 1,
    "-F": 0,
    "--facetool_strength": 1,
    "--karras_max": 1,
    "--text_mask": -1,
    "-tm": -1,
    "--out_direction": -1,
    "--new_prompt": 1,
}
_NUMBER = re.compile(r"^-?\d+(\.\d*)?$")


def _command_from_dream(text: str, *, ours: bool) -> str:
    text = _check_text(text.strip(), "the Dream chunk")
    if not text:
        raise MetadataError("the Dream chunk is empty")
    if ours:
        return _canonical_fix(text) if text.startswith("!fix ") else _canonical(text)
    if text.startswith("!fix "):  # ours, its sd-metadata lost: a !fix line is no InvokeAI prompt
        return _canonical_fix(text)
    # InvokeAI: prompts quoted with `\'` inside (their #842), switches this program lacks.
    try:
        return _canonical(_clean_foreign_dream(text))
    except (ValueError, InvokeError):
        return _canonical(text)


def _clean_foreign_dream(text: str) -> str:
    if text[0] in "\"'":
        # A quoted prompt: find its closing quote, honouring backslash escapes. InvokeAI wrote
        # `\'` for apostrophes inside double quotes (their #842); unescape every `\x` here.
        quote, i, chars = text[0], 1, []
        while i < len(text) and text[i] != quote:
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            chars.append(text[i])
            i += 1
        if i >= len(text):
            raise MetadataError("the Dream chunk has an unterminated quote")
        prompt, rest = "".join(chars), text[i + 1 :]
    else:
        m = re.search(r"\s-{1,2}[A-Za-z]", text)
        prompt, rest = (text[: m.start()], text[m.start() :]) if m else (text, "")
        prompt = prompt.replace("\\'", "'")
    from invoke.parse import quote_prompt

    return f"{quote_prompt(prompt.strip())} {_without_foreign_switches(rest)}".rstrip()


def _without_foreign_switches(switches: str) -> str:
    """An InvokeAI line's switches, shell-quoted, less the ones this program lacks and the
    trailing comment (2.3 ended each line with `# model_id=NAME`)."""
    tokens = shlex.split(switches)
    comment = next((i for i, tok in enumerate(tokens) if tok.startswith("#")), len(tokens))
    tokens = tokens[:comment]
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name = tok.split("=", 1)[0]
        if name in _FOREIGN_SWITCHES:
            n = _FOREIGN_SWITCHES[name]
            i += 1
            if "=" in tok:
                continue
            if n < 0:  # any number of numeric values
                while i < len(tokens) and (_NUMBER.match(tokens[i]) or tokens[i].isalpha()):
                    i += 1
            else:
                i += n
            continue
        kept.append(tok)
        i += 1
    return " ".join(shlex.quote(t) for t in kept)


def _number(value: Any, kind: type, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            value = float(value)
        else:
            raise MetadataError(f"{what} is {value!r}, not a number")
    if not math.isfinite(value):
        raise MetadataError(f"{what} is {value!r}, not a finite number")
    if kind is int:
        if not float(value).is_integer():
            raise MetadataError(f"{what} is {value!r}, not a whole number")
        return int(value)
    return float(value)


def _prompt_from_parts(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list) or not prompt:
        raise MetadataError(f"image.prompt is {type(prompt).__name__}, not text or a list")
    parts: list[tuple[str, float]] = []
    for item in prompt:
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise MetadataError("image.prompt items must be {prompt, weight} objects")
        weight = _number(item.get("weight", 1.0), float, "image.prompt weight")
        parts.append((item["prompt"], weight))
    if len(parts) == 1:
        return parts[0][0]
    return " ".join(f"{t.strip().replace(':', chr(92) + ':')}:{w:g}" for t, w in parts)


def _request_to_canonical(fields: dict[str, Any], what: str) -> str:
    prompt = _check_text(_one_line(fields.pop("prompt")), what)
    if not prompt:
        raise MetadataError(f"{what} has an empty prompt")
    request = Request(prompt=prompt, **fields)
    return _canonical(request.to_command())


def _command_from_sd_metadata(meta: dict[str, Any]) -> str:
    image = meta.get("image")
    if image is None and isinstance(meta.get("images"), list) and meta["images"]:
        image = meta["images"][0]  # a grid: its first image
    if not isinstance(image, dict):
        raise MetadataError("has no image object")
    if "prompt" not in image and "prompt" in meta:
        # InvokeAI 2.3's !fix of a picture without sd-metadata wrote the line's fields at the
        # top level, beside an `image` that holds only `postprocessing`.
        image = {**meta, **image}
    outcrop = _last_outcrop(image.get("postprocessing"))
    if outcrop is not None and "outcrop" not in outcrop:
        return _command_from_invokeai_outcrop(image, outcrop)
    fields: dict[str, Any] = {"prompt": _prompt_from_parts(image.get("prompt"))}
    for key, kind in (
        ("steps", int),
        ("seed", int),
        ("width", int),
        ("height", int),
        ("cfg_scale", float),
    ):
        if image.get(key) is not None:
            fields[key] = _number(image[key], kind, f"image.{key}")
    sampler = image.get("sampler")
    if isinstance(sampler, str) and sampler in SAMPLERS:
        fields["sampler"] = sampler
    variations = image.get("variations") or []
    if not isinstance(variations, list):
        raise MetadataError("image.variations is not a list")
    chain = []
    for v in variations:
        # InvokeAI 2.x wrote {seed, weight}; some versions wrote [seed, weight] pairs.
        seed, weight = (v.get("seed"), v.get("weight")) if isinstance(v, dict) else (v, None)
        if isinstance(v, list | tuple) and len(v) == 2:
            seed, weight = v
        chain.append(
            Variation(
                _number(seed, int, "variation seed"), _number(weight, float, "variation weight")
            )
        )
    fields["with_variations"] = tuple(chain)
    if image.get("seamless") is True:
        fields["seamless"] = True
        axes = image.get("seamless_axes")
        if axes is not None:
            fields["seamless_axes"] = _seamless_axes(axes)
    control = image.get("controlnet")
    if (
        isinstance(control, dict)
        and isinstance(control.get("model"), str)
        and isinstance(control.get("image"), str)
    ):
        fields["controlnet"] = _check_text(control["model"], "image.controlnet.model")
        fields["control_image"] = _check_text(control["image"], "image.controlnet.image")
        if control.get("processor") in CONTROL_PROCESSORS:
            fields["control_processor"] = control["processor"]
        # The record is complete; the line names only what differs from the defaults.
        for key, default in (("weight", 1.0), ("start", 0.0), ("end", 1.0)):
            if control.get(key) is not None:
                value = _number(control[key], float, f"image.controlnet.{key}")
                if value != default:
                    fields[f"control_{key}"] = value
    upscale = _last_upscale(image.get("postprocessing"))
    if upscale is not None and isinstance(upscale.get("dream_command"), str):
        return _canonical_fix(_check_text(upscale["dream_command"], "image.postprocessing"))
    if upscale is not None:
        factor = _number(upscale.get("scale"), int, "image.postprocessing scale")
        strength = _number(upscale.get("strength"), float, "image.postprocessing strength")
        fields["upscale"] = next(s for s in SWITCHES if s.field == "upscale").read(
            f"{factor} {strength!r}"
        )
        model = upscale.get("model")
        if isinstance(model, str) and model:
            fields["upscaler"] = _check_text(model, "image.postprocessing model")
    init_img = image.get("init_img")
    if isinstance(init_img, str) and init_img:
        fields["init_img"] = _check_text(init_img, "image.init_img")
        if image.get("strength") is not None:
            fields["strength"] = _number(image["strength"], float, "image.strength")
        init_mask = image.get("init_mask")
        if isinstance(init_mask, str) and init_mask:
            fields["init_mask"] = _check_text(init_mask, "image.init_mask")
        if outcrop is not None:
            fields["outcrop"] = _outcrop_from(outcrop)
    elif image.get("hires_fix") is True:
        # (InvokeAI 2.3 let --hires_fix override -I; here the two exclude each other, and the
        # init image, above, is what such an image's metadata is more likely to mean.)
        fields["hires_fix"] = True
        if image.get("strength") is not None:
            fields["strength"] = _number(image["strength"], float, "image.strength")
    return _request_to_canonical(fields, "sd-metadata")


def _outcrop_from(entry: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """The extension our own `outcrop` entry records in its `outcrop` words."""
    words = entry.get("outcrop")
    if not isinstance(words, list) or not all(isinstance(w, str | int) for w in words):
        raise MetadataError("image.postprocessing outcrop is not a list of sides and pixels")
    switch = next(s for s in SWITCHES if s.field == "outcrop")
    return switch.read(_check_text(" ".join(str(w) for w in words), "image.postprocessing"))


def _last_upscale(postprocessing: Any) -> dict[str, Any] | None:
    """Our own -U entry of `postprocessing`, if there is one."""
    if not isinstance(postprocessing, list):
        return None
    found = [e for e in postprocessing if isinstance(e, dict) and e.get("type") == UPSCALE_TYPE]
    return found[-1] if found else None


def _last_outcrop(postprocessing: Any) -> dict[str, Any] | None:
    """The newest `outcrop` entry of `postprocessing`: InvokeAI appended one entry per !fix to
    the source's list, so a later face fix keeps the outcrop that set the picture's size."""
    if not isinstance(postprocessing, list):
        return None
    found = [e for e in postprocessing if isinstance(e, dict) and e.get("tool") == "outcrop"]
    return found[-1] if found else None


# InvokeAI 2.3's `!fix` dream_command: `!fix FILE -s N ...`, FILE unquoted (it may hold spaces)
# and always followed by -s.
_INVOKEAI_FIX = re.compile(r"!fix\s+(?P<file>.+?)\s+(?P<switches>-s\s.*)", re.DOTALL)
INVOKEAI_OUTCROP_CELL = 64  # InvokeAI's outcrop rounded each side's pixels up to 64


def _command_from_invokeai_outcrop(image: dict[str, Any], entry: dict[str, Any]) -> str:
    """A picture InvokeAI 2.3 outcropped (`!fix FILE -c top 64`), as an img2img line on FILE.

    InvokeAI copied FILE's sd-metadata into the new picture (its prompt, seed and size are
    FILE's) and appended {tool: outcrop, dream_command: "!fix FILE -s .. -S .. -W .. -H .. -C ..
    -A .. -c SIDE PIXELS # model_id=.."}. The outcrop ran with FILE's prompt, the command's
    steps, seed, scale and sampler, at strength 0.9, on a canvas each side grown by its pixels
    rounded up to 64; the command's -W/-H are the model's default size, not the picture's, so
    the line leaves the size to --outcrop, which takes it from FILE. InvokeAI left two things
    unrecorded: a --new_prompt (FILE's prompt is all there is), and a -S typed on the !fix line
    (its command names FILE's seed).
    """
    from invoke.parse import parse_fix

    command = entry.get("dream_command")
    found = _INVOKEAI_FIX.fullmatch(command.strip()) if isinstance(command, str) else None
    if found is None:
        raise MetadataError(
            f"image.postprocessing outcrop: dream_command {command!r} is not InvokeAI's "
            "!fix FILE -s STEPS ... -c SIDE PIXELS"
        )
    what = "image.postprocessing dream_command"
    file = _check_text(found["file"], what)
    try:
        switches = _without_foreign_switches(_check_text(found["switches"], what))
    except ValueError as err:  # shlex: an unbalanced quote
        raise MetadataError(f"{what} {command!r} cannot be split into words ({err})") from None
    line = parse_fix(f"{shlex.quote(file)} {switches}").line
    if not line.outcrop:
        raise MetadataError(f"{what} {command!r} has no -c SIDE PIXELS")
    cell = INVOKEAI_OUTCROP_CELL
    seed = line.seed if line.seed is not None else image.get("seed")
    fields: dict[str, Any] = {
        "prompt": _prompt_from_parts(image.get("prompt")),
        "steps": line.steps,
        "seed": None if seed is None else _number(seed, int, "image.seed"),
        "cfg_scale": line.cfg_scale,
        "sampler": line.sampler,
        "init_img": file,
        "strength": OUTCROP_STRENGTH,
        "outcrop": tuple((side, -(-pixels // cell) * cell) for side, pixels in line.outcrop),
    }
    return _request_to_canonical(fields, "sd-metadata")


def _seamless_axes(axes: Any) -> tuple[str, ...]:
    """sd-metadata's `seamless_axes` (["x"] as we write it, or "x,y") as the switch reads it."""
    if isinstance(axes, list) and all(isinstance(axis, str) for axis in axes):
        axes = ",".join(axes)
    if not isinstance(axes, str):
        raise MetadataError(f"image.seamless_axes is {axes!r}, not a list of x and y")
    switch = next(s for s in SWITCHES if s.field == "seamless_axes")
    read = switch.read(_check_text(axes, "image.seamless_axes"))
    return () if read == SEAMLESS_AXES else read  # both: the line says --seamless alone


_A1111_FIELD = re.compile(r'\s*([\w ./+\-()]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _command_from_a1111(text: str) -> str:
    lines = text.strip().splitlines()
    settings_at = max(
        (i for i, line in enumerate(lines) if line.lstrip().startswith("Steps:")), default=-1
    )
    if settings_at < 0:
        raise MetadataError("has no 'Steps:' line")
    head, settings = lines[:settings_at], lines[settings_at]
    positive: list[str] = []
    negative: list[str] = []
    for line in head:
        if line.startswith("Negative prompt:") or negative:
            negative.append(line.removeprefix("Negative prompt:"))
        else:
            positive.append(line)
    values: dict[str, str] = {}
    for m in _A1111_FIELD.finditer(settings):
        value = m.group(2).strip()
        if value.startswith('"'):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        values[m.group(1).strip()] = value
    prompt = _one_line(" ".join(positive))
    neg = _one_line(" ".join(negative)).replace("[", "(").replace("]", ")")
    if neg:
        prompt = f"{prompt} [{neg}]"
    fields: dict[str, Any] = {"prompt": prompt}
    for key, field, kind in (
        ("Steps", "steps", int),
        ("Seed", "seed", int),
        ("CFG scale", "cfg_scale", float),
    ):
        if key in values:
            fields[field] = _number(values[key], kind, key)
    if "Size" in values:
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", values["Size"])
        if not m:
            raise MetadataError(f"Size is {values['Size']!r}, not WIDTHxHEIGHT")
        fields["width"], fields["height"] = int(m.group(1)), int(m.group(2))
    sampler = values.get("Sampler", "").strip()
    if sampler.lower() in _SAMPLER_FROM_A1111:
        fields["sampler"] = _SAMPLER_FROM_A1111[sampler.lower()]
    elif sampler in SAMPLERS:
        fields["sampler"] = sampler
    if values.get("Tiling", "").strip().lower() == "true":
        fields["seamless"] = True
    if "Variation seed" in values and "Variation seed strength" in values:
        fields["with_variations"] = (
            Variation(
                _number(values["Variation seed"], int, "Variation seed"),
                _number(values["Variation seed strength"], float, "Variation seed strength"),
            ),
        )
    return _request_to_canonical(fields, "parameters")
