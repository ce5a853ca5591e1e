"""Who runs Jobs. A Job is plain data (backend/job.py) and pictures come back as plain values,
so the session does not care where it runs: `LocalRunner` runs it here, on the model cache's
active model; a pool of worker processes or hosts is another JobRunner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from invoke import plan
from invoke.events import Step
from invoke.model_cache import ModelCache

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.job import Job
    from invoke.backend.model import Model


class JobRunner(Protocol):
    def batch(self) -> int:
        """How many pictures of a `-n` line go in one Job (plan.plan's batch)."""
        ...

    def prepare(self, job: Job) -> list[str]:
        """Refuse what the model cannot do, load what the job names (LoRAs merged, a ControlNet
        loaded) before any file is reserved; returns notes for the person."""
        ...

    def run(
        self, job: Job, on_step: Callable[[Step], None], on_event: Callable[[object], None]
    ) -> list[Image.Image]:
        """One picture per Noise of the job."""
        ...

    def finishing(self) -> bool:
        """After a first Ctrl-C: whether Jobs already being drawn elsewhere wait to be written
        (the batch goes on through their lines, then stops). Never, for Jobs drawn here."""
        ...


class LocalRunner:
    """Jobs run in this process, on the active model (loaded on first use)."""

    def __init__(self, models: ModelCache) -> None:
        self.models = models

    def batch(self) -> int:
        return plan.batch_size(self.models.model.device.type)

    def prepare(self, job: Job) -> list[str]:
        notes = self.models.model.prepare(job)
        self._refiner(job)  # loaded now: one that cannot load fails before a file is reserved
        return notes

    def run(
        self, job: Job, on_step: Callable[[Step], None], on_event: Callable[[object], None]
    ) -> list[Image.Image]:
        from invoke.backend.run import draw

        refiner = self._refiner(job)
        return draw(self.models.model, job, on_step, on_event, refiner)

    def finishing(self) -> bool:
        return False  # here only the Job being drawn was started, and it is written

    def _refiner(self, job: Job) -> Model | None:
        """--refiner's model, loaded beside the active one (model_cache.companion)."""
        if job.refiner is None:
            return None
        refiner = self.models.companion(job.refiner.name)
        from invoke.backend.families.sdxl import check_refiner

        check_refiner(self.models.model, refiner, job)
        return refiner
