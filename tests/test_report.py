"""shell/report.py: the terminal reporter prints each event exactly as the shell always has."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tqdm import tqdm

from invoke.events import NoProgress, Saved, Tokens
from invoke.shell.report import TerminalReporter, terminal_text
from tests.helpers import RecordingReporter


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a shell's stderr does."""

    def isatty(self) -> bool:
        return True


def reporter(**kw: bool) -> tuple[TerminalReporter, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), Terminal()
    return TerminalReporter(out, err, **kw), out, err


def test_a_note_is_one_line_on_stderr():
    report, out, err = reporter()
    report.note("img2img: 15 of 20 steps at strength 0.75")
    assert err.getvalue() == ">> img2img: 15 of 20 steps at strength 0.75\n"
    assert out.getvalue() == ""


def test_notes_off_print_nothing():
    report, out, err = reporter(notes=False)
    report.note("grid: outputs/000001.42.grid.png")
    assert out.getvalue() == err.getvalue() == ""


def test_one_picture_is_numbered_by_its_line():
    report, out, err = reporter()
    report.outputs(3, [Saved(Path("outputs/000003.42.png"), '"a cat" -s 20 -S 42')])
    assert out.getvalue() == 'Outputs:\n[3] outputs/000003.42.png: "a cat" -s 20 -S 42\n'
    assert err.getvalue() == ""


def test_several_pictures_are_numbered_line_dot_picture():
    report, out, _ = reporter()
    saved = [
        Saved(Path("o/000004.7.png"), '"a dog" -S 7'),
        Saved(Path("o/000004.8.png"), '"a dog" -S 8'),
    ]
    report.outputs(4, saved)
    assert out.getvalue() == (
        'Outputs:\n[4.1] o/000004.7.png: "a dog" -S 7\n[4.2] o/000004.8.png: "a dog" -S 8\n'
    )


def test_nothing_saved_prints_no_block():
    report, out, err = reporter()
    report.outputs(1, [])
    assert out.getvalue() == err.getvalue() == ""


def test_the_outputs_block_is_flushed():
    class Flushed(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1

    out = Flushed()
    TerminalReporter(out, io.StringIO()).outputs(1, [Saved(Path("a.png"), '"a"')])
    assert out.flushes == 1


def test_tokens_go_to_stdout_and_dropped_ones_too():
    report, out, err = reporter(notes=False)  # -t is output asked for, not a note
    report.tokens(Tokens(4, "a red circle </w>"))
    report.tokens(Tokens(75, "a (red:1.3) circle", dropped_count=2, dropped="extra words"))
    assert out.getvalue() == (
        ">> Tokens (4): a red circle </w>\n"
        ">> Tokens (75): a (red:1.3) circle\n"
        ">> Tokens dropped (2): extra words\n"
    )
    assert err.getvalue() == ""


def test_a_bar_is_tqdms_on_stderr_and_leaves_no_line():
    report, out, err = reporter()
    bar = report.progress(3, "2 images")
    for _ in range(3):
        bar.advance()
    bar.close()
    expected = io.StringIO()
    same = tqdm(total=3, desc="2 images", unit="step", file=expected, leave=False)
    same.update(3)
    same.close()
    assert err.getvalue() == expected.getvalue()
    assert err.getvalue().startswith("\r2 images:   0%|          | 0/3 [00:00<?, ?step/s]")
    assert "\n" not in err.getvalue() and out.getvalue() == ""


def test_progress_off_shows_no_bar():
    report, out, err = reporter(progress=False)
    bar = report.progress(20, "image")
    assert isinstance(bar, NoProgress)
    bar.advance()
    bar.close()
    assert out.getvalue() == err.getvalue() == ""


def test_streams_left_out_are_those_of_the_moment(capsys):
    report = TerminalReporter()
    report.note("a note")
    report.outputs(2, [Saved(Path("b.png"), '"b"')])
    report.tokens(Tokens(1, "b"))
    captured = capsys.readouterr()
    assert captured.err == ">> a note\n"
    assert captured.out == 'Outputs:\n[2] b.png: "b"\n>> Tokens (1): b\n'


def test_the_recording_reporter_keeps_every_event_in_order():
    record = RecordingReporter()
    record.note("first")
    bar = record.progress(2, "image")
    bar.advance()
    bar.advance()
    bar.close()
    record.tokens(Tokens(1, "a"))
    record.outputs(1, [Saved(Path("a.png"), '"a"')])
    assert record.notes == ["first"]
    assert [(b.total, b.label, b.steps, b.closed) for b in record.bars] == [(2, "image", 2, True)]
    assert [type(e).__name__ for e in record.events] == [
        "str", "RecordedBar", "Tokens", "RecordedOutputs"
    ]  # fmt: skip


# -- what reaches the terminal -------------------------------------------------------------------

ACTING = {
    "\x1b[2J": r"\x1b[2J",  # ESC: clears the screen
    "\x9b31m": r"\x9b31m",  # C1 CSI: the same, in one character
    "\x07": r"\x07",
    "\x7f": r"\x7f",
    "x\u202egnp.exe": r"x\u202egnp.exe",  # right-to-left override: shows as xexe.png
    "\u2066a\u2067b\u2068c\u2069": r"\u2066a\u2067b\u2068c\u2069",  # isolates
    "\u200ea\u200fb\u061c": r"\u200ea\u200fb\u061c",  # direction marks
    "a\u2028b": r"a\u2028b",  # a line separator
    "a\tb\nc": r"a\tb\nc",
    "bad \udcff byte": r"bad \udcff byte",  # a byte that was not UTF-8
}
SHOWN = (
    "a red circle",
    "über café naïve façade",
    "東京の夜 🐱",
    "family 👨\u200d👩\u200d👧",  # joined by ZWJ: one emoji
    "flag \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland
    "no\u00a0break",
)


@pytest.mark.parametrize("raw", ACTING)
def test_characters_that_act_on_the_terminal_are_shown_as_escapes(raw: str) -> None:
    assert terminal_text(raw) == ACTING[raw]


@pytest.mark.parametrize("text", SHOWN)
def test_text_that_only_shows_is_printed_as_it_is(text: str) -> None:
    assert terminal_text(text) == text


def test_every_event_from_outside_is_escaped() -> None:
    """The prompt, the file name and the model name come from outside: none reaches the
    terminal raw, whatever stream it goes to."""
    report, out, err = reporter()
    report.note("model tiny\x1b]0;owned\x07 loaded")
    report.outputs(1, [Saved(Path("o/x\u202egnp.png"), '"a \u202ecat" -S 1')])
    report.tokens(Tokens(2, "a \u2066cat", 1, "\x1b[2J"))
    printed = out.getvalue() + err.getvalue()
    assert not any(ch in printed for ch in "\x1b\x07\u202e\u2066")
    assert err.getvalue() == r">> model tiny\x1b]0;owned\x07 loaded" + "\n"
    assert r'[1] o/x\u202egnp.png: "a \u202ecat" -S 1' in out.getvalue()
    assert r">> Tokens dropped (1): \x1b[2J" in out.getvalue()
