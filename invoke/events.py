"""What the program tells the person, as values: the session and the backend report events, and
only a front end (shell/report.py) turns them into text.

Events are plain frozen data, so a Job run in another process can send them back as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


@dataclass(frozen=True)
class Tokens:
    """-t/--log_tokenization: the prompt's tokens as CLIP reads them, and any it had to drop."""

    count: int
    shown: str  # the kept tokens, with their weights when the prompt weights any
    dropped_count: int = 0
    dropped: str = ""


@dataclass(frozen=True)
class Step:
    """A step of a job done (step 0: the starting latents). On the steps the job keeps
    (--save_intermediates N: every Nth and the last) it carries each picture's latents and its
    preview or decoded picture, as plain arrays and pictures."""

    step: int
    total: int  # steps the job takes; with --hires_fix both passes'
    timestep: float
    latents: np.ndarray | None = None  # (pictures, channels, h, w), float32
    pictures: tuple[Image.Image, ...] = ()


@dataclass(frozen=True)
class Saved:
    """One picture written, with the command that remakes it."""

    path: Path
    command: str
    seed: int | None = None
    size: tuple[int, int] | None = None  # (width, height) of the picture as saved
    model: str = ""  # the model that made it (a !fix upscale: the upscaler)


class Progress(Protocol):
    """One running bar: `advance` after each step, `close` when the work ends (or fails)."""

    def advance(self, steps: int = 1) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Where the session's events go. The terminal reporter prints them as the shell always has
    (`>> ` notes and bars on stderr, `Outputs:` and `-t` tokens on stdout); a test reporter
    records them."""

    def note(self, text: str) -> None:
        """Something the person should know about the line being run (a `>> ` line)."""
        ...

    def tokens(self, tokens: Tokens) -> None:
        """-t: how the prompt was tokenized."""
        ...

    def progress(self, total: int, label: str) -> Progress:
        """A bar of `total` steps, labelled ("image", "3 images", "upscale 2x")."""
        ...

    def outputs(self, number: int, saved: list[Saved]) -> None:
        """The pictures one command line made (the `Outputs:` block); `number` is the line's
        count in this session, the N of `[N.M]`. Not called when nothing was saved."""
        ...


class LineRecords(Protocol):
    """What a batch or a one-shot line tells a front end that reports by input line (--json,
    --quiet), besides the text it prints as always: which line runs, how one failed, a dry
    run's canonical command (printed instead of the plain text), and the summary (printed
    instead of it)."""

    def line(self, number: int) -> None:
        """Input line `number` (1 for a one-shot line) starts: its pictures are its."""
        ...

    def failed(self, number: int, message: str) -> None:
        """Line `number` failed with the one-line `message`."""
        ...

    def command(self, text: str) -> None:
        """--dry-run: the current line's canonical command."""
        ...

    def summary(self, text: str, ok: bool) -> None:
        """The batch's last line (`3 lines run, 1 failed (line 2)`); `ok`: nothing failed."""
        ...


class WithoutNotes:
    """A reporter passing on everything but notes: --dry-run prints the lines and nothing else."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def note(self, text: str) -> None:
        pass

    def tokens(self, tokens: Tokens) -> None:
        self.inner.tokens(tokens)

    def progress(self, total: int, label: str) -> Progress:
        return self.inner.progress(total, label)

    def outputs(self, number: int, saved: list[Saved]) -> None:
        self.inner.outputs(number, saved)


class WithoutBars:
    """A reporter passing on everything but the per-job bars (--workers shows one bar for the
    whole batch instead: a Job drawn elsewhere comes back finished)."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner

    def note(self, text: str) -> None:
        self.inner.note(text)

    def tokens(self, tokens: Tokens) -> None:
        self.inner.tokens(tokens)

    def progress(self, total: int, label: str) -> Progress:
        return NoProgress()

    def outputs(self, number: int, saved: list[Saved]) -> None:
        self.inner.outputs(number, saved)


class NoProgress:
    """A bar that shows nothing (quiet runs, --dry-run, tests)."""

    def advance(self, steps: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
