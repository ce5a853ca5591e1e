"""The terminal's reporter: the one place a run's events become text (`invoke.events.Reporter`).

What it prints is what the shell has always printed:

    >> a note                                    stderr; none when notes are off (--dry-run)
    image 2/3:  40%|####    | 8/20 [...]        stderr, a tqdm bar that clears itself when done;
                                                 only when stderr is a terminal
    Outputs:                                     stdout, after each line that saved pictures
    [3] outputs/000003.42.png: "a cat" -S 42      one picture: the line's number
    [4.1] outputs/000004.7.png: "a dog" -S 7      several: the line's number, then the picture's
    >> Tokens (5): a red circle                  stdout (-t is output the user asked for)
    >> Tokens dropped (2): extra words           stdout, when the prompt was too long

A stream left as None is sys.stdout or sys.stderr at the moment of printing, as `print` does.

Everything printed passes `terminal_text`: text from outside (prompts, file and model names,
metadata, a library's message) never drives the terminal. Files keep what they were given.
--quiet (`quiet=True`): only errors; the batch's failures and its summary when something failed.
--json: `JsonReporter`, one JSON object a line on stdout per picture and per failed line (the
format is in docs/shell.md), everything else as text on stderr.
"""

from __future__ import annotations

import json
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
    `progress=False` shows no bars (nor does an `err` that is not a terminal); `notes=False`
    prints no `>>` notes (a dry run's); `quiet=True` prints only errors (--quiet)."""

    def __init__(
        self,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        progress: bool = True,
        notes: bool = True,
        quiet: bool = False,
    ) -> None:
        self._out = out
        self._err = err
        self.quiet = quiet
        self.show_progress = progress and not quiet
        self.show_notes = notes and not quiet
        self._bars = 0  # bars running: text printed meanwhile goes through tqdm.write

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
        if self.quiet:
            return
        self._print(f">> Tokens ({tokens.count}): {terminal_text(tokens.shown)}", self.out)
        if tokens.dropped_count:
            dropped = terminal_text(tokens.dropped)
            self._print(f">> Tokens dropped ({tokens.dropped_count}): {dropped}", self.out)

    def _print(self, text: str, stream: TextIO) -> None:
        """A line printed while a bar may be running: above the bar, not through it."""
        if not self._bars:
            print(text, file=stream)
            return
        from tqdm import tqdm

        tqdm.write(text, file=stream)

    def progress(self, total: int, label: str) -> Progress:
        if not self.show_progress or not _is_terminal(self.err):
            return NoProgress()
        from tqdm import tqdm  # only once a picture is being made

        bar = tqdm(total=total, desc=terminal_text(label), unit="step", file=self.err, leave=False)
        self._bars += 1
        return _Bar(bar, self._bar_closed)

    def _bar_closed(self) -> None:
        self._bars -= 1

    def workers_progress(self, workers: int) -> WorkersProgress | NoWorkersProgress:
        """--workers: one bar of the batch's images, and a line a worker under it."""
        if not self.show_progress or not _is_terminal(self.err):
            return NoWorkersProgress()
        return WorkersProgress(workers, self.err, self._count_bars)

    def _count_bars(self, change: int) -> None:
        self._bars += change

    def outputs(self, number: int, saved: list[Saved]) -> None:
        if not saved or self.quiet:
            return
        print("Outputs:", file=self.out)
        for i, picture in enumerate(saved, start=1):
            label = f"{number}" if len(saved) == 1 else f"{number}.{i}"
            line = f"[{label}] {picture.path}: {picture.command}"
            print(terminal_text(line), file=self.out)
        self.out.flush()

    # -- events.LineRecords: what a batch says of its lines ------------------------------------

    def line(self, number: int) -> None:
        pass

    def failed(self, number: int, message: str) -> None:
        pass  # the batch prints it on stderr itself

    def command(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.out)

    def summary(self, text: str, ok: bool) -> None:
        if not (self.quiet and ok):
            print(text, file=self.err)


class JsonReporter:
    """--json: a JSON object a line on `out` for each picture and each failed line (and each
    canonical command of a dry run); everything else is the terminal reporter's text, all of it
    on `err` (with `quiet`, only errors)."""

    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, *, quiet: bool = False
    ) -> None:
        self._out = out
        err = err if err is not None else sys.stderr  # -t tokens share it with the bar
        self.text = TerminalReporter(err, err, quiet=quiet)
        self.number = 1  # the input line being run: a one-shot line is line 1

    @property
    def out(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def note(self, text: str) -> None:
        self.text.note(text)

    def tokens(self, tokens: Tokens) -> None:
        self.text.tokens(tokens)

    def progress(self, total: int, label: str) -> Progress:
        return self.text.progress(total, label)

    def workers_progress(self, workers: int) -> WorkersProgress | NoWorkersProgress:
        return self.text.workers_progress(workers)

    def outputs(self, number: int, saved: list[Saved]) -> None:
        for picture in saved:
            width, height = picture.size or (None, None)
            self._record(
                "picture",
                path=str(picture.path),
                command=picture.command,
                seed=picture.seed,
                width=width,
                height=height,
                model=picture.model,
            )

    def line(self, number: int) -> None:
        self.number = number

    def failed(self, number: int, message: str) -> None:
        self.number = number
        self._record("error", message=message)

    def command(self, text: str) -> None:
        self._record("command", command=text)

    def summary(self, text: str, ok: bool) -> None:
        self.text.summary(text, ok)

    def _record(self, kind: str, **fields: object) -> None:
        # escape: json.dumps writes every control and non-ASCII character as a \u escape
        print(json.dumps({"type": kind, "line": self.number, **fields}), file=self.out)
        self.out.flush()  # a reader of a pipe gets each record as it happens


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class _Bar:
    """A tqdm bar as a `Progress`; `closed` is called once, when it closes."""

    def __init__(self, bar: Any, closed: Any) -> None:
        self._bar = bar
        self._closed = closed

    def advance(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def close(self) -> None:
        if self._closed is not None:
            self._closed, closed = None, self._closed
            closed()
        self._bar.close()


class WorkersProgress:
    """--workers on a terminal: images done of images planned so far (tqdm gives the rate and
    the time left), and under it one line a worker: which line it draws, or idle. Shown only
    while the driver waits for a worker: cleared while it writes pictures and prints their
    `Outputs:` blocks, so its text never runs through the bar."""

    def __init__(self, workers: int, err: TextIO, counted: Any) -> None:
        from tqdm import tqdm

        main = tqdm(total=0, desc="images", unit="image", file=err, leave=False, position=0)
        self._bars = [main] + [
            tqdm(total=0, bar_format="{desc}", file=err, position=n, leave=False)
            for n in range(1, workers + 1)
        ]
        for bar in self._bars:
            bar.clear()
        self._counted = counted  # tells the reporter a bar is shown (+1) or not (-1)
        self._shown = False

    def images(self, done: int, planned: int) -> None:
        bar = self._bars[0]
        bar.total, bar.n = planned, done
        if self._shown:
            bar.refresh()

    def worker(self, number: int, text: str) -> None:
        if 0 < number < len(self._bars):
            self._bars[number].set_description_str(terminal_text(text), refresh=self._shown)

    def waiting(self, shown: bool) -> None:
        if shown == self._shown:
            return
        self._shown = shown
        for bar in self._bars:
            if shown:
                bar.refresh()
            else:
                bar.clear()
        self._counted(1 if shown else -1)

    def close(self) -> None:
        self.waiting(False)
        for bar in self._bars:
            bar.close()


class NoWorkersProgress:
    """--workers without a terminal (a pipe, --json, --quiet): nothing drawn."""

    def images(self, done: int, planned: int) -> None:
        pass

    def worker(self, number: int, text: str) -> None:
        pass

    def waiting(self, shown: bool) -> None:
        pass

    def close(self) -> None:
        pass
