"""Intermediates (`--save_intermediates`): each step's latents and preview, then the strip of
all previews, in the image's own folder under `<outdir>/intermediates/`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from invoke import atomic
from invoke.errors import OutputError


class Writer(Protocol):
    """What the dumps need of the output folder (folder.OutputFolder)."""

    def ensure(self) -> Path: ...

    def write_bytes(self, name: str, data: bytes, *, folder: Path | None = None) -> Path: ...

    def write_png(self, image: Image.Image, name: str, *, folder: Path | None = None) -> Path: ...


class Intermediates:
    """Step dumps of one image: `step-NNNN.safetensors` + `step-NNNN.png`, then `steps.png`."""

    def __init__(self, outputs: Writer, folder: Path) -> None:
        self.outputs = outputs
        self.folder = folder
        self.previews: list[Image.Image] = []

    def _ensure(self) -> Path:
        self.outputs.ensure()
        try:
            # `intermediates/` and the image's folder in it: neither may be a link out
            atomic.make_folder(self.folder.parent)
            atomic.make_folder(self.folder)
        except atomic.NotOurs as err:
            raise OutputError(f"{err.filename}: {atomic.why(err)}") from None
        except OSError as err:
            raise OutputError(
                f"{self.folder}: cannot create the folder ({atomic.why(err)})"
            ) from None
        return self.folder

    def save_step(
        self, step: int, timestep: float | int, latents: np.ndarray, preview: Image.Image
    ) -> Path:
        """Save one step's latents (safetensors, step/timestep in its metadata) and its preview."""
        from safetensors.numpy import save

        folder = self._ensure()
        array = np.ascontiguousarray(np.asarray(latents))
        metadata = {"step": str(int(step)), "timestep": repr(float(timestep))}
        tensor_name = f"step-{int(step):04d}.safetensors"
        try:
            data = save({"latents": array}, metadata=metadata)
        except (ValueError, TypeError) as err:
            raise OutputError(
                f"{folder / tensor_name}: cannot store these latents ({err})"
            ) from None
        path = self.outputs.write_bytes(tensor_name, data, folder=folder)
        self.outputs.write_png(preview, f"step-{int(step):04d}.png", folder=folder)
        self.previews.append(preview.convert("RGB"))
        return path

    def finish(self) -> Path | None:
        """Write `steps.png`: all previews so far, left to right in step order. None if no steps."""
        if not self.previews:
            return None
        height = max(p.height for p in self.previews)
        strip = Image.new("RGB", (sum(p.width for p in self.previews), height))
        x = 0
        for p in self.previews:
            strip.paste(p, (x, 0))
            x += p.width
        return self.outputs.write_png(strip, "steps.png", folder=self._ensure())
