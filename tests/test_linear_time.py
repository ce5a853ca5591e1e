"""Every parser of text from outside finishes 100 KB of hostile text in under a second (issue 18).

The parsers: the line (and `!fix`'s), the prompt grammar, the shell's validator and completer
(run at every keystroke), and the three metadata readers (our Dream line, InvokeAI's Dream line
and sd-metadata with its outcrop command, AUTOMATIC1111's `parameters`). Each is fed text made to
hurt a backtracking regex or a recursive grammar: long runs of the characters each one looks
for, a short pattern repeated (unclosed groups, `a+ a+ ...`), deep nesting (a run of `(`, then
text, then a run of `)1`). A linear parser reads 100 KB in milliseconds; the ones this replaced
took minutes. Hand-picked worst cases, the ones found before the fix, come after.

Lines longer than the line parser's limit (20 000) are refused before they are read, so the line
parsers are also fed text just under it.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError

from invoke.errors import InvokeError
from invoke.line.parse import parse_fix, parse_line
from invoke.line.prompt_syntax import parse_prompt
from invoke.line.sweep import alternatives
from invoke.line.switches import MAX_LINE
from invoke.outputs import a1111 as a1111_reader
from invoke.outputs import foreign, invokeai, readback
from invoke.shell.completer import ShellCompleter
from invoke.shell.validator import LineValidator
from tests.hypothesis_budget import examples

SIZE = 100_000
LINE = MAX_LINE - 1  # the longest line the parser reads
LIMIT_S = 1.0
GIVE_UP_S = 20.0  # a parser gone quadratic fails here rather than hanging the run for minutes

# What the parsers look for: each regex's characters, the grammar's words and the readers' keys.
UNITS = (
    "(", ")", "[", "]", "<", ">", "{", "}", ":", ",", ".", ";", "=", "#", "!", "?", "1", "0.5",
    " ", "\t", "\n", '"', "'", "\\", "+", "-", "a", "x", "a+", "a-", "(a", ")1", ")1.5", ")nan",
    "e400", ":1", ":1 ", "a:1 ", "(a:1", "(a)", "(a)1 ", " -a", " -s ", "-s 1", "--s", " --out",
    "-c top 64 ", "-S", "<a", "<lora:", "<lora:a:", "withLora(", "withLora(a, ", ".blend(",
    ".and(", '"a",', '("a", ', '"\\"', "!fix ", "!dream ", "Steps: ", "Steps: 1, ",
    "Negative prompt:", "Size: ", "Seed: ", '{"a":', "[[", "a ", "  ",
)  # fmt: skip


# How a hostile text is made: one to three short patterns of UNITS, each repeated over its share
# of the text. Hypothesis draws (and reports) the patterns, not the 100 KB they make.
PATTERNS = st.lists(
    st.lists(st.sampled_from(UNITS), min_size=1, max_size=3).map("".join), min_size=1, max_size=3
)


def hostile_text(patterns: list[str], size: int = SIZE) -> str:
    """`size` characters: each pattern repeated over an equal stretch, one after another."""
    text = []
    for index, pattern in enumerate(patterns):
        share = size // len(patterns) + (size % len(patterns) if index == 0 else 0)
        text.append((pattern * (share // len(pattern) + 1))[:share])
    return "".join(text)


class TookTooLong(Exception):
    pass


@contextmanager
def give_up_after(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` (a POSIX main thread only: elsewhere it just runs)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "setitimer"
    ):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise TookTooLong(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timed(parse: Callable[[str], object], text: str) -> float:
    """CPU seconds `parse` takes on `text` (its own thread's, so that other processes on a busy
    machine do not count; the parsers neither sleep nor wait); it may refuse it, with a one-line
    InvokeError."""
    started = time.thread_time()
    with give_up_after(GIVE_UP_S):
        try:
            parse(text)
        except InvokeError as err:
            assert "\n" not in str(err), str(err)
        except ValidationError as err:  # the shell's validator: a ParseError, shown in place
            assert "\n" not in err.message, err.message
    return time.thread_time() - started


def assert_fast(parse: Callable[[str], object], text: str) -> None:
    took = timed(parse, text)
    assert took < LIMIT_S, f"{took:.2f} s on {len(text)} characters starting {text[:60]!r}"


# -- each parser, as the program calls it --------------------------------------------------------


def validate(text: str) -> None:
    LineValidator().validate(Document(text))


def complete(text: str) -> None:
    completer = ShellCompleter()
    event = CompleteEvent(completion_requested=True)
    list(completer.get_completions(Document(text, len(text)), event))


def our_dream(text: str) -> None:
    foreign._command_from_dream(text, ours=True)


def invokeai_dream(text: str) -> None:
    foreign._command_from_dream(text, ours=False)


def a1111(text: str) -> None:
    a1111_reader.command_from_a1111(text)


def sd_metadata(text: str) -> None:
    """sd-metadata text as readback reads it: the depth checked, then the JSON's command."""
    meta, _ = readback._json_object(text)
    if meta is not None:
        foreign._command_from_sd_metadata(meta)


