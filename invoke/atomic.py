"""Safe file writes and file locks: the one home for both.

A file under its final name is always complete: the data goes to a temporary file in the same
folder, is fsynced, and only then takes the final name in one step. `write_new` never replaces a
file (the pictures: the next free name is taken instead); `replace` swaps a file for its new
version (models.yaml, hash records), so a reader sees the old file or the new one, never half.
`append` adds a whole record to a log or nothing; `open_file` opens a file to change in place.
`locked` serialises read-modify-writes and appends between processes sharing a file.
`remove_leftovers` removes the temporary files a killed run left behind.

Nothing here writes through a symbolic link, or into a FIFO or a device: a name that holds one
(planted in a shared output folder, say) is refused with `NotOurs`, never followed, so a write
stays in the folder it belongs to. The folder itself is the caller's choice and may be a link.

These raise OSError; the callers turn it into the error their user can act on (`why` words it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

try:  # POSIX; Windows falls back to msvcrt below
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt


LINK = "it is a symbolic link, and invoke never writes through one; remove it"
NOT_A_FILE = "it is a folder, FIFO or device, not a plain file; move it away"

# What `O_NOFOLLOW` and `O_NONBLOCK` add where the platform has them (not Windows: lstat covers it).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class NotOurs(OSError):
    """A name invoke would write holds a link, a folder, a FIFO or a device: refused, not followed.
    Its strerror (LINK or NOT_A_FILE) says so in the user's words."""


def why(err: OSError) -> str:
    """An OSError in the user's words: what to free or change, not an errno."""
    if isinstance(err, NotOurs):
        return err.strerror
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    if err.errno == errno.EDQUOT:
        return "the disk quota is used up"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if err.errno == errno.EROFS:
        return "the file system is read-only"
    if err.errno == errno.EFBIG:
        return "the file is larger than this process may write"
    return err.strerror or type(err).__name__


def check_file(path: Path) -> None:
    """NotOurs if `path` is a link, or is there and is not a plain file; nothing if it is a plain
    file or is not there. For a check before work starts; the writes below check again."""
    _refuse_a_link(path)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise NotOurs(errno.EINVAL, NOT_A_FILE, str(path))


def open_file(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open(path, flags, mode)` for a file invoke writes, never through a link and never into
    a FIFO or device (refused before it could block): NotOurs for those. The fd blocks as usual."""
    check_file(path)  # where O_NOFOLLOW is missing; and it words a folder the same everywhere
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC, mode)
    except OSError as err:
        _refuse_a_link(path)  # planted after the check above: say what it is
        if err.errno in (errno.ENXIO, errno.EISDIR):  # a FIFO without a reader; a folder
            raise NotOurs(errno.EINVAL, NOT_A_FILE, str(path)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotOurs(errno.EINVAL, NOT_A_FILE, str(path))
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def append(path: Path, data: bytes) -> None:
    """Add `data` at the end of the file `path` (made if missing) whole or not at all.

    One write of the whole record on an O_APPEND file under the lock, so concurrent processes
    never interleave; a short write (a full disk, a file-size limit) or a failed one cuts the file
    back to the size it had, so no half record is left for the next one to follow.
    """
    fd = open_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        with locked(fd):
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(errno.ENOSPC, "short write")
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
    finally:
        os.close(fd)


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


def make_folder(folder: Path) -> Path:
    """`folder` made if missing (its parents too); NotOurs if it is a link, so the files written
    in it stay where they belong (OSError if it cannot be made). For folders invoke makes inside
    the output folder."""
    _refuse_a_link(folder)  # a dangling one too, which mkdir would call "exists"
    folder.mkdir(parents=True, exist_ok=True)
    _refuse_a_link(folder)  # planted meanwhile
    return folder


def _refuse_a_link(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise NotOurs(errno.ELOOP, LINK, str(path))


# The temporary names of write_new: `.tmp-` + mkstemp's 8 letters, digits or `_` + `.part`.
TEMPORARY = re.compile(r"\.tmp-[a-z0-9_]{8}\.part")
LEFTOVER_AGE_S = 60  # a temporary file lives for one write and fsync: far less than this


def remove_leftovers(folder: Path, *, now: float | None = None) -> list[Path]:
    """Remove the temporary files of write_new that an earlier run left in `folder` (killed
    between writing one and naming it): plain files whose name is exactly ours and that are
    older than LEFTOVER_AGE_S, so a write under way in another process is never touched.
    Returns what was removed; what cannot be removed stays, silently."""
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if not TEMPORARY.fullmatch(entry.name):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and now - st.st_mtime > LEFTOVER_AGE_S:
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def write_new(folder: Path, names: Iterable[str], data: bytes) -> Path:
    """Write `data` as a new file in `folder` under the first of `names` that is free.

    Temporary file -> fsync -> hard link to the final name (fails instead of replacing when the
    name is taken, by a file or a link alike, so the next name is tried) -> remove the
    temporary name.
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
    one step: readers see the old file or the new one, never half of one. NotOurs if `target` is
    a link (replacing it would silently cut it) or not a plain file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    check_file(target)
    with _staged(target.parent, data, f".{target.name}.", ".tmp") as tmp:
        os.replace(tmp, target)
    fsync_dir(target.parent)
