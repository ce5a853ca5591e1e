"""Stage 6: each picture written with the command that remakes it, and the record of what this
session made (the seeds for `-S -N`, the files for `-I -1`, the lines for `[N.M]`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import interrupts, outputs, plan
from invoke.config.lookup import Lookup
from invoke.errors import InvokeError
from invoke.events import Saved, Step
from invoke.latents_file import picture_digest, save_latents
from invoke.line.request import Request
from invoke.model_cache import ModelCache

if TYPE_CHECKING:
    from PIL import Image


class Saver:
    def __init__(self, models: ModelCache, lookup: Lookup, note: Callable[[str], None]) -> None:
        self.models = models
        self.lookup = lookup
        self.note = note
        self.seeds: list[int] = []  # every image's seed, in order: -S -1 is the last
        self.files: list[Path] = []  # every image written: -I -1 is the last
        self.commands = 0  # command lines that made images: the N of "[N.M]"
        self.finals: list[Any] = []  # the job's final latents, one a picture: --save_latents

    def save(
        self,
        folder: outputs.OutputFolder,
        prefix: str,
        image: Image.Image,
        request: Request,
        command: str | None = None,
        *,
        saved: list[Saved],
    ) -> Path:
        """Save with the request's command, or `command` (a !fix upscale: then the upscaler is
        the model that made it), then log it.

        The picture is added to `saved` (what the `Outputs:` block names) as soon as it is on
        disk, before the log is written, and Ctrl-C or SIGTERM wait until both are done: a
        picture that was saved is named whatever fails after it (a log it cannot write says so).
        """
        plain = command is None
        command = request.to_command() if plain else command
        model = self.models.entry.name if plain else str(request.upscaler)
        with interrupts.held():
            path = folder.save_image(
                image,
                request,
                prefix,
                model_id=model,
                model_hash=self.models.model_hash if plain else "",
                command=command,
                log=False,
                lora_hashes=self.lookup.lora_hashes(request) if plain else {},
                first_pass=self._first_pass(request) if plain else None,
            )
            assert request.seed is not None
            self.seeds.append(request.seed)
            self.files.append(path)
            saved.append(Saved(path, command, request.seed, image.size, model))
            folder.append_log(path, command)
            if plain and request.save_latents and self.finals:
                space = self.models.latent_space() or ""
                digest = picture_digest(image)
                save_latents(path, self.finals.pop(0)[None], model, space=space, digest=digest)
        return path

    def keep_final(self, step: Step) -> None:
        """A job's last step: its latents, one a picture, for save() to keep beside each."""
        if step.step == step.total and step.latents is not None:
            self.finals = list(step.latents)

    def final(self, index: int, count: int) -> Any:
        """The `index`th of the job's `count` pictures' final latents, (1, 4, h, w), for -U 2;
        an InvokeError when the job's last step brought none (upscaling the pixels instead
        would make another picture than the line's command remakes)."""
        if len(self.finals) != count:
            raise InvokeError(
                "-U 2: the job's final latents did not come back with its pictures, so they "
                "cannot be upscaled as the line's command says"
            )
        return self.finals[index][None]

    def _first_pass(self, request: Request) -> tuple[int, int] | None:
        """--hires_fix's first-pass size, which AUTOMATIC1111's `parameters` names as `Size`."""
        if not request.hires_fix:
            return None
        return plan.first_pass(request, self.models.native_size, self.models.size_multiple)

    def save_grid(
        self,
        folder: outputs.OutputFolder,
        prefix: str,
        images: list[Image.Image],
        requests: list[Request],
    ) -> None:
        # Each image is saved on its own too, so the grid's name says what it is.
        name = outputs.grid_name(prefix, requests)
        with interrupts.held():
            path = folder.save_grid(
                images,
                requests,
                prefix,
                model_id=self.models.entry.name,
                model_hash=self.models.model_hash,
                name=name,
                lora_hashes=self.lookup.lora_hashes(requests[0]),
            )
        self.note(f"grid: {path}")
