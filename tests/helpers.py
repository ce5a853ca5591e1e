"""Test helpers shared by several test files (imported as `helpers`: tests/ is on sys.path)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from invoke.backend.job import Job, Noise
from invoke.errors import InvokeError
from invoke.request import Request


def readme_request(**changes: object) -> Request:
    """The README's example line as a Request, with `changes` on top."""
    fields: dict[str, object] = dict(
        prompt="a red circle on a blue background",
        steps=20,
        seed=42,
        width=64,
        height=64,
        cfg_scale=7.5,
        sampler="k_lms",
    )
    fields.update(changes)
    return Request(**fields)  # type: ignore[arg-type]


class FakeRunner:
    """A Runner that records the requests the shell or batch asks for; prompts containing a
    keyword misbehave the way a real run can (interrupt, crash, missing)."""

    def __init__(self, outdir: Path, stored: dict[str, str] | None = None) -> None:
        self.outdir = outdir
        self.requests: list[Request] = []
        self.stored = stored or {}

    def generate(self, request: Request) -> list[Path]:
        if "interrupt" in request.prompt:
            raise KeyboardInterrupt
        if "crash" in request.prompt:
            # Two lines: the front ends must still report it on one.
            raise RuntimeError("kaput\nsecond line")
        if "missing" in request.prompt:
            raise InvokeError("-I/--init_img: missing.png does not exist; give an image file")
        self.requests.append(request)
        return [self.outdir / f"{len(self.requests):06d}.png"]

    def canonical(self, request: Request) -> str:
        if "missing" in request.prompt:
            raise InvokeError("-I/--init_img: missing.png does not exist; give an image file")
        return f'"{request.prompt}" -s {request.steps or 50} -S {request.seed or 0}'

    def fetch(self, path: str) -> str:
        name = Path(path).name
        if name not in self.stored:
            raise InvokeError(f"{path}: no command stored in this PNG")
        return self.stored[name]


# -- the backend: jobs on the tiny models --------------------------------------------------------


def make_job(**changes: object) -> Job:
    """A small txt2img job (64x64, 4 k_euler steps, seed 42, a negative prompt), plus `changes`."""
    job = Job(
        prompt="a red circle [blue]",
        skip_normalize=False,
        steps=4,
        cfg_scale=7.5,
        sampler="k_euler",
        width=64,
        height=64,
        noises=(Noise(42),),
    )
    return replace(job, **changes)  # type: ignore[arg-type]


def pixels(images: list[Image.Image]) -> np.ndarray:
    """Images as one signed array, so differences between two runs do not wrap around."""
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def smooth_picture() -> Image.Image:
    """A 64x64 RGB gradient, so the VAE has something structured to encode."""
    y, x = np.mgrid[0:64, 0:64]
    return Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8))
