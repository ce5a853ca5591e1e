"""Many lines without a prompt: stdin, `--from_file`, `!replay FILE` (registered here); and the
one-shot line.

A batch left running overnight must not die on line 37 of 500: a bad line is reported as
`line N: <error>` (N counts every input line, skipped ones too, so it matches an editor) and the
rest run. One summary line at the end; exit status 1 if any line failed.

Where text goes: echoed lines to `out`, errors and the summary to `err`. In a dry run the echo
goes to `err` too, so that `out` holds only canonical commands: a batch file that, fed back
through `--dry-run`, prints itself unchanged.

Lines come one at a time (`invoke.reading.batch_lines` for stdin and files): each runs as soon as
it is complete, whatever follows. A line may be `str` or `bytes` (decoded as UTF-8), or the
InvokeError of a line that could not be read (too long): that line fails and the rest run. The
first line holding bytes that are not text (`reading.NotText`: a binary file, another encoding)
is reported once and stops the batch, rather than failing line by line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field, replace

from invoke import interrupts, reading
from invoke.errors import InvokeError
from invoke.events import LineRecords
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

INTERRUPTED = interrupts.EXIT_STATUS["Ctrl-C"]  # the shell's convention for "stopped by SIGINT"


@dataclass
class BatchResult:
    run: int = 0  # command lines attempted (not blank or comment lines, not `q`)
    failed: list[int] = field(default_factory=list)  # their input line numbers
    stopped: str = ""  # why the batch ended early, if it did
    interrupted: bool = False
    by: str = "Ctrl-C"  # what interrupted it: "Ctrl-C" or "SIGTERM"
    dry_run: bool = False
    last: int = 0  # the input line number reached

    @property
    def status(self) -> int:
        if self.interrupted:
            return interrupts.EXIT_STATUS[self.by]
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


Line = str | bytes | InvokeError  # see the module's doc


def run_batch(
    runner: Runner,
    lines: Iterable[Line],
    *,
    dry_run: bool = False,
    out=print_out,
    err=print_err,
    debug: bool = False,
    records: LineRecords | None = None,
) -> int:
    """Run every line; the exit status: 0 all good, 1 some line failed, 130 stopped by Ctrl-C,
    143 by SIGTERM. `records` is told of each line (--json, --quiet) and prints the summary."""
    ctx = ShellContext(runner, out=out, err=err, dry_run=dry_run, debug=debug, records=records)
    return run_lines(ctx, lines).status


def run_lines(ctx: ShellContext, lines: Iterable[Line]) -> BatchResult:
    result = BatchResult(dry_run=ctx.dry_run)
    try:
        # Ctrl-C (or SIGTERM) once: finish the image being made, then stop with the summary;
        # twice: stop now.
        with interrupts.two_stage(ctx.err):
            _run_numbered(ctx, lines, result)
    except KeyboardInterrupt as stop:
        # The second Ctrl-C (or the first, outside the main thread, or while waiting for a
        # line): stop at once.
        result.interrupted, result.by = True, interrupts.which(stop)
        result.stopped = (
            result.stopped
            or f"stopped by {result.by} at line {result.last}; finished images were kept"
        )
    if ctx.records is not None:
        ctx.records.summary(result.summary, ok=result.status == 0)
    else:
        ctx.err(result.summary)
    return result


def _run_numbered(ctx: ShellContext, lines: Iterable[Line], result: BatchResult) -> None:
    # A dry run's echo is not its output; with records (--json, --quiet) the output is theirs.
    echo = ctx.err if ctx.dry_run and ctx.records is None else ctx.out
    for number, raw in _numbered(lines, result):
        try:
            text = reading.line_text(raw).strip()
        except reading.NotText as exc:
            _failed(ctx, result, number, exc)
            result.stopped = f"stopped reading at line {number}"
            return
        except InvokeError as exc:  # a line that could not be read: it fails alone
            _failed(ctx, result, number, exc)
            continue
        if not text or text.startswith(("#", "//")):
            continue
        echo(DEFAULT_PROMPT + printable(text))
        if ctx.records is not None:
            ctx.records.line(number)
        try:
            if not run_line(ctx, text):
                result.stopped = f"stopped by q at line {number}"
                return
        except InvokeError as exc:
            _line_failed(ctx, result, number, printable(str(exc)))
        except BrokenPipeError:
            raise  # the reader went away (`| head`): nobody to report to, stop quietly
        except Exception as exc:  # a batch outlives our own bugs: one line, go on
            _line_failed(ctx, result, number, unexpected(exc, ctx.debug))
        result.run += 1
        if interrupts.stop_requested() and not ctx.runner.finishing():
            # A first Ctrl-C: the session finished the image it was making; so do we.
            result.interrupted, result.by = True, interrupts.stopped_by()
            result.stopped = (
                f"stopped by {result.by} after line {number}; finished images were kept"
            )
            return


def _numbered(lines: Iterable[Line], result: BatchResult) -> Iterator[tuple[int, Line]]:
    """(input line number, line), `result.last` kept up to date; input that stops being
    readable (reading.NotText) comes as the last line's error. A Ctrl-C while waiting for a
    line stops the batch at once (nothing is being made)."""
    lines = iter(lines)
    while True:
        try:
            with interrupts.waiting_for_input():
                raw = next(lines)
        except StopIteration:
            return
        except reading.NotText as exc:
            raw = exc
        except KeyboardInterrupt:
            result.stopped = (
                f"stopped by Ctrl-C after line {result.last}; finished images were kept"
            )
            raise
        result.last += 1
        yield result.last, raw
        if isinstance(raw, reading.NotText):
            return


def _failed(ctx: ShellContext, result: BatchResult, number: int, exc: InvokeError) -> None:
    """A line that could not be read: it counts as run, and failed."""
    result.run += 1
    _line_failed(ctx, result, number, printable(str(exc)))


def _line_failed(ctx: ShellContext, result: BatchResult, number: int, message: str) -> None:
    """Line `number` failed: said on stderr, and told to the records (--json)."""
    result.failed.append(number)
    ctx.err(f"line {number}: {message}")
    if ctx.records is not None:
        ctx.records.failed(number, message)


def run_one(
    runner: Runner,
    line: str,
    *,
    dry_run: bool = False,
    out=print_out,
    err=print_err,
    debug: bool = False,
    records: LineRecords | None = None,
) -> int:
    """The one-shot `invoke "<line>"`: like a batch of one line (line 1 to `records`), errors
    without `line N:`."""
    ctx = ShellContext(runner, out=out, err=err, dry_run=dry_run, debug=debug, records=records)

    def failed(message: str) -> int:
        err(message)
        if records is not None:
            records.failed(1, message)
        return 1

    if not line.strip():
        return failed(
            'nothing to run: give a prompt and switches, e.g. invoke "a red circle -s 20"'
        )
    if records is not None:
        records.line(1)
    try:
        run_line(ctx, line.strip())
    except InvokeError as exc:
        return failed(printable(str(exc)))
    except KeyboardInterrupt as stop:
        err(STOPPED.replace("Ctrl-C", interrupts.which(stop)))
        return interrupts.EXIT_STATUS[interrupts.which(stop)]
    except BrokenPipeError:
        raise  # the reader went away (`| head`): the launcher ends quietly
    except Exception as exc:  # one line for the user, not a traceback
        return failed(unexpected(exc, debug))
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
    with reading.open_file(path, f"!replay: {path}", "give a text file of command lines") as file:
        if path.resolve() in ctx.replaying:
            raise InvokeError(
                f"!replay: {path} is already being replayed; a file cannot replay itself"
            )
        nested = replace(ctx, set_input=None, replaying=(*ctx.replaying, path.resolve()))
        with closing(reading.batch_lines(file)) as lines:
            result = run_lines(nested, lines)
    if not ctx.interactive and result.status != 0:
        # In a batch the !replay line itself fails, so the outer exit status says so too.
        raise InvokeError(f"!replay {path}: {result.summary}")
