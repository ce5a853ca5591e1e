"""The terminal's reporter: the one place a run's events become text (`invoke.events.Reporter`).

What it prints is what the shell has always printed:

    >> a note                                    stderr; none when notes are off (--dry-run)
    image:  40%|####      | 8/20 [...]           stderr, a tqdm bar that clears itself when done
    Outputs:                                     stdout, after each line that saved pictures
    [3] outputs/000003.42.png: "a cat" -S 42      one picture: the line's number
    [4.1] outputs/000004.7.png: "a dog" -S 7      several: the line's number, then the picture's
    >> Tokens (5): a red circle                  stdout (-t is output the user asked for)
    >> Tokens dropped (2): extra words           stdout, when the prompt was too long

A stream left as None is sys.stdout or sys.stderr at the moment of printing, as `print` does.

Everything printed passes `terminal_text`: text from outside (prompts, file and model names,
metadata, a library's message) never drives the terminal. Files keep what they were given.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Any, TextIO

from invoke.events import NoProgress, Progress, Saved, Tokens

# Format characters that are shown as what they are part of: the zero-width (non-)joiners of
# emoji sequences and of Indic and Arabic words.
_JOINERS = ("\u200c", "\u200d")
_TAGS = range(0xE0020, 0xE0080)  # the tag letters of flag emoji (England, Scotland, Wales)


def terminal_text(text: str) -> str:
    r"""`text` as a terminal shows it and nothing more: every character that is not shown but
    acts is written as its Python escape instead. Those are control characters (C0, DEL and C1:
    ESC starts escape sequences that can move the cursor, clear the screen, retitle the window),
    the other invisible format characters (the bidirectional overrides, embeddings, isolates and
    marks U+202A..202E, U+2066..2069, U+200E/F, U+061C, which reorder what follows them so that
    `x\u202egnp.exe` looks like `xexe.png`), line and paragraph separators, and lone surrogates
    (bytes that were not UTF-8): `\x1b`, `\u202e`, `\udcff`."""
    if text.isprintable():
        return text
    return "".join(ch if _shown(ch) else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _shown(ch: str) -> bool:
    category = unicodedata.category(ch)
    if category in ("Cc", "Cs", "Zl", "Zp"):
        return False
    return category != "Cf" or ch in _JOINERS or ord(ch) in _TAGS


def show(text: str) -> None:
    """Print a line on the stdout of the moment."""
    print(terminal_text(text))


def show_err(text: str) -> None:
    """Print a line on the stderr of the moment (tests and the shell may swap it)."""
    print(terminal_text(text), file=sys.stderr)


class TerminalReporter:
    """Prints events: notes and bars to `err`, the Outputs: block and -t tokens to `out`.
    `progress=False` shows no bars; `notes=False` prints no `>>` notes (a dry run's)."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        progress: bool = True,
        notes: bool = True,
    ) -> None:
        self._out = out
        self._err = err
        self.show_progress = progress
        self.show_notes = notes

    @property
    def out(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    @property
    def err(self) -> TextIO:
        return self._err if self._err is not None else sys.stderr

    def note(self, text: str) -> None:
        if self.show_notes:
            print(f">> {terminal_text(text)}", file=self.err)

    def tokens(self, tokens: Tokens) -> None:
        print(f">> Tokens ({tokens.count}): {terminal_text(tokens.shown)}", file=self.out)
        if tokens.dropped_count:
            dropped = terminal_text(tokens.dropped)
            print(f">> Tokens dropped ({tokens.dropped_count}): {dropped}", file=self.out)

    def progress(self, total: int, label: str) -> Progress:
        if not self.show_progress:
            return NoProgress()
        from tqdm import tqdm  # only once a picture is being made

        bar = tqdm(total=total, desc=terminal_text(label), unit="step", file=self.err, leave=False)
        return _Bar(bar)

    def outputs(self, number: int, saved: list[Saved]) -> None:
        if not saved:
            return
        print("Outputs:", file=self.out)
        for i, picture in enumerate(saved, start=1):
            label = f"{number}" if len(saved) == 1 else f"{number}.{i}"
            line = f"[{label}] {picture.path}: {picture.command}"
            print(terminal_text(line), file=self.out)
        self.out.flush()


class _Bar:
    """A tqdm bar as a `Progress`."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def advance(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def close(self) -> None:
        self._bar.close()
