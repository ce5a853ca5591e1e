"""The workers and who draws what.

The driver keeps one queue of Jobs in input-line order. A worker takes the next Job when it has
finished its last (work is pulled, so lines of different cost spread themselves), and at most
one Job waits on a worker at a time. A Job the session needs that was not planned ahead goes
to the front of the queue.

A Job is known by a digest of what it is (its model and every field), so a Job planned ahead is
the one the session asks for only if it would draw the same pixels; an identical Job is drawn
once. Results are kept until the batch has passed the last line that planned them.

A worker that dies (killed, out of memory, its machine gone) is replaced by a new one, and the
Job it had goes back to the front of the queue: it is drawn again, and its pictures are written
once, by the driver, when their line's turn comes. A Job whose worker dies three times fails its
line instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from invoke import interrupts
from invoke.config.settings import Settings
from invoke.distributed.cluster import Cluster
from invoke.distributed.worker import Drawer, Outcome, Where
from invoke.errors import InvokeError

TRIES = 3  # a Job is drawn at most this many times when its workers die
WAIT_S = 0.2  # how long one wait for results lasts (Ctrl-C and progress are seen between)


class Progress(Protocol):
    """What a batch on workers shows (shell/report.py draws it on a terminal)."""

    def images(self, done: int, planned: int) -> None: ...
    def worker(self, number: int, text: str) -> None: ...
    def waiting(self, shown: bool) -> None:
        """Shown while the driver waits for a result, hidden while it writes and prints."""
        ...

    def close(self) -> None: ...


@dataclass
class Ticket:
    model: str
    job: Any
    tag: int  # the last input line that planned (or asked for) it
    images: int
    outcome: Outcome | None = None
    tries: int = 0
    sent: float = 0.0
    taken: bool = False  # the session has written its pictures


@dataclass
class Slot:
    number: int  # 1, 2, ... as the progress lines name them
    actor: Any
    where: Where | None = None
    key: str | None = None  # the Job it is drawing
    ref: Any = None  # the Ray reference of its result


def job_key(model: str, job: Any) -> str:
    return hashlib.sha256(pickle.dumps((model, job), protocol=5)).hexdigest()


class Pool:
    def __init__(
        self,
        cluster: Cluster,
        settings: Settings,
        *,
        count: int,
        threads: int,
        gpus_each: int,
        note: Callable[[str], None],
        progress: Progress,
    ) -> None:
        self.ray = cluster.ray
        self.settings, self.threads = settings, threads
        self.note, self.progress = note, progress
        self._actor = self.ray.remote(num_cpus=1, num_gpus=gpus_each, max_restarts=0)(Drawer)
        self.tickets: dict[str, Ticket] = {}
        self.queue: deque[str] = deque()
        self.started = time.perf_counter()
        self.overheads: list[float] = []  # per Job: round trip less the worker's own time
        self.planned = self.done = 0
        self._stopping = False  # a first Ctrl-C was seen
        # Called while the driver waits for a result: plans lines read meanwhile (the
        # lookahead sets it), so a worker is not idle while the driver waits for another.
        self.refill: Callable[[], None] = lambda: None
        self.slots = [Slot(n, self._new_actor(n)) for n in range(1, count + 1)]
        try:
            wheres = self.ray.get([s.actor.where.remote() for s in self.slots])
        except self.ray.exceptions.RayError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise InvokeError(f"the workers could not start: {detail}") from exc
        for slot, where in zip(self.slots, wheres, strict=True):
            self._ready(slot, where)
            self.note(f"{self._name(slot)} ready")

    @property
    def device_type(self) -> str:
        where = self.slots[0].where
        return where.device.partition(":")[0] if where is not None else "cpu"

    # -- what the driver asks ---------------------------------------------------------------

    def submit(self, tag: int, model: str, job: Any) -> None:
        """A Job planned ahead, drawn when a worker is free."""
        key = job_key(model, job)
        ticket = self.tickets.get(key)
        if ticket is not None:
            ticket.tag = max(ticket.tag, tag)
            return
        self.tickets[key] = Ticket(model, job, tag, len(job.noises))
        self.queue.append(key)
        self._planned(len(job.noises))
        self._pump(0)

    def outcome(self, tag: int, model: str, job: Any, *, take: bool = False) -> Outcome:
        """The Job's result, waiting for it (drawn now, ahead of the queue, if not planned);
        `take`: the session writes it now."""
        key = job_key(model, job)
        ticket = self.tickets.get(key)
        if ticket is None:
            ticket = self.tickets[key] = Ticket(model, job, tag, len(job.noises))
            self.queue.appendleft(key)
            self._planned(len(job.noises))
        elif ticket.outcome is None and key in self.queue:
            self.queue.remove(key)
            self.queue.appendleft(key)
        ticket.tag = max(ticket.tag, tag)
        self._pump(0)
        if ticket.outcome is None:
            self.progress.waiting(True)
            try:
                while ticket.outcome is None:
                    self._pump(WAIT_S)
                    self.refill()
            finally:
                self.progress.waiting(False)
        ticket.taken = ticket.taken or take
        return ticket.outcome

    def has_started(self, model: str, job: Any) -> bool:
        """Whether a worker has drawn the Job or is drawing it."""
        key = job_key(model, job)
        ticket = self.tickets.get(key)
        return ticket is not None and (ticket.outcome is not None or self._drawing(key))

    def unwritten(self) -> bool:
        """Whether a Job a worker has drawn or is drawing has not been written yet."""
        return any(
            not t.taken and (t.outcome is not None or self._drawing(k))
            for k, t in self.tickets.items()
        )

    def _drawing(self, key: str) -> bool:
        return any(slot.key == key for slot in self.slots)

    def backlog(self) -> int:
        """Jobs sent or waiting that have no result yet."""
        return sum(1 for t in self.tickets.values() if t.outcome is None)

    def forget(self, through: int) -> None:
        """The batch is past line `through`: results only it and earlier lines wanted go."""
        for key in [k for k, t in self.tickets.items() if t.tag <= through]:
            if any(slot.key == key for slot in self.slots):
                continue  # being drawn: its result is dropped when it comes
            ticket = self.tickets.pop(key)
            if ticket.outcome is None:
                self.queue.remove(key)
                self._planned(-ticket.images)

    def summary(self) -> str:
        seconds = time.perf_counter() - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        text = (
            f"{self.done} image{'s' if self.done != 1 else ''} on {len(self.slots)} "
            f"worker{'s' if len(self.slots) != 1 else ''} in {seconds:.1f}s ({rate:.2f}/s)"
        )
        if self.overheads:
            each = 1000 * sum(self.overheads) / len(self.overheads)
            text += f"; dispatch and shipping {each:.1f} ms a job"
        return text

    # -- the workers ---------------------------------------------------------------------------

    def _new_actor(self, number: int) -> Any:
        return self._actor.remote(self.settings, self.threads, number)

    def _ready(self, slot: Slot, where: Where) -> None:
        slot.where = where
        self.progress.worker(slot.number, f"{self._name(slot)}: idle")

    def _name(self, slot: Slot) -> str:
        where = slot.where
        if where is None:
            return f"worker {slot.number}"
        return f"worker {slot.number} (pid {where.pid} on {where.host}, {where.device})"

    def _pump(self, wait: float) -> None:
        """Give free workers the next Jobs, then take the results that come within `wait`.
        After a first Ctrl-C no Job starts: those being drawn finish and are written."""
        stopping = interrupts.stop_requested()
        if stopping and not self._stopping:
            self._stopping = True
            drawing = sum(slot.key is not None for slot in self.slots)
            if drawing:
                self.note(
                    f"no new Jobs start; the {drawing} being drawn are written, in their lines' "
                    "order, then the batch stops"
                )
        for slot in self.slots:
            if slot.key is None and self.queue and not stopping:
                key = self.queue.popleft()
                ticket = self.tickets[key]
                ticket.sent = time.perf_counter()
                slot.key, slot.ref = key, slot.actor.draw.remote(ticket.model, ticket.job)
                images = f"{ticket.images} image{'s' if ticket.images != 1 else ''}"
                doing = f"line {ticket.tag}, {images}"
                self.progress.worker(slot.number, f"{self._name(slot)}: {doing}")
        busy = [slot for slot in self.slots if slot.ref is not None]
        if not busy or wait <= 0:
            return
        refs = [s.ref for s in busy]
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=wait)  # the first to finish
        if ready:  # and any others finished by now
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for slot in busy:
            if any(ref is slot.ref for ref in ready):
                self._received(slot)

    def _received(self, slot: Slot) -> None:
        key, ref = slot.key, slot.ref
        slot.key = slot.ref = None
        assert key is not None
        ticket = self.tickets.get(key)
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:  # ours failed to run at all
            outcome = Outcome(error=" ".join(str(exc).split())[:300], stage="run", unexpected=True)
        except self.ray.exceptions.RayError as exc:  # the worker is gone
            self._lost(slot, key, exc)
            return
        self.progress.worker(slot.number, f"{self._name(slot)}: idle")
        for note in outcome.said:
            self.note(note)
        if ticket is None:
            return  # forgotten while it was drawn
        ticket.outcome = outcome
        self.overheads.append(max(0.0, time.perf_counter() - ticket.sent - outcome.seconds))
        self.done += ticket.images
        self.progress.images(self.done, self.planned)

    def _lost(self, slot: Slot, key: str, exc: BaseException) -> None:
        """A dead worker: a new one in its place, its Job drawn again (or failed, third time)."""
        why = type(exc).__name__
        self.note(f"{self._name(slot)} died ({why}); a new worker takes its place")
        with contextlib.suppress(self.ray.exceptions.RayError):  # already gone
            self.ray.kill(slot.actor, no_restart=True)
        slot.actor, slot.where = self._new_actor(slot.number), None
        self.progress.worker(slot.number, f"{self._name(slot)}: starting")
        self._ready(slot, self.ray.get(slot.actor.where.remote()))
        self.note(f"{self._name(slot)} ready")
        ticket = self.tickets.get(key)
        if ticket is None:
            return
        ticket.tries += 1
        if ticket.tries >= TRIES:
            ticket.outcome = Outcome(
                error=f"the workers drawing it died {ticket.tries} times (last: {why}); "
                "not tried again: is it running out of memory?",
                stage="run",
            )
        else:
            self.queue.appendleft(key)

    def _planned(self, images: int) -> None:
        self.planned += images
        self.progress.images(self.done, self.planned)
