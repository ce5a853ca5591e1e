"""The front ends: the interactive invoke> shell (repl), batches and one-shot lines (batch).

Everything here drives a `Runner` (runner.py) and imports no torch. The `!` commands live in a
registry (dispatch.py) that each command module fills when it is imported: a module adding
commands (`!models`, `!switch NAME`, ...) is imported below, so every front end offers them.

    repl.run_repl(runner, input=None, output=None, *, debug=False, out=print, err=...) -> int
    batch.run_batch(runner, lines, *, dry_run=False, out=print, err=..., debug=False) -> int
    batch.run_one(runner, line, *, dry_run=False, out=print, err=..., debug=False) -> int
"""

from __future__ import annotations

from invoke.shell import (
    batch,  # noqa: F401 - !replay (after the built-in ! commands of commands.py, which it imports)
    commands,  # noqa: F401 - registers the built-in ! commands
    fix,  # noqa: F401 - !fix FILE --outcrop ...
    help,  # noqa: F401 - !help
    model_commands,  # noqa: F401 - !models, !switch, !import_model, ...
)
