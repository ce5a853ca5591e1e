"""The batch's lines, planned ahead of their turn so the workers are busy while the driver
writes: the batch reads lines from this as from any line source, and each line it hands over
has had its Jobs sent to the pool while earlier lines ran.

What may be planned ahead is what does not depend on lines before it:
- a `!` command (`!switch`, `!replay`, ...) is a barrier: nothing after it is planned until it
  has run, since it may change what later lines mean;
- a line that names an earlier result (`-S -N`, `-I -1`, `--control_image -1`,
  `--latents -1`) is not planned ahead; it runs in its turn (on a worker), and planning goes on
  past it;
- a pass that starts from a picture of its own line (`-I FILE -v A -n N`) waits for it.
A line planned wrongly costs time, never a wrong picture: the session asks the pool for the Job
it really has, and a Job that differs in anything is drawn anew.

Lines are read by a thread into a queue, so planning takes the lines already there and never
waits for a producer that has not written the next one yet (a live producer's first picture
still comes before its stdin closes). Planning happens when the batch asks for its next line
and while the session waits for a worker (`Pool.refill`): lines read meanwhile are sent at
once. Planning has no side effects on the session (`Session.plan_jobs`), so it may happen in
the middle of a line.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from invoke import reading
from invoke.distributed.pool import Pool
from invoke.distributed.runner import PoolRunner, SeedBook
from invoke.errors import InvokeError
from invoke.line import sweep
from invoke.line.parse import ShellCommand, parse_line
from invoke.line.request import Request

_END = object()


def depends_on_earlier(request: Request) -> bool:
    """Whether the line names a result of an earlier line (then it is planned in its turn)."""
    if request.seed is not None and request.seed < 0:
        return True
    images = (request.init_img, request.latents, *(u.control_image for u in request.controls))
    return "-1" in images


class Lookahead:
    """Iterate it as the batch's lines; `window` Jobs are kept planned ahead (sent or drawn)."""

    def __init__(
        self, lines: Iterable[Any], session: Any, pool: Pool, book: SeedBook, window: int
    ) -> None:
        self.session, self.pool, self.book, self.window = session, pool, book, window
        self.runner: PoolRunner = session.jobs
        self._queue: queue.Queue[Any] = queue.Queue()
        self._held: deque[Any] = deque()  # read, not yet handed to the batch
        self._given = 0  # input lines handed to the batch (numbered as the batch numbers them)
        self._planned = 0  # input lines planned (or passed over) so far
        threading.Thread(target=self._reader, args=(iter(lines),), daemon=True).start()
        pool.refill = self._plan_ahead  # also while the session waits for a worker

    def _reader(self, lines: Iterator[Any]) -> None:
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                self._queue.put(_END)
                return
            except BaseException as exc:  # reading.NotText and the like: the batch reports it
                self._queue.put(exc)
                return
            self._queue.put(raw)

    def __iter__(self) -> Iterator[Any]:
        while True:
            self._plan_ahead()
            if not self._held:
                self._held.append(self._queue.get())  # wait for the producer
            raw = self._held.popleft()
            if raw is _END:
                return
            if isinstance(raw, BaseException):
                raise raw
            self._given += 1
            self._planned = max(self._planned, self._given)  # not planned by now: in its turn
            self.runner.line = self._given
            self.book.running(self._given)
            yield raw
            self.pool.forget(self._given)

    def _plan_ahead(self) -> None:
        """Plan the lines read so far, in order, until the window is full or a `!` command
        that has not run yet is met."""
        while self.pool.backlog() < self.window:
            position = self._planned - self._given  # in _held, of the next line to plan
            if position >= len(self._held):
                try:
                    self._held.append(self._queue.get_nowait())
                except queue.Empty:
                    return
            raw = self._held[position]
            if raw is _END or isinstance(raw, BaseException):
                return
            parsed = _parsed(raw)
            if isinstance(parsed, ShellCommand):
                return  # a barrier until it has run
            self._planned += 1
            if isinstance(parsed, Request):
                self._plan(self._planned, parsed)

    def _plan(self, number: int, request: Request) -> None:
        try:
            for line in sweep.expand(request, self.session.recent_seeds()):
                if depends_on_earlier(line):
                    continue
                with self.book.planning(number):
                    jobs = self.session.plan_jobs(line)
                for job in jobs:
                    self.pool.submit(number, self.session.models.entry.name, job)
        except Exception:  # the line fails (or runs) in its turn, and says so then
            return


def _parsed(raw: Any) -> Request | ShellCommand | None:
    """The line as the batch will run it; None for blank, comment and unreadable lines."""
    try:
        text = reading.line_text(raw).strip()
        if not text or text.startswith(("#", "//")):
            return None
        return parse_line(text)
    except (InvokeError, reading.NotText, ValueError):
        return None
