"""What the backend is asked to do, as plain values (no torch here: the session builds these).

One `Job` is one UNet batch: the same prompt and settings for every image, one `Noise` per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from invoke.line.prompt import Prompt


@dataclass(frozen=True)
class Noise:
    """An image's starting noise: the seed's noise, slerped toward each variation seed in turn."""

    seed: int
    variations: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Lora:
    """A LoRA file to merge into the model's weights for a job, at `weight` (1 = as trained)."""

    name: str  # as the prompt named it, for messages
    path: str
    weight: float = 1.0
    # (size, modification time in ns) as the session found the file: one changed on disk is
    # another LoRA, merged again (the model keeps a merge while the jobs' LoRAs are equal).
    stamp: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class EmbeddingFile:
    """A textual inversion embedding that a prompt's `<name>` stands for, and its file."""

    name: str  # the trigger's name, without the angle brackets
    path: str
    # (size, modification time in ns) as the session found the file: one changed on disk is
    # another embedding, read again, and no cached prompt embedding of the old one is reused.
    stamp: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Control:
    """A ControlNet and its conditioning image (an edge map, a depth map, a pose...) for a job."""

    name: str  # as the line named it, for messages
    path: str  # the weights file in the ControlNet's diffusers folder
    image: Image.Image  # RGB, the job's width x height (a smaller --hires_fix pass scales it)
    weight: float = 1.0  # how strongly its residuals are added (diffusers' conditioning scale)
    # The part of the steps it acts on, as fractions of the steps taken: 0 and 1 = all of them.
    start: float = 0.0
    end: float = 1.0
    # (size, modification time in ns) of its weights file: a file changed on disk is loaded again.
    stamp: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class ImagePrompt:
    """--ip_adapter: an IP-Adapter and the picture it shows the UNet (an image prompt)."""

    name: str  # as the line named it, for messages
    path: str  # the adapter's .safetensors file (image_proj.* and ip_adapter.* weights)
    encoder: str  # its CLIP image encoder's folder (CLIPVisionModelWithProjection)
    image: Image.Image  # RGB, as read (the image encoder's processor sizes it)
    weight: float = 1.0  # the adapter's scale (diffusers' set_ip_adapter_scale)
    # (size, modification time in ns) of the adapter file: a file changed on disk is read again.
    stamp: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Refiner:
    """--refiner: an SDXL refiner that takes the base's latents part way through the schedule
    (diffusers' denoising_end on the base, denoising_start on the refiner)."""

    name: str  # a models.yaml name or a path, as the line gave it
    start: float = 0.8  # the fraction of the schedule (in training timesteps) the base runs


