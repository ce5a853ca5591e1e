"""What the backend is asked to do, as plain values (no torch here: the session builds these).

One `Job` is one UNet batch: the same prompt and settings for every image, one `Noise` per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Noise:
    """An image's starting noise: the seed's noise, slerped toward each variation seed in turn."""

    seed: int
    variations: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Job:
    # Field order is the contract's (/work/contracts.md), so positional construction works too.
    prompt: str
    skip_normalize: bool
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
    log_tokenization: bool = False
    # --seamless: the axes ("x", "y") whose convolutions wrap around; () = ordinary zero padding.
    seamless_axes: tuple[str, ...] = ()

    @property
    def steps_taken(self) -> int:
        """Steps this job denoises: all for txt2img, int(strength * steps) for img2img."""
        if self.init_image is None:
            return self.steps
        return img2img_steps(self.steps, self.strength)


@dataclass(frozen=True)
class StepInfo:
    """Passed to `on_step` after each step; step 0 is the starting latents, before any step."""

    step: int
    total: int  # steps this job takes (step runs 0..total)
    timestep: int | float  # the timestep just denoised (for step 0: the one about to be)
    latents: Any  # torch.Tensor (batch, 4, h/8, w/8) on the model's device; not a copy


def img2img_steps(steps: int, strength: float) -> int:
    """Steps img2img actually takes: diffusers' int(strength * steps), exactly as InvokeAI did."""
    return int(strength * steps)
