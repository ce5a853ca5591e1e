"""What the shell needs from the rest of the program: the `Runner` protocol.

The shell only makes text and calls these methods; `invoke.session.Session` implements them.
Keeping the shell behind this protocol lets its tests drive it with a fake that records requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from invoke.request import Request

DEFAULT_PROMPT = "invoke> "


class Runner(Protocol):
    outdir: Path  # where history lives (<outdir>/.invoke_history)

    def generate(self, request: Request) -> list[Path]:
        """Run one request: progress bar, files, prints the `Outputs:` block. Raises InvokeError on
        bad input; KeyboardInterrupt propagates after finished images are kept."""
        ...

    def canonical(self, request: Request) -> str:
        """The resolved canonical command(s) for --dry-run (no model loaded); raises InvokeError."""
        ...

    def fetch(self, path: str) -> str:
        """The command stored in a PNG (Dream, sd-metadata or A1111 parameters); raises
        InvokeError."""
        ...


class LabelledRunner(Runner, Protocol):
    """A runner that names itself in the prompt, e.g. the active model: `(sd-1.5) invoke> `."""

    def prompt_label(self) -> str:
        """The whole prompt text shown before the cursor."""
        ...


class SeedfulRunner(Runner, Protocol):
    """A runner that remembers its seeds: `-S <Tab>` then offers them, newest first."""

    def recent_seeds(self) -> list[int]:
        """Every image's seed in this session, oldest first."""
        ...


def prompt_text(runner: Runner) -> str:
    """The prompt for the next line; asked every time, because `!switch` may change the model."""
    label = getattr(runner, "prompt_label", None)
    if label is None:
        return DEFAULT_PROMPT
    return label() or DEFAULT_PROMPT
