"""Atomic file writes and file locks: the one home for both.

A file under its final name is always complete: the data goes to a temporary file in the same
folder, is fsynced, and only then takes the final name in one step. `write_new` never replaces a
file (the pictures: the next free name is taken instead); `replace` swaps a file for its new
version (models.yaml, hash records), so a reader sees the old file or the new one, never half.
`locked` serialises read-modify-writes and appends between processes sharing a file.

These raise OSError; the callers turn it into the error their user can act on (`why` words it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

try:  # POSIX; Windows falls back to msvcrt below
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def why(err: OSError) -> str:
    """An OSError in the user's words: what to free or change, not an errno."""
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
def locked(fd: int) -> Iterator[None]:
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


def fsync_dir(folder: Path) -> None:
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


UMASK = _current_umask()  # read once at import: os.umask can only be read by setting it


@contextlib.contextmanager
def _staged(folder: Path, data: bytes, prefix: str, suffix: str) -> Iterator[Path]:
    """`data` complete and fsynced in a hidden temporary file in `folder`; the file is gone after
    the block unless the block gave it its final name by renaming it."""
    tmp = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
        tmp = Path(tmp_name)
        # mkstemp makes 0600; the file gets the mode any new file gets here (umask applies)
        os.fchmod(fd, 0o666 & ~UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        yield tmp
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def write_new(folder: Path, names: Iterable[str], data: bytes) -> Path:
    """Write `data` as a new file in `folder` under the first of `names` that is free.

    Temporary file -> fsync -> hard link to the final name (fails instead of replacing when the
    name is taken, so the next name is tried) -> remove the temporary name.
    """
    with _staged(folder, data, ".tmp-", ".part") as tmp:
        final = _link_into_place(tmp, folder, names)
    fsync_dir(folder)
    return final


def _link_into_place(tmp: Path, folder: Path, names: Iterable[str]) -> Path:
    tried = ""
    for candidate in names:
        tried = tried or candidate
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
    raise OSError(errno.EEXIST, f"no free name like {tried}")


def replace(target: Path, data: bytes) -> None:
    """Write `data` as `target` (its folder made if needed), replacing any file of that name in
    one step: readers see the old file or the new one, never half of one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _staged(target.parent, data, f".{target.name}.", ".tmp") as tmp:
        os.replace(tmp, target)
    fsync_dir(target.parent)
