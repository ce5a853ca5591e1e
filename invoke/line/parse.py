"""Text -> Request: the invoke> command line, as InvokeAI users type it.

A line is `<prompt> <switches>`. A line that starts with a quote has its first shell word as the
prompt; otherwise the prompt is the raw text up to the first whitespace followed by `-letter` or
`--letter` (so `a half-moon` and `a cat -1 year` stay prompt text, and an apostrophe in an
unquoted prompt is just an apostrophe). The switches are split with posix shell rules. A `#` at
the start of a word outside quotes starts a comment. Everything here is pure: no torch, no files.
"""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass

from invoke.errors import ParseError
from invoke.line.request import CONTROL_FIELDS, ControlUnit, Request
from invoke.line.switches import (
    MAX_LINE,
    SWITCH_LIKE,
    Switch,
    bad_character,
    describe_character,
    quote_prompt,
    show_value,
)
from invoke.line.table import SWITCHES

__all__ = [
    "FixLine",
    "ShellCommand",
    "join_args",
    "parse_fix",
    "parse_line",
    "parse_request",
    "quote_prompt",
]

QUIT_WORDS = ("q", "quit", "exit")

_BY_NAME: dict[str, Switch] = {name: sw for sw in SWITCHES for name in sw.names}
_LONG_NAMES = sorted(name for name in _BY_NAME if name.startswith("--"))
# InvokeAI switches this version does not have, and why: said instead of "unknown switch". The
# face tools and embiggen need models (GFPGAN, CodeFormer, Real-ESRGAN) that are not shipped and
# cannot be downloaded here. outputs._FOREIGN_SWITCHES drops each of these from an InvokeAI Dream
# line. (InvokeAI's -U, Real-ESRGAN there, is kept: here it runs Stable Diffusion's upscalers.)
_NO_FACE_MODELS = (
    "face restoration needs GFPGAN or CodeFormer models, which this program does not ship and "
    "cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing it does"
)
_NO_UPSCALER = (
    "needs the Real-ESRGAN upscaler, which this program does not ship and cannot download; for "
    "a larger picture use -U 2 or -U 4, -W/-H --hires_fix, or !fix FILE --outcrop SIDE PIXELS"
)
_NOT_YET: dict[str, str] = {
    "-G": _NO_FACE_MODELS,
    "--gfpgan_strength": _NO_FACE_MODELS,
    "--facetool_strength": _NO_FACE_MODELS,
    "-ft": _NO_FACE_MODELS,
    "--facetool": _NO_FACE_MODELS,
    "-cf": _NO_FACE_MODELS,
    "--codeformer_fidelity": _NO_FACE_MODELS,
    "--upscale_strength": "is -U's second number here: -U 2 0.5 (the factor, then the strength)",
    "--embiggen": "embiggen " + _NO_UPSCALER,
    "-embiggen": "embiggen " + _NO_UPSCALER,
    "--embiggen_tiles": "embiggen " + _NO_UPSCALER,
    "-embiggen_tiles": "embiggen " + _NO_UPSCALER,
    "--new_prompt": (
        "is InvokeAI's; here a new prompt goes after the file: "
        '!fix FILE "a new prompt" --outcrop SIDE PIXELS'
    ),
    "--threshold": "is an InvokeAI switch that this version does not support",
    "--perlin": "is an InvokeAI switch that this version does not support",
}
_SHELL_SPACE = " \t"  # what shlex splits on, once control characters are refused
# Where an unquoted prompt ends: a comment, or the first switch-looking word.
_PROMPT_END = re.compile(r"(?:^|(?<=[ \t]))(?:#|--?[A-Za-z])")


@dataclass(frozen=True)
class ShellCommand:
    """`!name args` (`!fetch a.png` -> name "fetch", args "a.png"), or `q` -> name "quit"."""

    name: str
    args: str = ""


@dataclass(frozen=True)
class FixLine:
    """`!fix FILE [PROMPT] [SWITCHES]`: the file as typed, and what the rest of the line gives.

    `line` is not validated on its own: it lacks the init image that !fix adds (the shell fills
    it in, with the file's own prompt and seed, and validates the whole)."""

    file: str
    line: Request


def parse_line(text: str) -> Request | ShellCommand | None:
    """One line typed at invoke>, read from a batch, or given on the command line.

    None for a blank or comment-only line. Raises ParseError for a line that cannot be used."""
    line, lead = _clean(text)
    if not line or line.startswith(("#", "//")):
        return None
    if line.startswith("!"):
        name, rest = _split_word(line[1:])
        if name == "dream":
            rest_lead = lead + len(line) - len(rest)
            return _parse_dream(rest, rest_lead, quit_words=False) if rest else None
        if not name:
            raise ParseError("!", "", "needs a command name, e.g. !history or !fetch FILE")
        return ShellCommand(name, rest)
    return _parse_dream(line, lead)


