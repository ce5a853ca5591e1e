"""-U: the line's upscaler found, loaded once (kept for the next line until its folder
changes) and run on each picture, with a progress bar.

-U 2's latent upscaler takes the drawn picture's final latents instead of its pixels (no
decode-encode, as the diffusers guide chains it) when the model's VAE reads the same latents as
the upscaler's (`takes_latents`); else the pixels, said in a note. The line alone still remakes
the picture: it draws the same latents again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.backend.upscaler_kinds import LATENT_X2
from invoke.config import model_files
from invoke.config.libraries import describe_upscaler
from invoke.config.lookup import Lookup
from invoke.config.settings import Settings
from invoke.events import Reporter, Saved
from invoke.images import init_image_size, load_init_image
from invoke.latents_file import upscale_latents
from invoke.line.request import Request

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.job import Job
    from invoke.backend.upscale import Upscaler
    from invoke.outputs import OutputFolder
    from invoke.saving import Saver


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

    def takes_latents(
        self, upscaler: Upscaler, request: Request, job: Job, space: str | None
    ) -> bool:
        """Whether the line's pictures go to the upscaler as their final latents: the x2 latent
        upscaler, pictures that are their latents decoded (inpainting pastes pixels back, a
        --refiner's VAE decodes) and a model whose VAE reads `space`, the same latents as the
        upscaler's. When it cannot, a note says why (once a line)."""
        if upscaler.latent_space is None:  # the x4 upscaler takes pixels only
            return False
        why = None
        if job.mask is not None:
            why = "inpainting pastes the kept pixels back after decoding"
        elif request.refiner is not None:
            why = "the refiner's VAE decodes them"
        elif space != upscaler.latent_space:
            why = (
                f"its VAE ({upscaler.latent_space}) reads other latents than the model's "
                f"({space or 'not known'})"
            )
        if why is not None:
            self.note(f"-U 2: {upscaler.name} enlarges the pixels, not the latents: {why}")
        return why is None

    def upscale(
        self, upscaler: Upscaler, image: Image.Image, request: Request, latents: Any = None
    ) -> Image.Image:
        """The picture made larger, guided by the line's prompt as plain text; from `latents`,
        its final latents, when given (takes_latents)."""
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
                latents=latents,
            )
        finally:
            bar.close()

    # -- !fix FILE -U ---------------------------------------------------------------------------

    def upscale_file(
        self, request: Request, folder: OutputFolder, outdir: Path, saver: Saver, saved: list[Saved]
    ) -> None:
        """`!fix FILE -U`: FILE (request.init_img) enlarged, from its latents when it has them
        (file_latents), else its own pixels, and saved with the !fix line that makes it again."""
        assert request.init_img is not None
        source = Path(request.init_img)
        request, latents = self.file_latents(request, outdir, saver.files)  # before it loads
        upscaler = self.load(request)
        loaded = load_init_image(source, *init_image_size(source, 1), multiple=upscaler.multiple)
        for note in loaded.notes:
            self.note(f"{source.name}: {note}")
        if loaded.mask is not None:
            self.note(f"{source.name}: its transparency is not kept by the upscale")
        upscaler.check_size(*loaded.image.size)
        prefix = folder.reserve_prefix()
        saver.commands += 1
        large = self.upscale(upscaler, loaded.image, request, latents)
        saver.save(folder, prefix, large, request, command=request.to_fix_command(), saved=saved)

    def file_latents(
        self, request: Request, outdir: Path, files: list[Path]
    ) -> tuple[Request, Any]:
        """FILE's latents for `!fix FILE -U` (latents_file.upscale_latents), and the request
        naming their file; (request, None) for its pixels. Read from files alone (the upscaler's
        configs, FILE as upscale_file reads it), so --dry-run decides as the run does, and a
        file that cannot be used is refused before the upscaler loads."""
        found = self.lookup.upscaler(request)
        assert found is not None and request.init_img is not None
        kind, _, multiple = describe_upscaler(found[1])
        source = Path(request.init_img)

        def picture() -> Image.Image:
            return load_init_image(source, *init_image_size(source, 1), multiple=multiple).image

        space = model_files.latent_space(found[1]) if kind == LATENT_X2 else None
        upscaler = (space, model_files.cell(found[1]))
        request, latents, note = upscale_latents(request, outdir, files, picture, upscaler)
        if note is not None:
            self.note(note)
        return request, latents
