"""The terminal's reporter: session events as the shell has always printed them."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from invoke.events import NoProgress, Progress, Saved, Tokens


class _Bar:
    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def advance(self, steps: int = 1) -> None:
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()


class TerminalReporter:
    def __init__(
        self, out: TextIO | None = None, err: TextIO | None = None, progress: bool = True
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.show_progress = progress

    def note(self, text: str) -> None:
        print(f">> {text}", file=self.err)

    def tokens(self, tokens: Tokens) -> None:
        print(f">> Tokens ({tokens.count}): {tokens.shown}", file=self.out)
        if tokens.dropped_count:
            print(f">> Tokens dropped ({tokens.dropped_count}): {tokens.dropped}", file=self.out)

    def progress(self, total: int, label: str) -> Progress:
        if not self.show_progress:
            return NoProgress()
        from tqdm import tqdm

        return _Bar(tqdm(total=total, desc=label, unit="step", file=self.err, leave=False))

    def outputs(self, number: int, saved: list[Saved]) -> None:
        print("Outputs:", file=self.out)
        for i, item in enumerate(saved, start=1):
            label = f"{number}" if len(saved) == 1 else f"{number}.{i}"
            print(f"[{label}] {item.path}: {item.command}", file=self.out)
        self.out.flush()