def invokeai_metadata(text: str) -> None:
    """InvokeAI 3.x-5.x metadata whose prompts and LoRA name are the hostile text."""
    lora = {"lora": {"model_name": text}, "weight": 1}
    meta = {"positive_prompt": text, "negative_prompt": text, "scheduler": text, "loras": [lora]}
    invokeai.command_from_invokeai(meta, [])


PARSERS: dict[str, Callable[[str], object]] = {
    "prompt grammar": parse_prompt,
    "sweep expander": alternatives,
    "line": parse_line,
    "!fix line": parse_fix,
    "shell validator": validate,
    "shell completer": complete,
    "our Dream": our_dream,
    "InvokeAI Dream": invokeai_dream,
    "A1111 parameters": a1111,
    "sd-metadata": sd_metadata,
    "InvokeAI 3-5 metadata": invokeai_metadata,
}
# Few examples: each costs milliseconds when the parser is linear. No shrinking: the patterns
# are already short, and a slow parser would make each shrinking step slow.
SETTINGS = settings(
    max_examples=examples(12),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS.keys())
@SETTINGS
@given(patterns=PATTERNS)
def test_each_parser_reads_100_kb_of_hostile_text_in_under_a_second(
    parse: Callable[[str], object], patterns: list[str]
) -> None:
    assert_fast(parse, hostile_text(patterns))


@pytest.mark.parametrize(
    "parse",
    [parse_line, parse_fix, validate, lambda text: validate("!fix " + text)],
    ids=["line", "!fix line", "shell validator", "shell validator on !fix"],
)
@SETTINGS
@given(patterns=PATTERNS)
def test_the_line_parsers_read_the_longest_line_they_take_in_under_a_second(
    parse: Callable[[str], object], patterns: list[str]
) -> None:
    assert_fast(parse, hostile_text(patterns, LINE))


