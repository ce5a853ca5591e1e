"""The interactive `invoke>` shell: a prompt_toolkit PromptSession around `run_line`.

It must survive anything typed into it: user errors print one line, our own bugs print one line
(the traceback only with debug), Ctrl-C during a generation returns to the prompt with the finished
images kept, Ctrl-C at the prompt clears the line, and `q`, `quit`, `exit` or Ctrl-D leave.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import Output

from invoke import interrupts
from invoke.config.shown_defaults import ActiveModel, size_text
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
    screen: Callable[[], tuple[int, int]] | None = None,
) -> int:
    """Prompt for lines until the user leaves; returns the exit status (0).

    `screen` gives the terminal's (columns, rows) when stdout is one, for !help's wrapping and
    paging; by default the real terminal's, and None when stdout is not a terminal."""
    if screen is None and output is None and sys.stdout.isatty():
        screen = terminal_size
    history = open_history(Path(runner.outdir))
    pending: list[str] = []  # what `!fetch` / `!NN` put into the next prompt's edit buffer
    ctx = ShellContext(
        runner,
        out=out,
        err=err,
        history=history,
        set_input=lambda text: pending.append(text),
        debug=debug,
        screen=screen,
        more=lambda: ask_more(input, output),
    )
    out(banner(runner.active_model()))
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


def banner(model: ActiveModel) -> str:
    """The shell's first line: the model, where it runs, and the two things to know."""
    size = f", {size_text(model.size)}" if model.size is not None else ""
    # escape: the model's name comes from models.yaml or the command line
    return printable(
        f"invoke · model {model.name} ({model.kind}{size}) on {model.device} · "
        "!help for help, q to quit"
    )


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size()
    return (size.columns, size.lines)


MORE = "-- more: Space or Enter for the next page, q to stop --"


def ask_more(input: Input | None, output: Output | None) -> bool:
    """Between two pages: one key, read from the shell's own input (a pipe in tests)."""
    bindings = KeyBindings()

    @bindings.add("<any>")
    @bindings.add("enter")
    @bindings.add("c-c")
    @bindings.add("c-d")
    def _key(event: KeyPressEvent) -> None:
        event.app.exit(result=event.data)

    asking: PromptSession[str] = PromptSession(
        key_bindings=bindings, input=input, output=output, erase_when_done=True
    )
    try:
        answer = asking.prompt(MORE)
    except (EOFError, KeyboardInterrupt):
        return False
    return answer not in ("q", "Q", "\x03", "\x04", "\x1b")


def open_history(outdir: Path) -> ShellHistory:
    """`<outdir>/.invoke_history`, kept across runs."""
    # An outdir that cannot be made costs the history (ShellHistory says so once), not the shell.
    with contextlib.suppress(OSError):
        outdir.mkdir(parents=True, exist_ok=True)
    return ShellHistory(outdir / HISTORY_NAME)
