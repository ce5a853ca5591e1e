"""One output folder: prefixes unique across processes, pictures and grids saved with their
metadata, and the logs.

The promises: a file under its final name is complete and no existing file is ever replaced
(invoke.atomic); prefixes (`000001`, one per command line) stay unique when several processes
share a folder; names made from templates never leave the folder (names.py).
"""

from __future__ import annotations

import contextlib
import errno
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin

from invoke import atomic
from invoke.errors import OutputError
from invoke.line.request import Request
from invoke.outputs import names
from invoke.outputs.intermediates import Intermediates
from invoke.outputs.metadata import grid_chunks, png_chunks

DEFAULT_PNG_COMPRESSION = 6
LOG_TXT = "invoke_log.txt"
LOG_MD = "invoke_log.md"
PREFIX_COUNTER = ".next_prefix"
INTERMEDIATES_DIR = "intermediates"

_SWEPT: set[Path] = set()  # the folders whose leftover temporary files this process removed


def _refused(path: Path, err: OSError) -> OutputError:
    """A file of the folder that is a link, a folder or a device (atomic.NotOurs), in one line."""
    return OutputError(f"{path}: {atomic.why(err)}, or choose another folder with -o/--outdir")


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


class OutputFolder:
    """One output folder: prefixes, image files, logs, grids and intermediates.

    The folder is created on the first write. Paths returned keep the folder as given (relative
    stays relative), which is what the `Outputs:` block and the logs show.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fnformat: str = names.DEFAULT_FNFORMAT,
        png_compression: int = DEFAULT_PNG_COMPRESSION,
    ) -> None:
        names.check_fnformat(fnformat)
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
                f"{self.path}: cannot create the output folder ({atomic.why(err)}); "
                "choose another with -o/--outdir"
            ) from None
        return self.path

    def largest_prefix(self) -> int:
        """The largest `NNNNNN.` prefix among the files in the folder (0 when none)."""
        largest = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self.path) as entries:
            for entry in entries:
                number = names.prefix_of(entry.name)
                if number is not None and entry.is_file():
                    largest = max(largest, number)
        return largest

    def reserve_prefix(self) -> str:
        """The next `NNNNNN` prefix, unique among all processes sharing this folder.

        The counter lives in `.next_prefix` and is read-modify-written under an exclusive lock; it
        never goes below 1 + the largest prefix already present, so files copied in (or a deleted
        counter) cannot cause reuse. Before the first prefix of this process in this folder, the
        temporary files an earlier run left are removed (atomic.remove_leftovers); and each time,
        the logs are checked (a link planted there refuses the line before anything is drawn).
        """
        self.ensure()
        if self.path.resolve() not in _SWEPT:
            _SWEPT.add(self.path.resolve())
            atomic.remove_leftovers(self.path)
        for log in (self.path / LOG_TXT, self.path / LOG_MD):
            try:
                atomic.check_file(log)
            except atomic.NotOurs as err:
                raise _refused(log, err) from None
        counter = self.path / PREFIX_COUNTER
        try:
            fd = atomic.open_file(counter, os.O_RDWR | os.O_CREAT)
        except atomic.NotOurs as err:
            raise _refused(counter, err) from None
        except OSError as err:
            raise OutputError(
                f"{counter}: cannot open the prefix counter ({atomic.why(err)}); "
                "choose another folder with -o/--outdir"
            ) from None
        try:
            with atomic.locked(fd):
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
                f"{counter}: cannot update the prefix counter ({atomic.why(err)}); "
                "free some space or choose another folder with -o/--outdir"
            ) from None
        finally:
            os.close(fd)
        return names.prefix_text(prefix)

    # -- names ---------------------------------------------------------------------------------

    def image_name(self, prefix: str, request: Request, iteration: int = 1) -> str:
        """The file name (no folder) of one image: request.fnformat, else the folder's template."""
        return names.image_name(request.fnformat or self.fnformat, prefix, request, iteration)

    # -- atomic writes -------------------------------------------------------------------------

    def write_bytes(self, name: str, data: bytes, *, folder: Path | None = None) -> Path:
        """Write `data` as a new file `name` (or `name-1.png`...) atomically; never overwrites
        (see atomic.write_new)."""
        target_dir = folder if folder is not None else self.ensure()
        name = names.sanitize_file_name(name) if name.lower().endswith(".png") else name
        if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
            raise OutputError(f"{name!r}: not a plain file name")
        try:
            return atomic.write_new(target_dir, names.alternatives(name), data)
        except OSError as err:
            raise OutputError(
                f"{target_dir / name}: cannot write ({atomic.why(err)}); nothing was saved under "
                "that name; free some space or choose another folder with -o/--outdir"
            ) from None

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
        first_pass: tuple[int, int] | None = None,
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
            first_pass=first_pass,
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
        """Save `make_grid(images)` as names.grid_name (or `name`), with grid metadata."""
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
        name = name or names.grid_name(prefix, requests)
        path = self.write_png(make_grid(images), name, chunks)
        if log:
            self.append_log(path, chunks["Dream"])
        return path

    def append_log(self, path: str | os.PathLike[str], command: str) -> None:
        """Append `path: command` to invoke_log.txt and a `## file` entry to invoke_log.md.

        Each entry is one write under an exclusive lock, so concurrent processes never interleave,
        and is there whole or not at all (atomic.append); a log that is a link is refused.
        """
        self.ensure()
        command = " ".join(command.splitlines())
        path = Path(path)
        fence = "```"
        while fence in command:
            fence += "`"
        link = path.name.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
        try:
            self._append(self.path / LOG_TXT, f"{path}: {command}\n")
            self._append(
                self.path / LOG_MD,
                f"## {path.name}\n![]({link})\n\n{fence}\n{command}\n{fence}\n\n",
            )
        except OutputError as err:
            raise OutputError(f"{err}; {path.name} was saved but not logged") from None

    @staticmethod
    def _append(log: Path, text: str) -> None:
        try:
            atomic.append(log, text.encode("utf-8"))
        except atomic.NotOurs as err:
            raise _refused(log, err) from None
        except OSError as err:
            raise OutputError(f"{log}: cannot append to the log ({atomic.why(err)})") from None

    # -- intermediates -------------------------------------------------------------------------

    def intermediates(self, prefix: str, seed: int | None) -> Intermediates:
        """A writer for `<outdir>/intermediates/<prefix>.<seed>/` (created on the first step)."""
        folder_name = names.step_folder_name(prefix, seed)
        return Intermediates(self, self.path / INTERMEDIATES_DIR / folder_name)
