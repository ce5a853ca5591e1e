"""Round two of the bad-input catalogue (issue 18): what a hostile user tries beyond one bad line.

Each `Hostile` case builds what it needs in a fresh folder (files, links, a models.yaml), runs
the real front end (`invoke.__main__.cli`, in-process) with the tiny model, and says what the
user must see: one line (never a traceback, never `unexpected error`, no numpy/torch warning), the
exit status, and, where it matters, what must hold afterwards (a link's target unchanged, no
`.part` file left). The cases live in one module per area, each a tuple named `CASES`:

    files.py    links; files never overwritten or left half-written     (security, loss)
    reads.py    batch files, stdin, special files, encodings, models.yaml  (hangs, misreads)
    parsers.py  regexes and grammars fed adversarial text              (hangs, misreads)
    values.py   NaN and infinity, terminal escapes, `unexpected error` (garbage, misreads)

`tests/test_hostile.py` runs them; docs/bad-input.md shows them (`tests/test_hardening.py`
generates it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

KINDS = {
    "security": "Security: links and names that would lead out of the outdir",
    "loss": "Loss: nothing made is lost, overwritten or left half-written",
    "hangs": "Hangs: every read bounded in size and time",
    "garbage": "Silent garbage: non-finite values never become a picture",
    "misreads": "Misreads and wrong messages",
}


@dataclass(frozen=True)
class Scenario:
    """What a case runs: the command-line arguments after `--model TINY --outdir DIR/out`, and
    what stdin holds (None: nothing; the batch then comes from a file in `args`)."""

    args: list[str] = field(default_factory=list)
    stdin: str | bytes | None = None


@dataclass(frozen=True)
class Hostile:
    """One hostile input and what the user sees.

    id:      a short name (unique across all modules)
    kind:    one of KINDS
    does:    what the user does, for the docs table (e.g. "`--from_file /dev/zero`")
    prepare: builds the files in the case's folder `d` (the cwd; the outdir is d/"out") and
             returns the Scenario to run
    message: the line the user sees, as a pattern: `…` matches anything, `{d}` is the folder;
             it must fullmatch one line of stderr (outcome "error"/"note", a note without its
             `>> `) or of stdout (outcome "shown")
    status:  the exit status
    outcome: "error" (the input is refused), "note" (used, with a note), "shown" (printed)
    check:   called with `d` after the run for what must hold on disk (raise AssertionError)
    xfail:   why it fails today (strict: a fix shows up as XPASS)
    """

    id: str
    kind: str
    does: str
    prepare: Callable[[Path], Scenario]
    message: str
    status: int = 1
    outcome: str = "error"
    check: Callable[[Path], None] | None = None
    xfail: str = ""
