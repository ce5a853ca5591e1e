"""Untrusted metadata text -> our canonical command line.

A picture's metadata is never executed: its text is checked (no control characters: the line
goes into an edit buffer and onto the terminal), its numbers are read as numbers, and the result
goes through the line parser, whose request's canonical command is what comes back.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import replace
from typing import Any

from invoke.errors import MetadataError
from invoke.line.parse import parse_fix, parse_request
from invoke.line.request import Request
from invoke.line.switches import shorten
from invoke.outputs.metadata import is_file_upscale

NUMBER = re.compile(r"^-?\d+(\.\d*)?$")


def check_text(text: str, what: str) -> str:
    """Refuse control characters (terminal escapes, NUL); the result goes into an edit buffer."""
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            raise MetadataError(f"{what} holds a control character {ch!r}")
    return text


def one_line(text: str) -> str:
    return " ".join(text.split())


def canonical(command: str) -> str:
    return parse_request(command).to_command()


def canonical_fix(command: str) -> str:
    """Our own `!fix FILE ... -U` line (a file upscaled), canonical."""
    if not command.startswith("!fix "):
        raise MetadataError(f"{command!r} is not a !fix line")
    fix = parse_fix(command.removeprefix("!fix "))
    request = replace(fix.line, init_img=fix.file).validate()
    if not is_file_upscale(request):
        raise MetadataError(f"{command!r} is not a !fix FILE -U line")
    return request.to_fix_command()


# Past this a JSON int cannot become a float (OverflowError); no number a line takes is near it.
_LARGEST_INT = 2**63


def number(value: Any, kind: type, what: str) -> Any:
    shown = _shown(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        if isinstance(value, str) and NUMBER.match(value.strip()):
            value = float(value)  # 400 digits: infinity, refused below
        else:
            raise MetadataError(f"{what} is {shown}, not a number")
    if isinstance(value, int) and abs(value) > _LARGEST_INT:  # JSON's ints have no limit
        raise MetadataError(f"{what} is {shown}, too large a number")
    if not math.isfinite(value):
        raise MetadataError(f"{what} is {shown}, not a finite number")
    if kind is int:
        if not float(value).is_integer():
            raise MetadataError(f"{what} is {shown}, not a whole number")
        return int(value)
    return float(value)


def _shown(value: Any) -> str:
    """A value from the metadata as a message shows it: its repr, cut when long."""
    return repr(shorten(value)) if isinstance(value, str) else shorten(str(value))


def request_to_canonical(fields: dict[str, Any], what: str) -> str:
    prompt = check_text(one_line(fields.pop("prompt")), what)
    if not prompt:
        raise MetadataError(f"{what} has an empty prompt")
    request = Request(prompt=prompt, **fields)
    return canonical(request.to_command())
