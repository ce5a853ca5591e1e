"""The sampling loop: classifier-free guidance over a diffusers scheduler, with a step callback.

Whatever else conditions the UNet comes in as contributions: at each UNet call each one is given
the call's input (latents, timestep, text embeddings: both halves of classifier-free guidance) and
returns extra UNet arguments. SDXL's pooled embeddings and time ids (families/sdxl.py) and a
ControlNet's residuals (control.py) are two; another kind of control is one more, in a module of
its own. Residuals from several contributions add up, as diffusers' MultiControlNetModel adds
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from invoke.backend.job import StepInfo
from invoke.backend.schedulers import takes_generator

# Called after each scheduler step with (index into timesteps, latents); returns the latents to go
# on with. Inpainting uses it to put the known region back.
Blend = Callable[[int, torch.Tensor], torch.Tensor]

RESIDUALS = ("down_block_additional_residuals", "mid_block_additional_residual")


class Contribution(Protocol):
    """Extra UNet arguments for one UNet call."""

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """The UNet's input `sample`, `timestep` and text embeddings `context` of this call, and
        what the contributions before this one gave (a ControlNet reads SDXL's added conditions
        from it) -> more UNet keyword arguments."""
        ...


def contributed(
    contributions: Sequence[Contribution],
    sample: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
) -> dict[str, Any]:
    """The UNet's extra keyword arguments for one call, from each contribution in turn."""
    extra: dict[str, Any] = {}
    for contribute in contributions:
        for key, value in contribute(sample, timestep, context, extra).items():
            extra[key] = _add(extra[key], value) if key in RESIDUALS and key in extra else value
    return extra


def _add(old: Any, new: Any) -> Any:
    if isinstance(old, tuple):
        return tuple(a + b for a, b in zip(old, new, strict=True))
    return old + new


@torch.no_grad()
def denoise(
    unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    steps: int,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    cfg_scale: float,
    generators: list[torch.Generator],
    on_step: Callable[[StepInfo], None] | None = None,
    blend: Blend | None = None,
    condition: torch.Tensor | None = None,
    contributions: Sequence[Contribution] = (),
) -> torch.Tensor:
    """Run `timesteps` (`steps` user-visible steps) from `latents`; return the final latents.

    Second-order samplers evaluate the UNet twice per step, so `timesteps` can be longer than
    `steps`; a step ends where diffusers' progress bar would advance. `condition`: extra UNet
    input channels (an inpainting UNet's mask and masked image), the same at every step;
    `contributions`: extra UNet arguments at each call (above).
    """
    batch = latents.shape[0]
    guided = cfg_scale > 1  # as diffusers: no unconditional pass when guidance cannot change it
    context = cond.expand(batch, -1, -1)
    if guided:
        context = torch.cat([uncond.expand(batch, -1, -1), context])
    if condition is not None:
        condition = torch.cat([condition] * 2) if guided else condition
    extra = {"generator": generators} if takes_generator(scheduler) else {}
    # The timestep values for the callback, read once here: no device sync inside the loop.
    timestep_values = timesteps.tolist()
    # Schedulers index host-side tables with t and branch on it (DDIM/PNDM: `if prev_t >= 0`):
    # a device t would make each step wait for the GPU, so they get host copies. The UNet gets
    # float32 on the device, one dtype for every sampler (one compiled graph); its timestep
    # embedding casts to float32 first, so the numbers are the same.
    host_timesteps = timesteps.cpu()
    unet_timesteps = timesteps.to(latents.device, torch.float32)
    warmup = len(timesteps) - steps * scheduler.order
    if on_step is not None:
        on_step(StepInfo(0, steps, timestep_values[0], latents))
    step = 0
    for i, t in enumerate(host_timesteps):
        model_input = torch.cat([latents] * 2) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        if condition is not None:
            model_input = torch.cat([model_input, condition], dim=1)
        timestep = unet_timesteps[i]
        added = contributed(contributions, model_input, timestep, context)
        noise_pred = unet(
            model_input, timestep, encoder_hidden_states=context, return_dict=False, **added
        )[0]
        if guided:
            uncond_pred, cond_pred = noise_pred.chunk(2)
            noise_pred = uncond_pred + cfg_scale * (cond_pred - uncond_pred)
        latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        if blend is not None:
            latents = blend(i, latents)
        if i == len(timesteps) - 1 or (i + 1 > warmup and (i + 1) % scheduler.order == 0):
            step += 1
            if on_step is not None:
                on_step(StepInfo(step, steps, timestep_values[i], latents))
    return latents
