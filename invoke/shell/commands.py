"""The `!` commands, one line's handling, and how errors reach the user.

Commands are registered with `@command(...)` together with their usage and help text, so `!help`,
the completer and the dispatcher read one table. A new command (`!models`, `!switch NAME`, ...) is a
decorated function in a module that `invoke/shell/__init__.py` imports:

    @command("switch", "!switch NAME", "Make NAME the active model.", complete=model_names)
    def _switch(ctx: ShellContext, args: str) -> None:
        ...

A handler raises `InvokeError` for anything the user can fix; the front end prints it as one line.
"""

from __future__ import annotations

import glob
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from invoke.errors import InvokeError
from invoke.parse import ShellCommand, parse_line, parse_request
from invoke.shell.history import ShellHistory
from invoke.shell.switches import switch_specs

if TYPE_CHECKING:
    from invoke.request import Request
    from invoke.shell.runner import Runner

# How a command's argument words complete: "path"; "path+line", a path and then prompt and switches
# as on a command line (`!fix FILE --outcrop ...`); or a function of the runner giving the names.
Completion = str | Callable[["Runner"], Iterable[str]] | None
Handler = Callable[["ShellContext", str], None]

QUIT_WORDS = ("q", "quit", "exit")
STOPPED = "stopped (Ctrl-C); finished images were kept"


def print_err(text: str) -> None:
    """Print to the stderr of the moment (tests and the shell may swap it)."""
    print(text, file=sys.stderr)


@dataclass(frozen=True)
class ShellContext:
    """What a line is run with: the runner, where text goes, and what the front end offers."""

    runner: Runner
    out: Callable[[str], None] = print
    err: Callable[[str], None] = print_err
    history: ShellHistory | None = None  # None outside the interactive shell
    set_input: Callable[[str], None] | None = None  # next prompt's edit buffer; None in batches
    dry_run: bool = False
    debug: bool = False
    replaying: tuple[Path, ...] = ()  # files `!replay` is inside of, to refuse loops

    @property
    def interactive(self) -> bool:
        return self.set_input is not None

    def offer(self, text: str) -> None:
        """Give the user a command line: into the edit buffer in the shell, printed elsewhere."""
        if self.set_input is not None:
            self.set_input(text)
        else:
            self.out(text)


@dataclass(frozen=True)
class Command:
    name: str  # without the "!"; "NN" stands for the numbered history recall
    usage: str
    help: str
    handler: Handler
    complete: Completion = None


COMMANDS: dict[str, Command] = {}


def command(name: str, usage: str, help: str, *, complete: Completion = None):
    """Register the decorated `handler(ctx, args)` as `!name`."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise ValueError(f"!{name} is registered twice")
        COMMANDS[name] = Command(name, usage, help, handler, complete)
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


def run_request(ctx: ShellContext, request: Request) -> None:
    if ctx.dry_run:
        ctx.out(ctx.runner.canonical(request))
    else:
        ctx.runner.generate(request)


# -- what the user sees --------------------------------------------------------------------------

MAX_SHOWN = 400  # characters of a user's line shown back; a 100 kB line would bury the error


def printable(text: str, limit: int = MAX_SHOWN) -> str:
    """One terminal-safe line: control characters (escape sequences!) shown as escapes."""
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    # Lone surrogates (undecodable bytes) and control characters become visible escapes.
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def unexpected(exc: BaseException, debug: bool) -> str:
    """One line for an error that is ours, not the user's; the traceback goes out with --debug."""
    if debug:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    detail = " ".join(str(exc).split())
    hint = "" if debug else " (run with --debug for the traceback)"
    return printable(f"unexpected error: {type(exc).__name__}: {detail}{hint}")


# -- history commands ----------------------------------------------------------------------------


def _history(ctx: ShellContext, name: str) -> ShellHistory:
    if ctx.history is None:
        raise InvokeError(f"!{name}: there is no history outside the interactive shell")
    return ctx.history


