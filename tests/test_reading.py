"""invoke/reading.py: files the user names are opened only when they are regular files; batch
lines arrive one at a time, bounded, decoded. The live-producer test (issue 18, acceptance 3)
runs the real command with a pipe kept open."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from invoke.errors import InvokeError, MetadataError
from invoke.reading import (
    MAX_SKIPPED,
    NotText,
    batch_lines,
    line_text,
    not_a_file,
    open_file,
    read_file,
)


def texts(data: bytes) -> list[str]:
    """What a batch sees of `data`: each line's text, or its error's message."""
    seen = []
    for raw in batch_lines(io.BytesIO(data)):
        try:
            seen.append(line_text(raw))
        except InvokeError as exc:
            seen.append(f"{type(exc).__name__}: {exc}")
    return seen


class Endless(io.RawIOBase):
    """A stream that never ends (`yes LINE`, /dev/zero): counts the bytes read from it."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        start = self.served % len(self.line)
        chunk = (self.line * (len(buffer) // len(self.line) + 2))[start : start + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.served += len(chunk)
        return len(chunk)


# -- batch lines ----------------------------------------------------------------------------------


def test_a_line_comes_out_as_soon_as_it_is_complete_while_the_input_stays_open() -> None:
    read_end, write_end = os.pipe()
    got: list[str] = []
    with os.fdopen(read_end, "rb") as stream, os.fdopen(write_end, "wb") as producer:
        lines: Iterator[str | InvokeError] = batch_lines(stream)
        producer.write(b"a red circle -s 1\n")
        producer.flush()
        reader = threading.Thread(target=lambda: got.append(str(next(lines))), daemon=True)
        reader.start()
        reader.join(timeout=10)
        assert got == ["a red circle -s 1"]  # the producer has not closed its end
        producer.write(b"a blue square")
        producer.close()
        assert list(lines) == ["a blue square"]  # the last line needs no line end


def test_endless_input_is_read_a_line_at_a_time_not_first_to_its_end() -> None:
    source = Endless(b"a cat -s 1\n")
    lines = batch_lines(io.BufferedReader(source))
    assert [next(lines) for _ in range(1000)] == ["a cat -s 1"] * 1000
    assert source.served < 1000 * 11 + 64 * 1024  # a buffer ahead of the lines, no more


def test_an_overlong_line_fails_alone_with_its_length_and_the_next_line_is_read() -> None:
    data = b"first\n" + "é".encode() * 30_000 + b"\r\nnext\n"
    assert texts(data) == [
        "first",
        "ParseError: line: is 30000 characters long; the limit is 20000",
        "next",
    ]


def test_a_line_without_end_stops_after_a_bounded_read() -> None:
    source = Endless(b"\0")
    lines = batch_lines(io.BufferedReader(source))
    with pytest.raises(NotText, match=f"has no end in its first {MAX_SKIPPED} characters"):
        next(lines)
    assert source.served < MAX_SKIPPED + 256 * 1024


def test_a_read_that_fails_stops_the_batch_with_one_line() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[override]
            raise OSError(5, "Input/output error")

    with pytest.raises(NotText, match=r"^cannot be read \(Input/output error\); stopped reading$"):
        next(batch_lines(io.BufferedReader(Failing())))


@pytest.mark.parametrize(
    "data",
    [
        "\ufeff# a comment\na cat\n".encode(),
        "# a comment\r\na cat\r\n".encode("utf-16"),  # with its BOM, little-endian here
        "# a comment\na cat\n".encode("utf-16-be").join([b"\xfe\xff", b""]),
        b"# a comment\ra cat",  # old Mac line ends
    ],
    ids=["utf-8 BOM", "utf-16-le", "utf-16-be", "CR"],
)
def test_byte_order_marks_and_utf16_and_line_ends_are_read_as_text(data: bytes) -> None:
    assert texts(data) == ["# a comment", "a cat"]


def test_a_bom_at_the_start_of_a_later_line_is_dropped_too() -> None:
    """`cat a.txt b.txt`, each saved with its BOM."""
    assert texts("\ufeffa cat\n\ufeff!fetch x.png\n".encode()) == ["a cat", "!fetch x.png"]


def test_bytes_that_are_not_text_are_named_by_column_and_value() -> None:
    assert texts(b"ok\nnot \xc3( text\n")[1] == (
        "NotText: has bytes that are not UTF-8 text at column 5 (byte 0xC3); stopped reading: "
        "a batch is a text file of command lines, saved as UTF-8"
    )
    with pytest.raises(NotText, match=r"column 3 \(byte 0xFF\)"):
        line_text(b"ab\xff")


def test_u_fffd_written_as_text_is_text() -> None:
    assert line_text("a cat \ufffd") == "a cat \ufffd"


# -- files the user names -------------------------------------------------------------------------


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    started = time.monotonic()
    with pytest.raises(InvokeError) as caught:
        open_file(tmp_path / "pipe", "-I pipe", "give an image")
    assert str(caught.value) == "-I pipe: is a named pipe (FIFO), not a file; give an image"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda d: Path("/dev/zero"), "is a device, not a file"),
        (lambda d: d, "is a folder"),
        (lambda d: d / "missing", "no such file"),
        (lambda d: d / "missing" / "below", "no such file"),
        (lambda d: (d / "loop").symlink_to(d / "loop") or d / "loop", "is a symlink loop"),
    ],
    ids=["device", "folder", "missing", "below missing", "symlink loop"],
)
def test_what_is_not_a_regular_file_is_named(tmp_path: Path, make, said: str) -> None:
    path = make(tmp_path)
    assert (not_a_file(path) or "").startswith(said)
    with pytest.raises(MetadataError, match=f"^the file: {said}"):
        open_file(path, "the file", "", MetadataError)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "sock"))
        assert not_a_file(tmp_path / "sock") == "is a socket, not a file"


