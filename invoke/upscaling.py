"""-U: the line's upscaler found, loaded once (kept for the next line until its folder
changes) and run on each picture, with a progress bar."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.config import model_files
from invoke.config.lookup import Lookup
from invoke.config.settings import Settings
from invoke.events import Reporter
from invoke.line.request import Request

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.upscale import Upscaler


class Upscaling:
    """The session's upscaler: `load` it for a line, then `upscale` each picture."""

    def __init__(
        self,
        settings: Settings,
        lookup: Lookup,
        reporter: Reporter,
        note: Callable[[str], None],
        precision: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.lookup = lookup
        self.reporter = reporter
        self.note = note
        self.precision = precision  # the active model's: the upscaler runs in the same
        # The last upscaler loaded, with its folder's fingerprint: one changed is loaded again.
        self._loaded: tuple[tuple[Any, ...], Upscaler] | None = None

    def load(self, request: Request, size: tuple[int, int] | None = None) -> Upscaler:
        """The line's upscaler, loaded (and kept for the next line) on the device and in the
        precision the model gets, and refused now if the pictures' size does not suit it,
        before anything is drawn."""
        found = self.lookup.upscaler(request)
        assert found is not None
        name, folder = found
        key = (folder.resolve(), model_files.fingerprint(folder))
        if self._loaded is None or self._loaded[0] != key:
            self._loaded = None  # the old one's memory goes before the new one loads
            gc.collect()
            self._loaded = (key, self._load(name, folder))
        upscaler = self._loaded[1]
        if size is not None:
            upscaler.check_size(*size)
        return upscaler

    def _load(self, name: str, folder: Path) -> Upscaler:
        from invoke.backend.device import pick_device, pick_dtype, use_threads
        from invoke.backend.upscale import Upscaler

        use_threads(self.settings.threads)
        device = pick_device(self.settings.device)
        dtype = pick_dtype(self.precision(), device)
        started = time.monotonic()
        upscaler = Upscaler(folder, device, dtype, name=name, offload=self.settings.offload)
        self.note(
            f"upscaler {name} loaded ({upscaler.factor}x, "
            f"{upscaler.steps} steps a picture) in {time.monotonic() - started:.1f}s"
        )
        return upscaler

    def upscale(self, upscaler: Upscaler, image: Image.Image, request: Request) -> Image.Image:
        """The picture made larger, guided by the line's prompt as plain text."""
        assert request.upscale and request.seed is not None
        factor, strength = request.upscale
        words = request.parsed_prompt
        bar = self.reporter.progress(upscaler.steps, f"upscale {factor}x")
        try:
            return upscaler.upscale(
                image,
                prompt=words.plain,
                negative=words.negative.plain,
                seed=request.seed,
                strength=strength,
                on_step=lambda step, total: bar.advance(),
            )
        finally:
            bar.close()
