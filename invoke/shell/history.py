"""The shell's history: `<outdir>/.invoke_history`, kept across runs, numbered for `!NN`."""

from __future__ import annotations

import datetime
from pathlib import Path

from prompt_toolkit.history import FileHistory

from invoke import atomic
from invoke.shell.report import show_err

HISTORY_NAME = ".invoke_history"


class ShellHistory(FileHistory):
    """prompt_toolkit's FileHistory, loaded at once and able to forget.

    prompt_toolkit loads history lazily while drawing the prompt; `!history` and `!NN` need the
    whole numbered list at any moment, so it is read up front (it is a small text file).
    A history file that cannot be written (read-only outdir, full disk) costs the history, never
    the shell: one warning, then the history lives in memory only. So does one that is a link or
    no plain file (a link planted in a shared outdir): it is neither read nor written through.
    Each line is appended whole or not at all (atomic.append).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        self._writable = True
        try:
            atomic.check_file(self.path)
            self._loaded_strings = list(self.load_history_strings())
        except atomic.NotOurs as exc:
            self._writable = False
            self._warn(
                f"the history {self.path}: {atomic.why(exc)} "
                "(history is kept for this session only)"
            )
            self._loaded_strings = []
        except OSError as exc:
            self._warn(f"cannot read the history {self.path}: {exc.strerror}; starting empty")
            self._loaded_strings = []
        except UnicodeDecodeError:
            # FileHistory decodes with errors="replace"; kept for older prompt_toolkit versions.
            self._warn(f"cannot read the history {self.path}: not UTF-8; starting empty")
            self._loaded_strings = []
        self._loaded = True

    def lines(self) -> list[str]:
        """Every remembered line, oldest first; `!NN` is `lines()[NN - 1]`."""
        return self.get_strings()

    def clear(self) -> None:
        """Forget every line, in memory and in the file (`!clear`)."""
        self._loaded_strings = []
        if not self._writable:
            return
        try:
            atomic.replace(self.path, b"")
        except OSError as exc:
            self._give_up_file(exc)

    def store_string(self, string: str) -> None:
        """One line, in prompt_toolkit's format (a `# time` line, then `+` and each line)."""
        if not self._writable:
            return
        record = f"\n# {datetime.datetime.now()}\n" + "".join(
            f"+{line}\n" for line in string.split("\n")
        )
        try:
            atomic.append(self.path, record.encode("utf-8", errors="replace"))
        except OSError as exc:
            self._give_up_file(exc)

    def _give_up_file(self, exc: OSError) -> None:
        self._writable = False
        self._warn(
            f"cannot write the history {self.path}: {atomic.why(exc)}; "
            "history is kept for this session only"
        )

    @staticmethod
    def _warn(text: str) -> None:
        show_err(f">> {text}")