def test_a_link_to_a_regular_file_is_read_and_a_size_cap_is_kept(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_bytes(b"x" * 2_000)
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    assert read_file(tmp_path / "link.txt", "link.txt", 2_000) == b"x" * 2_000
    with pytest.raises(InvokeError, match=r"^link\.txt: is 0\.0 MB, more than the 0\.0 MB allowed"):
        read_file(tmp_path / "link.txt", "link.txt", 1_999)


# -- the live producer (issue 18, acceptance 3) ---------------------------------------------------


@pytest.mark.e2e
def test_a_live_producer_gets_its_first_picture_before_stdin_closes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """`generate_prompts | invoke`: the first line's picture (and its `Outputs:` block) comes
    while the producer still holds stdin open."""
    outdir = tmp_path / "out"
    # No PYTHONUNBUFFERED: the `Outputs:` block must reach a pipe by itself, as it does for a user.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONUNBUFFERED", None)
    env["XDG_CACHE_HOME"] = env["XDG_CONFIG_HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "invoke", "--model", str(tiny_model_dir), "-o", str(outdir)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=env,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(b"a red circle -s 1 -S 5\n")
        process.stdin.flush()
        shown: list[str] = []

        def read_until_the_picture() -> None:
            for raw in process.stdout:  # type: ignore[union-attr]
                shown.append(raw.decode())
                if "000001.5.png" in shown[-1]:
                    return

        reader = threading.Thread(target=read_until_the_picture, daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert process.poll() is None  # still running: stdin is open
        assert any(re.match(r"\[1\] .*000001\.5\.png: ", line) for line in shown), shown
        assert (outdir / "000001.5.png").is_file()
        process.stdin.write(b"a blue square -s 1 -S 6\n")
        process.stdin.close()
        rest = process.stdout.read().decode()
        assert process.wait(timeout=60) == 0
        assert "000002.6.png" in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