def parse_request(text: str) -> Request:
    """Like parse_line, for places that need a request: anything else is a ParseError."""
    result = parse_line(text)
    if isinstance(result, Request):
        return result
    if result is None:
        raise ParseError("line", "", "is empty; give a prompt and switches, e.g. a cat -s 20")
    if result.name == "quit":
        raise ParseError(text.strip(), "", "quits the shell; it is not a prompt")
    raise ParseError(f"!{result.name}", "", "is a shell command, not a prompt")


def parse_fix(args: str) -> FixLine:
    """The words after `!fix`: the file (shell-quoted when it has spaces), then prompt and
    switches as on any line. Raises ParseError."""
    text, lead = _clean(args)
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        file = lexer.get_token()
    except ValueError as err:
        raise ParseError("!fix", "", f"cannot read the file name ({err}); quote it") from None
    if not file:
        raise ParseError("!fix", "", "needs a file, e.g. !fix 000001.42.png --outcrop right 64")
    consumed = lexer.instream.tell()  # shlex has read the file name and the space after it
    rest = text[consumed:]
    parsed = _parse_dream(rest, lead + consumed, quit_words=False, validate=False)
    return FixLine(file=file, line=parsed if isinstance(parsed, Request) else Request())


def join_args(argv: list[str]) -> str:
    """Shell words after the launch options -> one command line.

    One word is the line itself (`invoke "a cat -s 20"`). Several: the words before the first
    switch are the prompt, the rest are switches and their values (`invoke a cat -s 20`)."""
    if len(argv) == 1:
        return argv[0]
    first_switch = next((i for i, word in enumerate(argv) if SWITCH_LIKE.match(word)), len(argv))
    words = [shlex.quote(word) for word in argv[first_switch:]]
    if first_switch:
        words.insert(0, quote_prompt(" ".join(argv[:first_switch])))
    return " ".join(words)


def _clean(text: str) -> tuple[str, int]:
    """Refuse what no line may hold; return the stripped line and how much was cut on the left."""
    text = text.rstrip("\r\n")
    if len(text) > MAX_LINE:
        raise ParseError("line", "", f"is {len(text)} characters long; the limit is {MAX_LINE}")
    bad = bad_character(text)
    if bad:
        index, ch = bad
        raise ParseError("line", "", f"has {describe_character(ch)} at column {index + 1}")
    stripped = text.lstrip(_SHELL_SPACE)
    return stripped.rstrip(_SHELL_SPACE), len(text) - len(stripped)


def _split_word(text: str) -> tuple[str, str]:
    """`fetch  a.png ` -> ("fetch", "a.png")."""
    for index, ch in enumerate(text):
        if ch in _SHELL_SPACE:
            return text[:index], text[index:].strip(_SHELL_SPACE)
    return text, ""


def _parse_dream(
    line: str, lead: int, quit_words: bool = True, validate: bool = True
) -> Request | ShellCommand | None:
    if line.startswith(('"', "'")):
        words = _shell_words(line, lead)
        if not words:  # only a comment was left
            return None
        prompt, switch_words, quoted = words[0], words[1:], True
    else:
        end = _PROMPT_END.search(line)
        if end is None:
            prompt, switches = line, ""
        elif line[end.start()] == "#":
            prompt, switches = line[: end.start()], ""
        else:
            prompt, switches = line[: end.start()], line[end.start() :]
        prompt = prompt.strip(_SHELL_SPACE)
        switch_words = _shell_words(switches, lead + end.start()) if switches else []
        quoted = False
        if not switch_words and not prompt:
            return None
        if quit_words and not switch_words and prompt in QUIT_WORDS:
            return ShellCommand("quit", "")
    values = _units(_read_switches(switch_words, quoted))
    request = Request(prompt=prompt, **values)
    return request.validate() if validate else request


def _shell_words(text: str, offset: int) -> list[str]:
    """Posix shell words of `text`, up to a comment; quoting errors name the column."""
    cut = _comment_start(text, offset)
    try:
        return shlex.split(text[:cut], posix=True)
    except ValueError as err:  # _comment_start already caught what shlex refuses
        raise ParseError("line", "", f"cannot be split into words ({err})") from None


def _comment_start(text: str, offset: int) -> int:
    """Index of a `#` that starts a word outside quotes (else len(text)), scanning as shlex does.
    Raises ParseError for an unterminated quote or a trailing backslash."""
    quote = ""
    opened = 0
    word_start = True
    index = 0
    while index < len(text):
        ch = text[index]
        if quote == "'":
            if ch == "'":
                quote = ""
        elif quote == '"':
            if ch == "\\":
                index += 1  # in double quotes a backslash takes the next character with it
            elif ch == '"':
                quote = ""
        elif ch == "\\":
            if index + 1 == len(text):
                raise ParseError(
                    "line", "", "ends with a \\ that escapes nothing; remove it or write \\\\"
                )
            index += 1
            word_start = False
        elif ch in "\"'":
            quote, opened, word_start = ch, index, False
        elif ch in _SHELL_SPACE:
            word_start = True
        elif ch == "#" and word_start:
            return index
        else:
            word_start = False
        index += 1
    if quote:
        mark = '"' if quote == '"' else "'"
        raise ParseError(
            "line",
            "",
            f"has a {mark} at column {offset + opened + 1} that is never closed; "
            f"close it, or escape it as \\{mark}",
        )
    return len(text)