@dataclass(frozen=True)
class Job:
    """One UNet batch: the same prompt and settings for every image, one Noise per image. Plain
    values only (the prompt read, images as PIL), so a Job pickles and another process that has
    the model loaded draws the same pixels from it."""

    # The prompt as read (sub-prompts, weights, the negative prompt; -x inside it). Its LoRA
    # references are found files in `loras`, its `<name>` words found files in `embeddings`.
    prompt: Prompt
    steps: int
    cfg_scale: float
    sampler: str
    width: int
    height: int
    noises: tuple[Noise, ...]
    init_image: Image.Image | None = None  # RGB, width x height
    mask: Image.Image | None = None  # mode L, same size; 255 = redraw, 0 = keep
    strength: float = 0.75  # img2img only
    intermediate_every: int = 0  # 0: the caller wants no intermediates
    intermediates: str = "preview"  # how a kept step is pictured: "preview" or "decode"
    log_tokenization: bool = False
    # --seamless: the axes ("x", "y") whose convolutions wrap around; () = ordinary zero padding.
    seamless_axes: tuple[str, ...] = ()
    # --hires_fix: (width, height) of the first, smaller txt2img pass; its latents are upscaled
    # to width x height and redrawn img2img at `strength`. None: one pass (hires_first_pass).
    first_pass: tuple[int, int] | None = None
    # LoRAs the prompt named (withLora/<lora:>), as files found.
    loras: tuple[Lora, ...] = ()
    # Embeddings the prompt's `<name>` words stand for; the prompt keeps the `<name>` text.
    embeddings: tuple[EmbeddingFile, ...] = ()
    # --controlnet with --control_image: the UNet is guided by a ControlNet's residuals.
    control: Control | None = None
    # Several --controlnet units: the second and later ones; their residuals add to the first's.
    more_controls: tuple[Control, ...] = ()
    # --refiner NAME --refiner_start F: the base hands its latents to this refiner at F.
    refiner: Refiner | None = None
    # --latents: img2img starts from these (1, 4, h, w) latents, a previous picture's final ones,
    # instead of encoding init_image (which still gives the size); None: encode it. (Last, so
    # that callers giving the fields above by position are not shifted.)
    init_latents: Any = None
    # --ip_adapter NAME --ip_image FILE: an image prompt through an IP-Adapter (after
    # init_latents for the same reason).
    image_prompt: ImagePrompt | None = None

    @property
    def controls(self) -> tuple[Control, ...]:
        """Every ControlNet of the job, in the line's order."""
        return ((self.control,) if self.control is not None else ()) + self.more_controls

    @property
    def steps_taken(self) -> int:
        """Steps this job denoises: all for txt2img, int(strength * steps) for img2img, both
        added up for --hires_fix's two passes."""
        if self.first_pass is not None:
            return self.steps + img2img_steps(self.steps, self.strength)
        if self.init_image is None:
            return self.steps
        return img2img_steps(self.steps, self.strength)


@dataclass(frozen=True)
class StepInfo:
    """Passed to `on_step` after each step; step 0 is the starting latents, before any step."""

    step: int
    # Steps this job takes (step runs 0..total). With --hires_fix the count runs on through both
    # passes: steps 1..s are the first pass (smaller latents), the rest the second pass.
    total: int
    timestep: int | float  # the timestep just denoised (for step 0: the one about to be)
    latents: Any  # torch.Tensor (batch, 4, h/8, w/8) on the model's device; not a copy


def img2img_steps(steps: int, strength: float) -> int:
    """Steps img2img actually takes: diffusers' int(strength * steps), exactly as InvokeAI did."""
    return int(strength * steps)


def hires_first_pass(
    width: int, height: int, native: tuple[int, int], multiple: int
) -> tuple[int, int] | None:
    """--hires_fix's first-pass size for a width x height picture, or None for one pass.

    As InvokeAI 2.2/2.3's txt2img2img: the native area (native width x height) at the picture's
    aspect ratio, the shorter side kept at least half the native one (so a wide panorama does not
    start as a thin strip), rounded down to the latent cell. Never larger than the picture: a
    picture no larger than native (by area) is drawn in one pass, as without --hires_fix.
    """
    native_w, native_h = native
    if width * height <= native_w * native_h:
        return None
    scale = math.sqrt(native_w * native_h / (width * height))
    scale = max(scale, (min(native_w, native_h) / 2) / min(width, height))
    scale = min(scale, 1.0)
    first = (
        max(multiple, int(width * scale) // multiple * multiple),
        max(multiple, int(height * scale) // multiple * multiple),
    )
    return None if first == (width, height) else first


def second_pass_noise(noise: Noise) -> Noise:
    """The noise --hires_fix's second pass adds to the upscaled latents: the image's own recipe
    (seed, variation chain) with each seed mapped to another by a fixed one-to-one function.

    It depends on nothing but the image's noise, so image k of `-n 8` is the same picture as its
    seed alone; reusing the first pass's noise instead would correlate the two passes.
    """
    return Noise(_second_seed(noise.seed), tuple((_second_seed(s), w) for s, w in noise.variations))


def _second_seed(seed: int) -> int:
    # An odd multiplier mod 2**32 is a bijection: two images never share second-pass noise.
    return (seed * 0x9E3779B1 + 0x7F4A7C15) % 2**32
