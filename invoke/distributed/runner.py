"""The JobRunner a session on workers is given: each Job's pictures come from the pool, and
what the worker saw on the way (its steps, tokens and notes) is told to the session as if the
Job had run here, so the bar, --save_intermediates, --save_latents and -t behave as in one
process. The seeds of lines without -S come from the SeedBook, so a line planned ahead and the
same line run draw the same seed."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from invoke import interrupts, plan
from invoke.distributed.pool import Pool
from invoke.distributed.worker import Outcome
from invoke.errors import InvokeError
from invoke.events import Step
from invoke.model_cache import ModelCache

if TYPE_CHECKING:
    from collections.abc import Iterator

    from invoke.backend.job import Job


class WorkerBug(RuntimeError):
    """A worker hit a bug of ours: the line fails with an `unexpected error`, the batch goes on."""


class PoolRunner:
    """jobs.JobRunner on the pool, for the session's active model; `line` is the input line
    the session is running (set by the lookahead), so results it no longer needs can go."""

    def __init__(self, pool: Pool, models: ModelCache) -> None:
        self.pool = pool
        self.models = models
        self.line = 0

    def batch(self) -> int:
        return plan.batch_size(self.pool.device_type)

    def prepare(self, job: Job) -> list[str]:
        outcome = self._outcome(job, take=False)
        if outcome.error and outcome.stage == "prepare":
            raise _error(outcome)
        return outcome.notes

    def run(
        self, job: Job, on_step: Callable[[Step], None], on_event: Callable[[object], None]
    ) -> list[Any]:
        outcome = self._outcome(job, take=True)
        if outcome.error:
            raise _error(outcome)
        for step in outcome.steps:
            on_step(step)
        for event in outcome.events:
            on_event(event)
        return outcome.images

    def finishing(self) -> bool:
        return interrupts.stop_requested() and self.pool.unwritten()

    def _outcome(self, job: Job, *, take: bool) -> Outcome:
        model = self.models.entry.name
        if interrupts.stop_requested() and not self.pool.has_started(model, job):
            # After a first Ctrl-C nothing new starts: the batch stops before this Job.
            sigterm = interrupts.stopped_by() == "SIGTERM"
            raise interrupts.Terminated if sigterm else KeyboardInterrupt
        return self.pool.outcome(self.line, model, job, take=take)


def _error(outcome: Outcome) -> Exception:
    if outcome.unexpected:
        return WorkerBug(outcome.error)
    return InvokeError(outcome.error)


class SeedBook:
    """The fresh seeds (lines without -S) each input line drew when it was planned ahead; the
    same line, when it runs, takes them again in the same order (then new ones, if it asks for
    more)."""

    def __init__(self) -> None:
        self.drawn: dict[int, list[int]] = {}
        self._planning: list[int] | None = None
        self._running: list[int] = []

    def take(self) -> int:
        if self._planning is not None:
            seed = secrets.randbelow(plan.SEED_LIMIT)
            self._planning.append(seed)
            return seed
        if self._running:
            return self._running.pop(0)
        return secrets.randbelow(plan.SEED_LIMIT)

    @contextmanager
    def planning(self, line: int) -> Iterator[None]:
        self._planning = self.drawn.setdefault(line, [])
        try:
            yield
        finally:
            self._planning = None

    def running(self, line: int) -> None:
        self._running = self.drawn.pop(line, [])
