"""One line's handling: the `!` command registry, the dispatcher, and how errors reach the user.

Commands are registered with `@command(...)` together with their usage and help text, so `!help`,
the completer and the dispatcher read one table. A new command (`!models`, `!switch NAME`, ...) is a
decorated function in a module that `invoke/shell/__init__.py` imports:

    @command("switch", "!switch NAME", "Make NAME the active model.", complete=model_names)
    def _switch(ctx: ShellContext, args: str) -> None:
        ...

A handler raises `InvokeError` for anything the user can fix; the front end prints it as one line.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from invoke import interrupts
from invoke.errors import InvokeError
from invoke.events import LineRecords
from invoke.line import sweep
from invoke.line.parse import ShellCommand, parse_line
from invoke.line.request import Request
from invoke.shell.history import ShellHistory
from invoke.shell.report import show, show_err, terminal_text
from invoke.shell.runner import Runner

# How a command's argument words complete: "path"; "path+line", a path and then prompt and switches
# as on a command line (`!fix FILE --outcrop ...`); or a function of the runner giving the names.
Completion = str | Callable[[Runner], Iterable[str]] | None
Handler = Callable[["ShellContext", str], None]

QUIT_WORDS = ("q", "quit", "exit")
# A line of one of these asks for help (InvokeAI's `-h`, a shell's `help`, `?`): in the shell it
# is !help, never a prompt to draw; in a batch a line cannot ask for help, and says so.
HELP_WORDS = ("-h", "--help", "help", "?")
HELP_ELSEWHERE = (
    "help is for the interactive shell (type !help at invoke>, or run invoke --help); "
    "here a line is a prompt and its switches, so nothing was drawn"
)
STOPPED = "stopped (Ctrl-C); finished images were kept"


# Where a line's text goes unless a caller says otherwise: printed escaped (report.terminal_text).
print_out = show
print_err = show_err


@dataclass(frozen=True)
class ShellContext:
    """What a line is run with: the runner, where text goes, and what the front end offers."""

    runner: Runner
    out: Callable[[str], None] = print_out
    err: Callable[[str], None] = print_err
    history: ShellHistory | None = None  # None outside the interactive shell
    set_input: Callable[[str], None] | None = None  # next prompt's edit buffer; None in batches
    dry_run: bool = False
    debug: bool = False
    replaying: tuple[Path, ...] = ()  # files `!replay` is inside of, to refuse loops
    # The terminal's (columns, rows), when stdout is one: long text (!help) is wrapped to it and
    # shown a page at a time, `more()` asked between pages (False: stop). None: a pipe, a file,
    # a batch: 80 columns, never paged.
    screen: Callable[[], tuple[int, int]] | None = None
    more: Callable[[], bool] | None = None
    records: LineRecords | None = None  # told of each input line (--json, --quiet); or none

    @property
    def interactive(self) -> bool:
        return self.set_input is not None

    def canonical(self, text: str) -> None:
        """--dry-run: a line's canonical command, printed (or a record of it, --json)."""
        if self.records is not None:
            self.records.command(text)
        else:
            self.out(text)

    def offer(self, text: str) -> None:
        """Give the user a command line: into the edit buffer in the shell, printed elsewhere."""
        if self.set_input is not None:
            self.set_input(text)
        else:
            self.out(text)

    @property
    def columns(self) -> int:
        return max(40, self.screen()[0]) if self.screen is not None else 80

    def page(self, lines: list[str]) -> None:
        """Print `lines`, a screenful at a time where there is a screen to fill."""
        if self.screen is None or self.more is None:
            for line in lines:
                self.out(line)
            return
        size = max(5, self.screen()[1] - 1)  # the last row asks for more
        for start in range(0, len(lines), size):
            for line in lines[start : start + size]:
                self.out(line)
            if start + size < len(lines) and not self.more():
                return


@dataclass(frozen=True)
class Command:
    name: str  # without the "!"; "NN" stands for the numbered history recall
    usage: str
    help: str
    handler: Handler
    complete: Completion = None


COMMANDS: dict[str, Command] = {}


def command(
    name: str, usage: str, help: str, *, complete: Completion = None, after: str | None = None
):
    """Register the decorated `handler(ctx, args)` as `!name`; listed (by !help, the completer)
    in the order registered, or right after `!after` when given."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"!{name} is registered twice")
        entry = Command(name, usage, help, handler, complete)
        if after is None:
            COMMANDS[name] = entry
            return handler
        names = list(COMMANDS)
        if after not in names:
            raise ValueError(f"!{name} is to follow !{after}, which is not registered")
        at = names.index(after) + 1
        entries = [*COMMANDS.items()]
        COMMANDS.clear()
        COMMANDS.update([*entries[:at], (name, entry), *entries[at:]])
        return handler

    return register


def find_command(name: str) -> Command:
    if name.isascii() and name.isdigit():
        return COMMANDS["NN"]
    found = COMMANDS.get(name)
    if found is None or name == "NN":
        names = " ".join(f"!{c}" for c in COMMANDS if c != "NN")
        raise InvokeError(f"!{name}: unknown command; the commands are {names} !NN (see !help)")
    return found


def run_command(ctx: ShellContext, shell_command: ShellCommand) -> None:
    found = find_command(shell_command.name)
    # `!12` arrives as name "12": the recall handler gets the number as its argument.
    args = shell_command.name if found.name == "NN" else shell_command.args
    found.handler(ctx, args)


# -- one line ------------------------------------------------------------------------------------


def run_line(ctx: ShellContext, text: str) -> bool:
    """Run one line (request or `!` command); False when it asks to quit. Errors propagate."""
    if is_help_request(text):
        if not ctx.interactive:
            raise InvokeError(f"{text.strip()}: {HELP_ELSEWHERE}")
        find_command("help").handler(ctx, "")
        return True
    parsed = parse_line(text)
    if parsed is None:
        return True
    if isinstance(parsed, ShellCommand):
        if parsed.name == "quit" or parsed.name in QUIT_WORDS:
            return False
        run_command(ctx, parsed)
        return True
    run_request(ctx, parsed)
    return True


def is_help_request(text: str) -> bool:
    return text.strip().lower() in HELP_WORDS


def run_request(ctx: ShellContext, request: Request) -> None:
    """A line, or each line of its sweep (invoke/line/sweep.py) in turn, each its own line."""
    for line in sweep.expand(request, ctx.runner.recent_seeds()):
        if ctx.dry_run:
            ctx.canonical(ctx.runner.canonical(line))
        else:
            ctx.runner.generate(line)
        if interrupts.stop_requested() and not ctx.runner.finishing():
            break


def user_path(ctx: ShellContext, name: str) -> Path:
    """A path as typed, or a bare file name found in the output folder (as InvokeAI did)."""
    path = Path(name).expanduser()
    if not path.exists() and path.parent == Path("."):
        in_outdir = Path(ctx.runner.outdir) / path
        if in_outdir.exists():
            return in_outdir
    return path


# -- what the user sees --------------------------------------------------------------------------

MAX_SHOWN = 400  # characters of a user's line shown back; a 100 kB line would bury the error


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """One terminal-safe line: control characters (escape sequences!) shown as escapes."""
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return terminal_text(text)


def unexpected(exc: BaseException, debug: bool) -> str:
    """One line for an error that is ours, not the user's; the traceback goes out with --debug."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    detail = " ".join(str(exc).split())
    hint = "" if debug else " (run with --debug for the traceback)"
    return printable(f"unexpected error: {type(exc).__name__}: {detail}{hint}")
