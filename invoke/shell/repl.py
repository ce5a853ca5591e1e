"""The interactive `invoke>` shell: a prompt_toolkit PromptSession around `run_line`.

It must survive anything typed into it: user errors print one line, our own bugs print one line
(the traceback only with debug), Ctrl-C during a generation returns to the prompt with the finished
images kept, Ctrl-C at the prompt clears the line, and `q`, `quit`, `exit` or Ctrl-D leave.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from invoke import interrupts
from invoke.errors import InvokeError
from invoke.shell.completer import ShellCompleter
from invoke.shell.dispatch import (
    STOPPED,
    ShellContext,
    print_err,
    print_out,
    printable,
    run_line,
    unexpected,
)
from invoke.shell.history import HISTORY_NAME, ShellHistory
from invoke.shell.keys import shell_key_bindings
from invoke.shell.runner import Runner, prompt_text
from invoke.shell.validator import LineValidator

MAX_PROMPT_FAILURES = 3  # a terminal that keeps failing would otherwise spin forever


def run_repl(
    runner: Runner,
    input: Input | None = None,  # prompt_toolkit's own name for it
    output: Output | None = None,
    *,
    debug: bool = False,
    out=print_out,
    err=print_err,
) -> int:
    """Prompt for lines until the user leaves; returns the exit status (0)."""
    history = open_history(Path(runner.outdir))
    pending: list[str] = []  # what `!fetch` / `!NN` put into the next prompt's edit buffer
    ctx = ShellContext(
        runner,
        out=out,
        err=err,
        history=history,
        set_input=lambda text: pending.append(text),
        debug=debug,
    )
    session: PromptSession[str] = PromptSession(
        history=history,
        completer=ShellCompleter(runner),
        complete_while_typing=False,
        validator=LineValidator(),
        validate_while_typing=True,
        key_bindings=shell_key_bindings(),
        input=input,
        output=output,
    )
    failures = 0
    while True:
        try:
            text = session.prompt(prompt_text(runner), default=pending.pop() if pending else "")
            failures = 0
        except interrupts.Terminated:  # SIGTERM (a Ctrl-C at the prompt is only a key)
            return interrupts.EXIT_STATUS["SIGTERM"]
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh, empty line
            continue
        except EOFError:  # Ctrl-D
            return 0
        except Exception as exc:  # the prompt itself failed: say so, try again a few times
            err(unexpected(exc, debug))
            failures += 1
            if failures >= MAX_PROMPT_FAILURES:
                return 1
            continue
        pending.clear()
        try:
            if not run_line(ctx, text):
                return 0
        except interrupts.Terminated:
            err(STOPPED.replace("Ctrl-C", "SIGTERM"))
            return interrupts.EXIT_STATUS["SIGTERM"]
        except KeyboardInterrupt:
            err(STOPPED)
        except InvokeError as exc:
            err(printable(str(exc)))
        except Exception as exc:  # the shell outlives our own bugs: one line, then the prompt
            err(unexpected(exc, debug))


def open_history(outdir: Path) -> ShellHistory:
    """`<outdir>/.invoke_history`, kept across runs."""
    # An outdir that cannot be made costs the history (ShellHistory says so once), not the shell.
    with contextlib.suppress(OSError):
        outdir.mkdir(parents=True, exist_ok=True)
    return ShellHistory(outdir / HISTORY_NAME)
