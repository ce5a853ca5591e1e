"""What each worker process runs (pool.py makes it a Ray actor): its own model cache, the
model kept loaded from job to job, and the one-process JobRunner (jobs.LocalRunner), so a Job
draws here the pixels it draws in one process.

Everything a job makes comes back as one plain `Outcome`: the pictures, every step the session
would have been told of (its bar, --save_intermediates, --save_latents), the tokens (-t), the
notes, or the one-line error the line fails with and the stage it failed in.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

from invoke.config.settings import Settings
from invoke.errors import InvokeError
from invoke.jobs import LocalRunner
from invoke.model_cache import ModelCache


@dataclass
class Outcome:
    """One Job's result as it travels back to the driver."""

    images: list[Any] = field(default_factory=list)  # PIL images, one a Noise of the job
    steps: list[Any] = field(default_factory=list)  # events.Step, in order
    events: list[Any] = field(default_factory=list)  # events.Tokens
    notes: list[str] = field(default_factory=list)  # the job's, told with its line
    said: list[str] = field(default_factory=list)  # the worker's own (model loads), told now
    error: str = ""  # the line's one-line error; "" when it drew
    stage: str = ""  # where it failed: "prepare" (before a file is reserved) or "run"
    unexpected: bool = False  # the error is a bug of ours (the batch says "unexpected error")
    seconds: float = 0.0  # the worker's time on the job, for the overhead figure


@dataclass(frozen=True)
class Where:
    """A worker, as its progress line and the notes name it."""

    pid: int
    host: str
    device: str


class Drawer:
    """One worker: `draw` a Job on the model the driver's session has active."""

    def __init__(self, settings: Settings, threads: int, number: int) -> None:
        # A terminal's Ctrl-C reaches every process of its group: the driver decides what
        # stops, so a worker finishes its job and is then shut down by the driver.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.said: list[str] = []
        self.number = number  # as the driver's notes and progress lines name this worker
        settings = replace(settings, threads=threads)
        self.models = ModelCache(settings, self.said.append, dry_run=False)
        self.runner = LocalRunner(self.models)

    def where(self) -> Where:
        return Where(os.getpid(), socket.gethostname(), self.models.device_name())

    def draw(self, model: str, job: Any) -> Outcome:
        started = time.perf_counter()
        self.said.clear()
        outcome = Outcome()
        stage = "prepare"
        try:
            if model != self.models.entry.name:
                self.models.switch(model)  # as !switch would: loaded once, kept
            outcome.notes = self.runner.prepare(job)
            stage = "run"
            outcome.images = self.runner.run(job, outcome.steps.append, outcome.events.append)
        except InvokeError as exc:
            outcome.error, outcome.stage = str(exc), stage
        except Exception as exc:  # a bug of ours: the line fails, the worker lives on
            detail = " ".join(str(exc).split())
            outcome.error = f"{type(exc).__name__}: {detail}"
            outcome.stage, outcome.unexpected = stage, True
            traceback.print_exc()  # into the worker's log
        outcome.said = [f"worker {self.number}: {note}" for note in self.said]
        outcome.seconds = time.perf_counter() - started
        return outcome
