"""Many lines without a prompt: stdin, `--from_file`, `!replay FILE` (registered here); and the
one-shot line.

A batch left running overnight must not die on line 37 of 500: a bad line is reported as
`line N: <error>` (N counts every input line, skipped ones too, so it matches an editor) and the
rest run. One summary line at the end; exit status 1 if any line failed.

Where text goes: echoed lines to `out`, errors and the summary to `err`. In a dry run the echo
goes to `err` too, so that `out` holds only canonical commands: a batch file that, fed back
through `--dry-run`, prints itself unchanged.

Input may be `str` or `bytes` lines. Bytes are decoded as UTF-8 with errors="replace" (the
replacement character then fails to parse as a switch or shows in the prompt); `str` lines holding
lone surrogates (from a surrogateescape decode) are made printable the same way. Either way, bytes
that are not UTF-8 never stop a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from invoke import interrupts
from invoke.errors import InvokeError
from invoke.shell.commands import file_args
from invoke.shell.dispatch import (
    STOPPED,
    ShellContext,
    command,
    print_err,
    print_out,
    printable,
    run_line,
    unexpected,
    user_path,
)
from invoke.shell.runner import DEFAULT_PROMPT, Runner

INTERRUPTED = 130  # the shell's convention for "stopped by SIGINT"


@dataclass
class BatchResult:
    run: int = 0  # command lines attempted (not blank or comment lines, not `q`)
    failed: list[int] = field(default_factory=list)  # their input line numbers
    stopped: str = ""  # why the batch ended early, if it did
    interrupted: bool = False
    dry_run: bool = False
    last: int = 0  # the input line number reached

    @property
    def status(self) -> int:
        if self.interrupted:
            return INTERRUPTED
        return 1 if self.failed else 0

    @property
    def summary(self) -> str:
        verb = "checked" if self.dry_run else "run"
        text = f"{self.run} line{'s' if self.run != 1 else ''} {verb}, {len(self.failed)} failed"
        if self.failed:
            which = "line" if len(self.failed) == 1 else "lines"
            text += f" ({which} {', '.join(map(str, self.failed))})"
        if self.stopped:
            text += f"; {self.stopped}"
        return text


def run_batch(
    runner: Runner,
    lines: Iterable[str | bytes],
    *,
    dry_run: bool = False,
    out=print_out,
    err=print_err,
    debug: bool = False,
) -> int:
    """Run every line; the exit status: 0 all good, 1 some line failed, 130 stopped by Ctrl-C."""
    ctx = ShellContext(runner, out=out, err=err, dry_run=dry_run, debug=debug)
    return run_lines(ctx, lines).status


def run_lines(ctx: ShellContext, lines: Iterable[str | bytes]) -> BatchResult:
    result = BatchResult(dry_run=ctx.dry_run)
    try:
        # Ctrl-C once: finish the image being made, then stop with the summary; twice: stop now.
        with interrupts.two_stage(ctx.err):
            _run_numbered(ctx, lines, result)
    except KeyboardInterrupt:
        # The second Ctrl-C (or the first, outside the main thread): stop at once.
        result.interrupted = True
        result.stopped = f"stopped by Ctrl-C at line {result.last}; finished images were kept"
    ctx.err(result.summary)
    return result


def _run_numbered(ctx: ShellContext, lines: Iterable[str | bytes], result: BatchResult) -> None:
    echo = ctx.err if ctx.dry_run else ctx.out
    for number, raw in enumerate(lines, 1):
        result.last = number
        text = _text(raw).strip()
        if not text or text.startswith(("#", "//")):
            continue
        echo(DEFAULT_PROMPT + printable(text))
        try:
            if not run_line(ctx, text):
                result.stopped = f"stopped by q at line {number}"
                return
        except InvokeError as exc:
            result.failed.append(number)
            ctx.err(f"line {number}: {printable(str(exc))}")
        except BrokenPipeError:
            raise  # the reader went away (`| head`): nobody to report to, stop quietly
        except Exception as exc:  # a batch outlives our own bugs: one line, go on
            result.failed.append(number)
            ctx.err(f"line {number}: {unexpected(exc, ctx.debug)}")
        result.run += 1
        if interrupts.stop_requested():
            # A first Ctrl-C: the session finished the image it was making; so do we.
            result.interrupted = True
            result.stopped = f"stopped by Ctrl-C after line {number}; finished images were kept"
            return


def run_one(
    runner: Runner,
    line: str,
    *,
    dry_run: bool = False,
    out=print_out,
    err=print_err,
    debug: bool = False,
) -> int:
    """The one-shot `invoke "<line>"`: like a batch of one line, errors without `line N:`."""
    ctx = ShellContext(runner, out=out, err=err, dry_run=dry_run, debug=debug)
    if not line.strip():
        err('nothing to run: give a prompt and switches, e.g. invoke "a red circle -s 20"')
        return 1
    try:
        run_line(ctx, line.strip())
    except InvokeError as exc:
        err(printable(str(exc)))
        return 1
    except KeyboardInterrupt:
        err(STOPPED)
        return INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away (`| head`): the launcher ends quietly
    except Exception as exc:  # one line for the user, not a traceback
        err(unexpected(exc, debug))
        return 1
    return 0


@command(
    "replay",
    "!replay FILE",
    "Run the lines of FILE as a batch: blank and # lines skipped, bad lines reported, q stops.",
    complete="path",
    after="fetch",  # where !help has always listed it
)
def _replay(ctx: ShellContext, args: str) -> None:
    words = file_args("replay", args, "!replay FILE")
    if len(words) > 1:
        raise InvokeError(
            f"!replay: takes one file, got {len(words)} words; quote a name with spaces"
        )
    path = user_path(ctx, words[0])
    if path.resolve() in ctx.replaying:
        raise InvokeError(f"!replay: {path} is already being replayed; a file cannot replay itself")
    lines = read_batch_file(path, "!replay")
    nested = replace(ctx, set_input=None, replaying=(*ctx.replaying, path.resolve()))
    result = run_lines(nested, lines)
    if not ctx.interactive and result.status != 0:
        # In a batch the !replay line itself fails, so the outer exit status says so too.
        raise InvokeError(f"!replay {path}: {result.summary}")


def read_batch_file(path: Path, who: str) -> list[str]:
    """A batch file's lines; undecodable bytes become U+FFFD rather than an error."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise InvokeError(f"{who}: {path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InvokeError(f"{who}: {path} is a folder; give a text file of command lines") from exc
    except OSError as exc:
        raise InvokeError(f"{who}: cannot read {path}: {exc.strerror}") from exc
    return data.decode("utf-8", errors="replace").splitlines()


def _text(raw: str | bytes) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", errors="replace")
    # A lone surrogate cannot be printed or encoded later: make it a "?" now.
    return raw.encode("utf-8", errors="replace").decode("utf-8")
