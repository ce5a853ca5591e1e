"""The front ends: the interactive invoke> shell (repl), batches and one-shot lines (batch).

Everything here drives a `Runner` (runner.py) and imports no torch. The `!` commands live in a
registry (commands.py); a module that adds commands registers them when imported, so new
command modules are imported by the front ends that offer them.

    repl.run_repl(runner, input=None, output=None, *, debug=False, out=print, err=...) -> int
    batch.run_batch(runner, lines, *, dry_run=False, out=print, err=..., debug=False) -> int
    batch.run_one(runner, line, *, dry_run=False, out=print, err=..., debug=False) -> int
"""
