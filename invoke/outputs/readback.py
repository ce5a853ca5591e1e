"""Reading a picture's command back (`!fetch`): its PNG text chunks, then the first usable of our
`Dream`, InvokeAI's `Dream` or `sd-metadata`, and AUTOMATIC1111's `parameters`.

The file is untrusted: chunk headers are read without decoding the pixels, metadata chunks are
size-limited, and the text is only ever parsed (see canonical.py), never executed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from invoke import atomic
from invoke.errors import InvokeError, MetadataError
from invoke.line.parse import parse_fix, parse_request
from invoke.line.table import SWITCHES
from invoke.outputs.a1111 import read_a1111
from invoke.outputs.foreign import (
    _command_from_dream,
    _command_from_sd_metadata,
)
from invoke.outputs.invokeai import command_from_invokeai, metadata_from_graph
from invoke.outputs.metadata import APP_ID
from invoke.reading import open_file

# Metadata chunks are a few hundred bytes; anything far larger is not ours to trust.
MAX_CHUNK_BYTES = 64 * 1024
METADATA_KEYS = ("Dream", "sd-metadata", "parameters", "invokeai_metadata", "invokeai_graph")
# Chunks only told apart, never read: a big one is noted as there (its text left out).
_KNOWN_KEYS = ("prompt", "workflow", "invokeai_workflow")

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
        # A FIFO or a device (`!fetch /dev/zero`) is refused before a byte is read.
        with open_file(p, where, "give the path of a PNG file", MetadataError) as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                raise MetadataError(f"{where}: not a PNG file; !fetch reads PNG metadata only")
            for ctype, length, stream in _chunks(fh, where):
                if ctype not in (b"tEXt", b"zTXt", b"iTXt"):
                    continue
                # The keyword comes first (<= 79 bytes + NUL): peek before reading a big body.
                head = stream.read(min(length, 80))
                key = head.partition(b"\x00")[0].decode("latin-1")
                if key not in METADATA_KEYS + _KNOWN_KEYS:
                    continue
                if length > MAX_CHUNK_BYTES and key in (*_KNOWN_KEYS, "invokeai_graph"):
                    found.setdefault(key, "")
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
        raise MetadataError(f"{where}: cannot read ({atomic.why(err)})") from None
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


# sd-metadata is a few levels deep ({"image": {"postprocessing": [{...}]}}); Python's JSON reader
# recurses per level, so deeper nesting is refused before it is read.
MAX_JSON_DEPTH = 32
_JSON_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*+"?|[\[\]{}]')


def _json_object(text: str) -> tuple[Any, str]:
    """sd-metadata's text (or another JSON chunk's) -> (the JSON object, "") or (None, why it
    cannot be used)."""
    depth = 0
    for token in _JSON_STRING_OR_BRACKET.finditer(text):
        first = token.group(0)[0]  # a string's quote, or a bracket
        if first in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return None, f"sd-metadata nests more than {MAX_JSON_DEPTH} levels deep"
        elif first in "]}":
            depth -= 1
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as err:
        return None, f"sd-metadata is not valid JSON ({err})"
    if not isinstance(meta, dict):
        return None, "sd-metadata is not a JSON object"
    return meta, ""


def read_command(path: str | os.PathLike[str]) -> str:
    """The canonical command that made the PNG at `path` (read_command_and_notes, less the
    notes)."""
    return read_command_and_notes(path)[0]


def read_command_and_notes(path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """The canonical command that made the PNG at `path`, for `!fetch`, and notes on what the
    picture holds that the command cannot (`!fetch` shows them).

    Tries our `Dream` chunk; then InvokeAI 2.x's `sd-metadata` and its `Dream` (in that order,
    as InvokeAI 2.3's own !fetch does); InvokeAI 3.x-5.x's `invokeai_metadata` (or the metadata
    node of its `invokeai_graph`); then AUTOMATIC1111's `parameters`. The text is never
    executed: it becomes a Request through the line parser, and the result is that request's
    canonical command.
    """
    where = str(path)
    chunks = read_chunks(path)
    notes: list[str] = []
    readers = _readers(chunks)
    if not readers:
        if "prompt" in chunks or "workflow" in chunks:
            raise MetadataError(
                f"{where}: made by ComfyUI (a node graph in its prompt/workflow chunks); "
                "!fetch does not read ComfyUI pictures"
            )
        raise MetadataError(
            f"{where}: has no Dream, sd-metadata or parameters text; "
            "it was not made by invoke, InvokeAI or AUTOMATIC1111"
        )
    errors: list[str] = []
    for name, reader in readers:
        try:
            command = reader(notes)
        except InvokeError as err:
            why = str(err)  # "sd-metadata is not valid JSON" names its chunk already
            errors.append(why if why.startswith(name) else f"{name}: {why}")
            notes.clear()
            continue
        return command, [f"{Path(where).name}: {note}" for note in notes]
    raise MetadataError(f"{where}: no usable command in its metadata ({'; '.join(errors)})")


_Reader = Callable[[list[str]], str]


def _readers(chunks: dict[str, str]) -> list[tuple[str, _Reader]]:
    """(chunk name, its reader) in the order they are tried; a JSON chunk that cannot be read
    is a reader that says why."""
    meta: Any = None
    meta_error = ""
    if "sd-metadata" in chunks:
        meta, meta_error = _json_object(chunks["sd-metadata"])
    ours = isinstance(meta, dict) and meta.get("app_id") == APP_ID
    dream = chunks.get("Dream")
    readers: list[tuple[str, _Reader]] = []
    if dream is not None and ours:
        readers.append(("Dream", lambda notes: _command_from_dream(dream, ours=True)))
    if "sd-metadata" in chunks:
        readers.append(("sd-metadata", lambda notes: _sd_metadata(meta, meta_error, notes)))
    if dream is not None and not ours:
        readers.append(("Dream", lambda notes: _command_from_dream(dream, ours=False, notes=notes)))
    for key in ("invokeai_metadata", "invokeai_graph"):
        if key in chunks:
            readers.append((key, lambda notes, key=key: _invokeai(key, chunks[key], notes)))
    if "parameters" in chunks:
        readers.append(("parameters", lambda notes: read_a1111(chunks["parameters"], notes)))
    return readers


def _sd_metadata(meta: Any, error: str, notes: list[str]) -> str:
    if meta is None:
        raise MetadataError(error)
    return _command_from_sd_metadata(meta, notes)


def _invokeai(key: str, text: str, notes: list[str]) -> str:
    if not text:
        raise MetadataError(f"larger than {MAX_CHUNK_BYTES // 1024} KiB")
    meta, error = _json_object(text)
    if meta is None:
        raise MetadataError(error.replace("sd-metadata", key))
    return command_from_invokeai(
        metadata_from_graph(meta) if key == "invokeai_graph" else meta, notes
    )


# What a picture's command never chooses for the user: where the next pictures go and their names.
USER_CHOICES = {"outdir": "the output folder", "fnformat": "the file names"}


def without_user_choices(command: str) -> tuple[str, dict[str, str]]:
    """A read-back `command` (canonical, a `!fix` line too) less -o/--outdir and --fnformat, and
    the words dropped by field (`{"outdir": "-o /etc"}`): a picture from someone else must not
    pick where the next pictures go or what they are called, through the edit buffer or a batch
    file of `!fetch`. Where there are none, `command` comes back unchanged."""
    fix = command.startswith("!fix ")
    if fix:
        line = parse_fix(command.removeprefix("!fix "))
        request = dataclasses.replace(line.line, init_img=line.file)
    else:
        request = parse_request(command)
    dropped = {
        switch.field: f"{switch.canonical} {shlex.quote(switch.show(value))}"
        for switch in SWITCHES
        if switch.field in USER_CHOICES and (value := getattr(request, switch.field)) is not None
    }
    if not dropped:
        return command, {}
    kept = dataclasses.replace(request, **dict.fromkeys(USER_CHOICES))
    return (kept.validate().to_fix_command() if fix else kept.to_command()), dropped


def dropped_note(name: str, dropped: dict[str, str]) -> str:
    """What the user is told when without_user_choices dropped something from `name`'s command:
    `x.png: dropped -o /etc from the picture's command (the output folder is yours to choose)`."""
    choices = " and ".join(USER_CHOICES[field] for field in dropped)
    verb = "are" if len(dropped) > 1 else "is"
    return (
        f"{name}: dropped {' and '.join(dropped.values())} from the picture's command "
        f"({choices} {verb} yours to choose)"
    )


def fetched_command(path: Path) -> tuple[str, list[str]]:
    """What `!fetch` gives for the picture at `path`: its command, less the choices that are the
    user's (-o, --fnformat), and the notes to show (what was dropped or could not be read)."""
    read, notes = read_command_and_notes(path)
    command, dropped = without_user_choices(read)
    return command, notes + ([dropped_note(path.name, dropped)] if dropped else [])
