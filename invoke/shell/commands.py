"""The built-in `!` commands: history, !fetch and !dream (the registry and the dispatcher are in
dispatch.py; !replay is with the batch runner in batch.py, !help in help.py)."""

from __future__ import annotations

import errno
import glob
import os
import shlex
from pathlib import Path

from invoke import atomic
from invoke.errors import InvokeError
from invoke.line.parse import parse_request
from invoke.shell.dispatch import ShellContext, command, printable, run_request, user_path
from invoke.shell.history import ShellHistory

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


def file_args(name: str, args: str, usage: str) -> list[str]:
    """The words of a file command's argument (quotes as in a shell); at least one."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise InvokeError(f"!{name}: {args.strip()} has {exc}; usage: {usage}") from exc
    if not words:
        raise InvokeError(f"!{name}: needs a file; usage: {usage}")
    return words


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
    if args.strip() and user_path(ctx, args.strip()).is_file():
        # One file, even with a space in its name: `!fetch my picture.png`.
        ctx.offer(ctx.runner.fetch(str(user_path(ctx, args.strip()))))
        return
    words = file_args("fetch", args, FETCH_USAGE)
    if len(words) > 2:
        raise InvokeError(f"!fetch: too many words ({len(words)}); usage: {FETCH_USAGE}")
    pattern = words[0]
    if len(words) == 1 and not glob.has_magic(pattern):
        ctx.offer(ctx.runner.fetch(str(user_path(ctx, pattern))))
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
    _write_new(target, ("\n".join(lines) + "\n").encode("utf-8"))
    ctx.out(f"wrote {count} command{'s' if count != 1 else ''} to {target}")


def _write_new(target: Path, data: bytes) -> None:
    """`target` written whole (atomic.write_new) and only if there is no such name yet: a file,
    a folder or a link of that name is never replaced, written through or half-written."""
    try:
        atomic.write_new(target.parent, [target.name], data)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise InvokeError(f"!fetch: cannot write {target}: {atomic.why(exc)}") from None
        what = " as a link" if target.is_symlink() else " as a folder" if target.is_dir() else ""
        raise InvokeError(
            f"!fetch: {target} already exists{what}; !fetch never replaces a file: "
            "give a new name (nothing was written)"
        ) from None


def _glob(ctx: ShellContext, pattern: str) -> list[Path]:
    expanded = os.path.expanduser(pattern)
    paths = sorted(glob.glob(expanded))
    if not paths and not os.path.dirname(expanded):
        paths = sorted(glob.glob(os.path.join(glob.escape(str(ctx.runner.outdir)), expanded)))
    files = [Path(p) for p in paths if Path(p).is_file()]
    if not files:
        raise InvokeError(f"!fetch: no file matches {pattern} (nor in {ctx.runner.outdir})")
    return files


# -- dream ---------------------------------------------------------------------------------------


@command("dream", "!dream LINE", "Run LINE as a command line (the same as typing LINE).")
def _dream(ctx: ShellContext, args: str) -> None:
    # parse_line already turns `!dream X` into X; this covers a parser that hands it over.
    run_request(ctx, parse_request(args))
