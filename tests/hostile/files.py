"""Hostile cases about the files invoke writes: see tests/hostile/__init__.py for what a case is."""

from __future__ import annotations

from pathlib import Path

from tests.hostile import Hostile, Scenario

SECRET = "the user's own file\n"


def _log_linked_to_a_secret(d: Path) -> Scenario:
    (d / "out").mkdir()
    (d / "secret.txt").write_text(SECRET)
    (d / "out" / "invoke_log.txt").symlink_to(d / "secret.txt")
    return Scenario(stdin="a cat -s 1 -S 1\n")


def _secret_unchanged(d: Path) -> None:
    assert (d / "secret.txt").read_text() == SECRET


CASES: tuple[Hostile, ...] = (
    Hostile(
        "symlinked invoke_log.txt",
        "security",
        "`out/invoke_log.txt` is a link to another file",
        _log_linked_to_a_secret,
        "…invoke_log.txt…link…",
        check=_secret_unchanged,
        xfail="the log is opened through the link and appended to",
    ),
)
