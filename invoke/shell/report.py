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
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from invoke.events import NoProgress, Progress, Saved, Tokens


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
            print(f">> {text}", file=self.err)

    def tokens(self, tokens: Tokens) -> None:
        print(f">> Tokens ({tokens.count}): {tokens.shown}", file=self.out)
        if tokens.dropped_count:
            print(f">> Tokens dropped ({tokens.dropped_count}): {tokens.dropped}", file=self.out)

    def progress(self, total: int, label: str) -> Progress:
        if not self.show_progress:
            return NoProgress()
        from tqdm import tqdm  # only once a picture is being made

        bar = tqdm(total=total, desc=label, unit="step", file=self.err, leave=False)
        return _Bar(bar)

    def outputs(self, number: int, saved: list[Saved]) -> None:
        if not saved:
            return
        print("Outputs:", file=self.out)
        for i, picture in enumerate(saved, start=1):
            label = f"{number}" if len(saved) == 1 else f"{number}.{i}"
            print(f"[{label}] {picture.path}: {picture.command}", file=self.out)
        self.out.flush()


class _Bar:
    """A tqdm bar as a `Progress`."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def advance(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def close(self) -> None:
        self._bar.close()
