"""Reading what comes from outside: files the user names, and batch lines as they arrive.

Every file a user names (a batch file, an init image, a mask, a control image, a PNG to
`!fetch`, a models.yaml) is opened by `open_file`. What is not a regular file is refused before a
byte is read, in one line saying what it is: a named pipe (FIFO) would block the open or the
read until some other program writes to it, a device such as /dev/zero or /dev/urandom never
ends, a socket cannot be read. `read_file` also caps the size, for files read whole.

Batch lines (stdin, `--from_file`, `!replay`) come from `batch_lines` one at a time, as they
arrive: a line runs as soon as it is complete, so `generate_prompts | invoke` gets its first
picture while the producer still runs, and `yes LINE | invoke` never holds more than a line.
A line is held only up to the parser's limit (MAX_LINE characters); a longer one is skipped to
its end without being kept, and fails alone. Text is UTF-8, a byte-order mark dropped; UTF-16
with a byte-order mark is read too (Windows editors save it). The first line holding bytes that
are not text stops the batch with one message (`line_text`): a binary file is refused after its
first line, not reported line by line.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import re
import stat
from collections.abc import Iterator
from typing import BinaryIO

from invoke.errors import InvokeError, ParseError
from invoke.line.switches import MAX_LINE

# A line with no end in this many characters is no command line: the batch stops reading.
MAX_SKIPPED = 1_000_000
_BOM = "\ufeff"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Bytes a decoder cannot read become lone surrogates U+DC00 + byte (Python's surrogateescape,
# for every byte and every codec): the line keeps its place, `line_text` names the byte.
_MARK = "invoke-undecodable"
codecs.register_error(
    _MARK, lambda exc: ("".join(chr(0xDC00 + b) for b in exc.object[exc.start : exc.end]), exc.end)
)
_SURROGATE = re.compile("[\ud800-\udfff]")


class NotText(InvokeError):
    """Batch input that is not text: the batch reports it once and stops reading."""


# -- files the user names -------------------------------------------------------------------------


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in the user's words."""
    if stat.S_ISDIR(mode):
        return "is a folder"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is a device, not a file"  # character (/dev/zero) or block


def _why(exc: OSError) -> str:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "no such file"
    if exc.errno == errno.ELOOP:
        return "is a symlink loop (a link that leads back to itself)"
    if exc.errno == errno.EISDIR:
        return "is a folder"
    return f"cannot be read ({exc.strerror or exc})"