@SETTINGS
@given(prompt=PATTERNS, settings_line=PATTERNS)
def test_a1111_reads_a_hostile_settings_line_in_under_a_second(
    prompt: list[str], settings_line: list[str]
) -> None:
    """The settings line is the last one starting `Steps:`: hostile text after it is read as
    `Key: value` fields."""
    text = hostile_text(prompt, SIZE // 3)
    settings_text = hostile_text(settings_line, SIZE // 3)
    assert_fast(a1111, f"{text}\nNegative prompt: {text}\nSteps: {settings_text}")


@SETTINGS
@given(prompt=PATTERNS, command=PATTERNS)
def test_sd_metadata_reads_a_hostile_outcrop_command_in_under_a_second(
    prompt: list[str], command: list[str]
) -> None:
    """InvokeAI's outcrop record: `!fix FILE -s ...` split where FILE ends, then read."""
    image = {
        "prompt": hostile_text(prompt, SIZE // 2),
        "seed": 1,
        "postprocessing": [
            {"tool": "outcrop", "dream_command": "!fix " + hostile_text(command, SIZE // 2)}
        ],
    }
    assert_fast(sd_metadata, json.dumps({"image": image}))


# -- the worst cases found before the fix, each minutes long then --------------------------------

WORST = {
    "19 KB of (": ("prompt grammar", "(" * 19_000),
    "( and a, 50 KB": ("prompt grammar", "(a" * 25_000),
    "a word, 99 KB of + and a letter": ("prompt grammar", "a" + "+" * 99_000 + "x"),
    "unclosed (a:1": ("prompt grammar", "(a:1" * 25_000),
    "nesting past the limit": ("prompt grammar", "(" * 50_000 + "a" + ")1" * 25_000),
    "( before .blend(": ("prompt grammar", "(" * 99_000 + ").blend("),
    "withLora( repeated": ("prompt grammar", "withLora(" * 11_000),
    "a line of (": ("line", "(" * LINE),
    "a keystroke on 19 KB of (a": ("shell validator", "(a" * (LINE // 2)),
    "!dream !dream ... completed": ("shell completer", "!dream " * 14_000),
    "A1111 keys without a colon": ("A1111 parameters", "a\nSteps: 1, " + "a " * 32_000),
    "A1111 spaces": ("A1111 parameters", "a\nSteps: 1," + " " * 64_000 + "x"),
    "A1111 keys of + and spaces": ("A1111 parameters", "a\nSteps: 1, " + "a+ " * 21_000),
    "A1111 prompt of ( then )": (
        "A1111 parameters",
        "(" * 50_000 + "a" + ")" * 49_000 + "\nSteps: 1",
    ),
    "A1111 prompt of (a:0.5)": (
        "A1111 parameters",
        "(" * 30_000 + "a:0.5)" * 10_000 + "\nSteps: 1",
    ),
    "A1111 prompt of [": ("A1111 parameters", "[a" * 50_000 + "\nSteps: 1"),
    "A1111 prompt of + then x": ("A1111 parameters", "a" + "+" * 99_000 + "x\nSteps: 1"),
    "A1111 prompt of [ and :": ("A1111 parameters", "[:" * 50_000 + "\nSteps: 1"),
    "A1111 prompt of <lora:": ("A1111 parameters", "<lora:" * 16_000 + "\nSteps: 1"),
    "InvokeAI Dream of (": ("InvokeAI Dream", "(" * SIZE),
    "sd-metadata nested": ("sd-metadata", "[" * SIZE),
    "512 sweeps, then groups of one": ("sweep expander", "{a|b}" * 9 + "{a}" * 150 + "x" * 99_000),
    "512 sweeps of long text": ("sweep expander", ("{" + "a" * 10_000 + "|b}") * 9),
    "deep { then |": ("sweep expander", "{" * 50_000 + "|" * 50_000),
}


@pytest.mark.parametrize(("parser", "text"), WORST.values(), ids=WORST.keys())
def test_the_worst_cases_found_are_read_in_under_a_second(parser: str, text: str) -> None:
    assert_fast(PARSERS[parser], text)


def test_a_crafted_outcrop_command_in_a_picture_is_refused_in_under_a_second(
    tmp_path: Path,
) -> None:
    """The whole !fetch path: a PNG whose sd-metadata records InvokeAI's outcrop with a 60 KB run
    of spaces (3 minutes before the fix), read back to one line naming what is wrong."""
    from PIL import Image, PngImagePlugin

    command = "!fix a" + " " * 60_000 + "x -c top 64"
    outcrop = {"tool": "outcrop", "dream_command": command}
    meta = {"image": {"prompt": "a cat", "postprocessing": [outcrop]}}
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-metadata", json.dumps(meta))
    path = tmp_path / "outcrop.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    started = time.thread_time()
    with pytest.raises(InvokeError) as caught:
        readback.read_command(path)
    assert time.thread_time() - started < LIMIT_S
    assert "is not InvokeAI's !fix FILE -s STEPS ... -c SIDE PIXELS" in str(caught.value)
    assert len(str(caught.value)) < 300  # the 60 KB command is not printed whole


def test_nesting_past_the_limit_is_one_line_naming_it() -> None:
    with pytest.raises(InvokeError) as caught:
        parse_prompt("(" * 101 + "a" + ")" * 101)
    assert str(caught.value) == "prompt: nests parentheses more than 100 deep; the limit is 100"
    parse_prompt("(" * 100 + "a" + ")1" * 100)  # at the limit: read
