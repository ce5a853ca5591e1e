"""-U: Stable Diffusion's upscalers, through diffusers' own pipelines.

The diffusers image-to-image guide chains a picture into `stabilityai/sd-x2-latent-upscaler`
(StableDiffusionLatentUpscalePipeline: 2x, redrawn in latent space) and
`stabilityai/stable-diffusion-x4-upscaler` (StableDiffusionUpscalePipeline: 4x, conditioned on the
low-resolution pixels). Both are models of their own, with their own VAE and text encoder, so
they take the finished picture (its 8-bit pixels, as the PNG holds them), the prompt as plain
text and the image's seed, and give the larger picture. diffusers owns their loops.

The x2 latent upscaler can take the model's final latents instead of the picture (`latents=`),
as the guide's chain `output_type="latent"` -> `image=latents` does: no decode-encode. That is
for a model whose VAE reads the same latents as the upscaler's (`latent_space`, the same words
for both); the caller decides (upscaling.py), this module only runs it.

`strength` is InvokeAI's -U strength: the upscaler's picture blended over a plain Lanczos
enlargement, 1 = the upscaler's alone, 0 = the enlargement alone.

An Upscaler knows itself from what it loads: its pipeline class (the folder's model_index.json),
its factor and the sides it takes (its VAE's and UNet's configs). The session reads the same from
the files before loading (config.libraries.describe_upscaler), to refuse a line before anything
is drawn; both by upscaler_kinds.sides.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from invoke.backend.components import PART_ERRORS, quiet_loading
from invoke.backend.finite import pictures
from invoke.backend.pipelines import check_pipeline, place
from invoke.backend.schedulers import PREDICTION_TYPES, schedule_problem
from invoke.backend.upscaler_kinds import LATENT_X2, PIXEL_X4, latent_space, sides
from invoke.errors import InvokeError, ModelError

# What an upscaler's schedulers may predict (the latent upscaler's predicts the picture).
ANY = (*PREDICTION_TYPES, "sample")

# The steps and guidance each is run at: the latent upscaler's model card uses 20 steps without
# guidance; the x4 upscaler, diffusers' defaults (75 steps, guidance 9, noise level 20).
SETTINGS: dict[str, dict[str, Any]] = {
    LATENT_X2: {"num_inference_steps": 20, "guidance_scale": 0.0},
    PIXEL_X4: {"num_inference_steps": 75, "guidance_scale": 9.0, "noise_level": 20},
}


class Upscaler:
    """A loaded upscaler pipeline, on the device and in the dtype of the model it follows."""

    def __init__(
        self,
        folder: Path,
        device: torch.device,
        dtype: torch.dtype,
        *,
        name: str = "",
        offload: bool = False,
    ) -> None:
        self.folder = folder
        self.name = name or folder.name  # as the line named it, for messages
        self.kind = _kind(folder)
        self.device = device
        self.dtype = dtype
        self.pipeline = _load(folder, self.kind, device, dtype, offload)
        pipe = self.pipeline
        self.factor, self.multiple = sides(self.kind, pipe.vae.config, pipe.unet.config)
        # The latents it takes in place of a picture (the x2 latent upscaler's only), in words.
        self.latent_space: str | None = None
        if self.kind == LATENT_X2:
            self.latent_space = latent_space(type(pipe.vae).__name__, pipe.vae.config)

    @property
    def steps(self) -> int:
        return SETTINGS[self.kind]["num_inference_steps"]

    def check_size(self, width: int, height: int) -> None:
        """An InvokeError unless the upscaler takes a picture of this size."""
        if width % self.multiple or height % self.multiple:
            raise InvokeError(
                f"-U {self.factor}: the upscaler {self.name} takes sides that are "
                f"multiples of {self.multiple}; {width}x{height} is not (give -W/-H that are)"
            )

    @torch.no_grad()
    def upscale(
        self,
        image: Image.Image,
        *,
        prompt: str,
        negative: str,
        seed: int,
        strength: float,
        on_step: Callable[[int, int], None] | None = None,
        latents: Any = None,
    ) -> Image.Image:
        """`image` `factor` times larger. on_step(step, total) after each step. `latents`: the
        (1, 4, h, w) final latents `image` was decoded from, upscaled in its place (the x2 latent
        upscaler only); `image` is still what -U's strength blends over."""
        width, height = image.size
        self.check_size(width, height)
        source: Any = image.convert("RGB")
        if latents is not None:
            assert self.latent_space is not None, "only the latent upscaler takes latents"
            source = torch.as_tensor(latents).to(self.device, self.dtype)
        settings = SETTINGS[self.kind]

        def callback(step: int, _t: Any, _latents: Any) -> None:
            if on_step is not None:
                on_step(step + 1, self.steps)

        from invoke.backend.schedulers import numpy_quiet
        from invoke.backend.speed import free_memory, is_out_of_memory

        generator = torch.Generator("cpu").manual_seed(seed)
        try:
            with numpy_quiet():
                out = self.pipeline(
                    prompt=prompt,
                    negative_prompt=negative or None,
                    image=source,
                    generator=generator,
                    callback=callback,
                    output_type="np",  # made pictures here, where NaN is caught (finite.py)
                    **settings,
                )
        except (torch.OutOfMemoryError, RuntimeError, MemoryError) as err:
            if not is_out_of_memory(err):
                raise
            out = None
        if out is None:  # outside the except clause, so the failed call's tensors are freed
            free_memory()
            smaller = "-U 2, " if self.factor > 2 else ""
            raise InvokeError(
                f"-U {self.factor}: out of memory upscaling {width}x{height} to "
                f"{width * self.factor}x{height * self.factor} on {self.device}; try "
                f"{smaller}a smaller -W/-H, or --offload"
            )
        what = f"-U {self.factor}: the upscaler {self.name}"
        upscaled = pictures(out.images, what, self.dtype, "the upscaler itself")[0]
        size = (width * self.factor, height * self.factor)
        if upscaled.size != size:  # never seen; a model of another shape would do it
            raise InvokeError(
                f"-U {self.factor}: the upscaler {self.name} made {upscaled.size[0]}x"
                f"{upscaled.size[1]} of {width}x{height}, not {self.factor}x; is it a "
                f"{self.factor}x upscaler?"
            )
        return blend(image, upscaled, strength)