@command("history", "!history", "Show the lines typed so far, numbered for !NN.")
def _show_history(ctx: ShellContext, args: str) -> None:
    lines = _history(ctx, "history").lines()
    if not lines:
        ctx.out("history is empty")
    for number, line in enumerate(lines, 1):
        ctx.out(f"[{number}] {printable(line)}")


@command("NN", "!NN", "Put history line NN back in the edit buffer (see !history).")
def _recall(ctx: ShellContext, args: str) -> None:
    number = int(args)
    if not ctx.interactive:
        raise InvokeError(f"!{number}: recalling history lines works in the interactive shell only")
    lines = _history(ctx, number).lines()
    if not 1 <= number <= len(lines):
        have = f"1..{len(lines)}" if lines else "nothing yet"
        raise InvokeError(f"!{number}: there is no history line {number}; history has {have}")
    ctx.offer(lines[number - 1])


@command("search", "!search TEXT", "Show the history lines containing TEXT (any case).")
def _search(ctx: ShellContext, args: str) -> None:
    lines = _history(ctx, "search").lines()
    wanted = args.strip().casefold()
    if not wanted:
        raise InvokeError("!search: give the text to look for, e.g. !search red circle")
    found = [
        (number, line)
        for number, line in enumerate(lines, 1)
        # the `!search` lines themselves would match every time
        if wanted in line.casefold() and not line.lstrip().startswith("!search")
    ]
    if not found:
        ctx.out(f"no history line contains {args.strip()!r}")
    for number, line in found:
        ctx.out(f"[{number}] {printable(line)}")


@command("clear", "!clear", "Forget the history (also in the history file).")
def _clear(ctx: ShellContext, args: str) -> None:
    _history(ctx, "clear").clear()
    ctx.out("history cleared")


# -- files ---------------------------------------------------------------------------------------


def _words(name: str, args: str, usage: str) -> list[str]:
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise InvokeError(f"!{name}: {args.strip()} has {exc}; usage: {usage}") from exc
    if not words:
        raise InvokeError(f"!{name}: needs a file; usage: {usage}")
    return words


def _existing(ctx: ShellContext, name: str) -> Path:
    """A path as typed, or a bare file name found in the output folder (as InvokeAI did)."""
    path = Path(name).expanduser()
    if not path.exists() and path.parent == Path("."):
        in_outdir = Path(ctx.runner.outdir) / path
        if in_outdir.exists():
            return in_outdir
    return path


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
FETCH_USAGE = "!fetch FILE.png, or !fetch 'PATTERN' OUTFILE to save the commands of many images"


@command(
    "fetch",
    "!fetch FILE | !fetch 'PATTERN' OUTFILE",
    "Bring back the command that made FILE (into the edit buffer); with a quoted pattern and "
    "OUTFILE, write the commands of all matching images to OUTFILE (a batch file).",
    complete="path",
)
def _fetch(ctx: ShellContext, args: str) -> None:
    if args.strip() and _existing(ctx, args.strip()).is_file():
        # One file, even with a space in its name: `!fetch my picture.png`.
        ctx.offer(ctx.runner.fetch(str(_existing(ctx, args.strip()))))
        return
    words = _words("fetch", args, FETCH_USAGE)
    if len(words) > 2:
        raise InvokeError(f"!fetch: too many words ({len(words)}); usage: {FETCH_USAGE}")
    pattern = words[0]
    if len(words) == 1 and not glob.has_magic(pattern):
        ctx.offer(ctx.runner.fetch(str(_existing(ctx, pattern))))
        return
    if len(words) == 2 and Path(words[1]).suffix.lower() in IMAGE_SUFFIXES:
        # `!fetch a.png b.png` would overwrite b.png with text: never lose a user's image.
        raise InvokeError(
            f"!fetch: {words[1]} looks like an image, not a file for commands; "
            f"fetch one image at a time, or write to a text file: !fetch '{pattern}' commands.txt"
        )
    paths = _glob(ctx, pattern)
    if len(words) == 1:
        if len(paths) > 1:
            raise InvokeError(
                f"!fetch: {pattern} matches {len(paths)} files; to save all their commands "
                f"give an output file: !fetch '{pattern}' commands.txt"
            )
        ctx.offer(ctx.runner.fetch(str(paths[0])))
        return
    lines: list[str] = []
    for path in paths:
        try:
            found = ctx.runner.fetch(str(path))
        except InvokeError as exc:
            ctx.err(printable(str(exc)))
            continue
        lines += [f"# {printable(str(path))}", found]
    if not lines:
        raise InvokeError(
            f"!fetch: none of the {len(paths)} files matching {pattern} has a command"
        )
    count = len(lines) // 2
    if ctx.dry_run:
        # A dry run writes nothing: the commands go to the output, itself a valid batch.
        for line in lines:
            ctx.out(line)
        return
    target = Path(words[1]).expanduser()
    try:
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvokeError(f"!fetch: cannot write {target}: {exc.strerror}") from exc
    ctx.out(f"wrote {count} command{'s' if count != 1 else ''} to {target}")