def _units(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """(field, value) pairs in the line's order -> Request fields. A switch given twice: the
    later value wins, except that each --controlnet starts a ControlNet unit and the control
    switches after it are that unit's (before any --controlnet, the first unit's)."""
    values: dict[str, object] = {}
    units: list[dict[str, object]] = [{}]
    for field, value in pairs:
        if field not in CONTROL_FIELDS:
            values[field] = value
            continue
        if field == "controlnet" and "controlnet" in units[-1]:
            units.append({})
        units[-1][field] = value
    values.update(units[0])
    if len(units) > 1:
        values["more_controls"] = tuple(ControlUnit(**u) for u in units[1:])  # type: ignore[arg-type]
    return values


def _read_switches(words: list[str], quoted: bool) -> list[tuple[str, object]]:
    """Switch words -> (request field, value) pairs in the line's order."""
    values: list[tuple[str, object]] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not SWITCH_LIKE.match(word):
            where = "inside the quotes" if quoted else "before the first switch"
            raise ParseError(
                show_value(word),
                "",
                f"is not a switch or a switch's value; prompt text goes {where}",
            )
        switch, attached = _lookup(word, quoted)
        if switch.many:
            # `--outcrop top 64 right 32`: every word up to the next switch is its value
            run = [] if attached is None else [attached]
            while index < len(words) and not SWITCH_LIKE.match(words[index]):
                run.append(words[index])
                index += 1
            if not run:
                raise ParseError(switch.label, "", f"needs a value: {switch.expects}")
            values.append((switch.field, switch.read(" ".join(run))))
            continue
        if not switch.takes_value:
            if attached is not None:
                raise ParseError(switch.label, "", f"takes no value (got {show_value(word)})")
            values.append((switch.field, True))
            continue
        if attached is None:
            if index == len(words):
                raise ParseError(switch.label, "", f"needs a value: {switch.expects}")
            if SWITCH_LIKE.match(words[index]):
                raise ParseError(
                    switch.label,
                    "",
                    f"needs a value: {switch.expects} (got the switch {show_value(words[index])})",
                )
            attached = words[index]
            index += 1
        values.append((switch.field, switch.read(attached)))
    return values


def _lookup(word: str, quoted: bool) -> tuple[Switch, str | None]:
    """A switch word -> (switch, value attached to it or None).

    `--seed=42`, `-S42`, `-S=42`, `-Ak_lms`, `-fit`, `-steps`; a long name may be shortened to a
    unique prefix (`--str 0.5`), as InvokeAI's argparse allowed."""
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        attached = value if eq else None
        if name in _BY_NAME:
            return _BY_NAME[name], attached
        matches = [long for long in _LONG_NAMES if long.startswith(name)]
        if len(matches) == 1:
            return _BY_NAME[matches[0]], attached
        if len(matches) > 1:
            raise ParseError(name, "", f"is ambiguous: it could be {', '.join(matches)}")
        raise _unknown(name, quoted)
    name, eq, value = word.partition("=")
    attached = value if eq else None
    if name in _BY_NAME:  # `-s`, `-fit`, `-s=20`
        return _BY_NAME[name], attached
    if "-" + name in _BY_NAME:  # `-steps 20`, `-outdir x`: a long name with one dash
        return _BY_NAME["-" + name], attached
    if name in _NOT_YET:
        # `-ft gfpgan` is InvokeAI's facetool, not `-f t`; `-cf` is not `-c f`
        raise _unknown(name, quoted)
    if word[:2] in _BY_NAME and not _BY_NAME[word[:2]].many:
        attached = word[2:]
        return _BY_NAME[word[:2]], attached.removeprefix("=")
    raise _unknown(word, quoted)


def _unknown(name: str, quoted: bool) -> ParseError:
    if name in _NOT_YET:
        return ParseError(name, "", _NOT_YET[name])
    suggestion = _suggest(name)
    if suggestion:
        return ParseError(show_value(name), "", f"unknown switch (did you mean {suggestion}?)")
    hint = "" if quoted else "; if it is part of the prompt, put the prompt in quotes"
    return ParseError(show_value(name), "", f"unknown switch{hint}")


def _suggest(name: str) -> str | None:
    key = name.lstrip("-").lower().replace("-", "_")
    if len(key) == 1:
        # `-a` for `-A`, `-w` for `-W`: the same letter in the other case.
        other = "-" + name.lstrip("-").swapcase()
        return _BY_NAME[other].label if other in _BY_NAME else None
    keys = {long.lstrip("-"): _BY_NAME[long].label for long in _LONG_NAMES}
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.75)
    return keys[close[0]] if close else None