def not_a_file(path: str | os.PathLike[str]) -> str | None:
    """None when `path` is a regular file (links followed); else what it is, in the user's
    words: "no such file", "is a folder", "is a named pipe (FIFO), not a file", ..."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return _why(exc)
    return None if stat.S_ISREG(mode) else _kind(mode)


def open_file(
    path: str | os.PathLike[str],
    name: str,
    hint: str = "",
    error: type[InvokeError] = InvokeError,
) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file (links are followed).

    Anything else raises `error` with one line: `<name>: <what it is>; <hint>`, e.g.
    `init image x.png: is a named pipe (FIFO), not a file; give the path of a PNG file`. The
    open itself cannot block: a FIFO put in the file's place after the check is caught too.
    """

    def refuse(why: str) -> InvokeError:
        return error(f"{name}: {why}" + (f"; {hint}" if hint else ""))

    problem = not_a_file(path)
    if problem:
        raise refuse(problem)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise refuse(_why(exc)) from None
    if not stat.S_ISREG(mode := os.fstat(fd).st_mode):
        os.close(fd)
        raise refuse(_kind(mode))
    if hasattr(os, "O_NONBLOCK"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_file(
    path: str | os.PathLike[str],
    name: str,
    limit: int,
    too_big: str = "",
    error: type[InvokeError] = InvokeError,
) -> bytes:
    """The bytes of a regular file the user names (see open_file), refused without reading it
    when it is over `limit` bytes: `<name>: is 2.1 MB, more than the 1.0 MB allowed; <too_big>`.
    """
    with open_file(path, name, "", error) as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read(limit + 1) if size <= limit else b""
    if size > limit or len(data) > limit:  # (or it grew while being read)
        raise error(
            f"{name}: is {_megabytes(max(size, len(data)))}, more than the "
            f"{_megabytes(limit)} allowed" + (f"; {too_big}" if too_big else "")
        )
    return data


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size < 1e9 else f"{size / 1e9:.1f} GB"


# -- batch lines ----------------------------------------------------------------------------------


def batch_lines(stream: BinaryIO) -> Iterator[str | InvokeError]:
    """The lines of `stream` as they arrive, each without its line end.

    A line longer than MAX_LINE characters is skipped to its end (held only up to the limit) and
    comes as the ParseError it gets, so the batch reports it and goes on. A line with no end in
    MAX_SKIPPED characters, or a read that fails, raises NotText: the batch stops there. Lines
    are decoded, not checked: `line_text` finds the bytes that are not text.
    """
    own = not hasattr(stream, "peek")  # BytesIO (a test's stdin) has no peek: buffer it here
    buffered = io.BufferedReader(stream) if own else stream  # type: ignore[arg-type]
    text = io.TextIOWrapper(buffered, encoding="utf-8", errors=_MARK, newline=None)
    try:
        # peek waits for the first bytes only (never for a whole buffer): a live pipe is not
        # held up.
        if buffered.peek(2)[:2] in _UTF16_BOMS:
            text.reconfigure(encoding="utf-16")
        while line := text.readline(MAX_LINE + 1):
            if line.endswith("\n"):
                yield line[:-1]
            elif len(line) <= MAX_LINE or _SURROGATE.search(line):
                yield line  # the last line, without an end; or not text (line_text says so)
            else:  # the parser's own words for a long line (it never sees this one)
                yield ParseError(
                    "line",
                    "",
                    f"is {_skip_rest(text, len(line))} characters long; the limit is {MAX_LINE}",
                )
    except OSError as exc:  # EIO from a terminal that went away, a disk error...
        raise NotText(f"cannot be read ({exc.strerror or exc}); stopped reading") from None
    finally:
        # The stream is the caller's to close (stdin stays open): let go of it without closing.
        # (Closed already when the caller closed it before ending this generator: nothing to do.)
        with contextlib.suppress(ValueError):
            text.detach()
            if own:
                buffered.detach()  # type: ignore[union-attr]


def _skip_rest(text: io.TextIOWrapper, held: int) -> int:
    """Read the rest of an overlong line without keeping it; its whole length."""
    length = held
    while not (part := text.readline(64 * 1024)).endswith("\n"):
        length += len(part)
        if not part:
            return length  # the input ended inside the line
        if length > MAX_SKIPPED:
            raise NotText(
                f"has no end in its first {MAX_SKIPPED} characters; stopped reading: "
                "this is not a file of command lines"
            )
    return length + len(part) - 1


def line_text(raw: str | bytes | InvokeError) -> str:
    """A batch line as text: a leading byte-order mark dropped (the first line of a file saved
    by Windows tools, or of each file joined by `cat`).

    Raises the line's own error when it could not be read (too long), and NotText when it holds
    bytes that are not text (a surrogate from the decoder: see _MARK). Bytes given directly are
    decoded as UTF-8.
    """
    if isinstance(raw, InvokeError):
        raise raw
    text = raw.decode("utf-8", errors=_MARK) if isinstance(raw, bytes) else raw
    found = _SURROGATE.search(text)
    if found:
        code = ord(found.group())
        byte = f" (byte 0x{code - 0xDC00:02X})" if 0xDC00 <= code <= 0xDCFF else ""
        raise NotText(
            f"has bytes that are not UTF-8 text at column {found.start() + 1}{byte}; "
            "stopped reading: a batch is a text file of command lines, saved as UTF-8"
        )
    return text.removeprefix(_BOM)