def _glob(ctx: ShellContext, pattern: str) -> list[Path]:
    expanded = os.path.expanduser(pattern)
    paths = sorted(glob.glob(expanded))
    if not paths and not os.path.dirname(expanded):
        paths = sorted(glob.glob(os.path.join(glob.escape(str(ctx.runner.outdir)), expanded)))
    files = [Path(p) for p in paths if Path(p).is_file()]
    if not files:
        raise InvokeError(f"!fetch: no file matches {pattern} (nor in {ctx.runner.outdir})")
    return files


@command(
    "replay",
    "!replay FILE",
    "Run the lines of FILE as a batch: blank and # lines skipped, bad lines reported, q stops.",
    complete="path",
)
def _replay(ctx: ShellContext, args: str) -> None:
    # batch imports this module for the dispatcher; importing it back at call time avoids a cycle.
    from invoke.shell.batch import read_batch_file, run_lines

    words = _words("replay", args, "!replay FILE")
    if len(words) > 1:
        raise InvokeError(
            f"!replay: takes one file, got {len(words)} words; quote a name with spaces"
        )
    path = _existing(ctx, words[0])
    if path.resolve() in ctx.replaying:
        raise InvokeError(f"!replay: {path} is already being replayed; a file cannot replay itself")
    lines = read_batch_file(path, "!replay")
    nested = replace(ctx, set_input=None, replaying=(*ctx.replaying, path.resolve()))
    result = run_lines(nested, lines)
    if not ctx.interactive and result.status != 0:
        # In a batch the !replay line itself fails, so the outer exit status says so too.
        raise InvokeError(f"!replay {path}: {result.summary}")


# -- help and dream ------------------------------------------------------------------------------


@command("help", "!help", "List the ! commands and the switches of a command line.")
def _help(ctx: ShellContext, args: str) -> None:
    for line in help_lines():
        ctx.out(line)


def help_lines() -> list[str]:
    lines = ["Commands:"]
    for cmd in COMMANDS.values():
        lines.append(f"  {cmd.usage:<40} {cmd.help}")
    lines.append(f"  {'q, quit, exit, Ctrl-D':<40} Leave the shell.")
    lines.append("")
    lines.append('Command line: PROMPT [SWITCHES], e.g. "a red circle" -s 20 -S 42')
    for spec in switch_specs():
        names = ", ".join(spec.names) + (f" {spec.metavar}" if spec.metavar else "")
        lines.append(f"  {names:<40} {spec.help}")
    return lines


@command("dream", "!dream LINE", "Run LINE as a command line (the same as typing LINE).")
def _dream(ctx: ShellContext, args: str) -> None:
    # parse_line already turns `!dream X` into X; this covers a parser that hands it over.
    run_request(ctx, parse_request(args))