def blend(original: Image.Image, upscaled: Image.Image, strength: float) -> Image.Image:
    """InvokeAI's -U strength: `upscaled` over `original` enlarged by Lanczos to its size."""
    if strength >= 1:
        return upscaled
    plain = original.convert("RGB").resize(upscaled.size, Image.Resampling.LANCZOS)
    return Image.blend(plain, upscaled, strength)


def _check_settings(folder: Path, pipe: Any) -> None:
    """The config values diffusers' upscale loops rely on, each refused in one line naming its
    file (as loading.check_settings does for models): not a library error halfway through."""
    for part in ("scheduler", "low_res_scheduler"):
        scheduler = getattr(pipe, part, None)
        problem = None if scheduler is None else schedule_problem(dict(scheduler.config), ANY)
        if problem is not None:
            raise ModelError(f"upscaler {folder}: {part}/scheduler_config.json: {problem}")
    scale = pipe.vae.config.scaling_factor
    if not isinstance(scale, int | float) or not (math.isfinite(scale) and scale > 0):
        raise ModelError(
            f"upscaler {folder}: vae/config.json has scaling_factor {scale!r}; it must be a "
            "number above 0"
        )


def _kind(folder: Path) -> str:
    """The folder's pipeline class, one of SETTINGS'."""
    try:
        kind = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))["_class_name"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"upscaler {folder}: cannot read its model_index.json ({err})") from err
    if kind not in SETTINGS:
        raise ModelError(f"upscaler {folder}: is a {kind}, not a {LATENT_X2} or {PIXEL_X4}")
    return str(kind)


def _load(folder: Path, kind: str, device: torch.device, dtype: torch.dtype, offload: bool) -> Any:
    import diffusers

    options: dict[str, Any] = {
        "dtype": dtype,
        "local_files_only": True,
        "use_safetensors": True,
        "low_cpu_mem_usage": False,  # without accelerate, the same thing minus a long warning
    }
    if (
        not (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        and (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    ):
        options["variant"] = "fp16"  # a hub repo downloaded with only its fp16 weights
    try:
        with quiet_loading():
            pipe = getattr(diffusers, kind).from_pretrained(folder, **options)
    except PART_ERRORS as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"upscaler {folder}: cannot load it ({first})") from err
    _check_settings(folder, pipe)
    check_pipeline(pipe, "upscaler", folder, dtype)
    place(pipe, device, offload, f"upscaler {folder}")
    return pipe
