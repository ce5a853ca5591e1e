"""txt2img, img2img and inpainting for one job: starting latents, the loop, the pictures.

img2img follows diffusers' StableDiffusionImg2ImgPipeline step for step (the tests hold it to
that): the `-s` schedule is computed in full, its last int(strength * steps) steps are taken, and
the init image's latents are noised to the first of them.

--hires_fix (InvokeAI's txt2img2img) is two of these passes: txt2img at a smaller size, its
latents upscaled bilinearly, then img2img on them (_hires_fix).

--refiner (SDXL) is two passes on two models: the base's part of the schedule, cut where
diffusers' `denoising_end` cuts it, then the refiner's from the base's latents as they are, as
StableDiffusionXLImg2ImgPipeline's `denoising_start` takes them (_handoff, schedule).

Every family that runs our loop (SD 1.x/2.x, SDXL) runs this one; what differs is only its
`Conditioning`: the prompt's embeddings and its contributions to the UNet's arguments
(families/sdxl.py adds its pooled embeddings and time ids there). A job adds its own
contributions (JOB_CONTRIBUTIONS: its ControlNets, its image prompt), one module each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from invoke.backend import control, image_prompt, speed
from invoke.backend.denoise import Contribution, denoise
from invoke.backend.finite import check_latents
from invoke.backend.job import Job, StepInfo, img2img_steps, second_pass_noise
from invoke.backend.noise import image_noise
from invoke.backend.prompts import encode_prompt
from invoke.backend.schedulers import make_scheduler, set_steps
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.backend.model import Model, OnEvent

# A family's piece of the loop: (model, job, where -t's tokens go) -> (cond, uncond, its
# contributions to each UNet call). Everything else (noise, schedule, img2img, inpainting,
# decode) is shared.
Embedded = tuple[torch.Tensor, torch.Tensor, list[Contribution]]
Conditioning = Callable[["Model", Job, "OnEvent | None"], Embedded]
# A job's own contributions for a pass of n UNet calls, each None when the job asks for none.
JOB_CONTRIBUTIONS: tuple[Callable[[Model, Job, int], Contribution | None], ...] = (
    control.contribution,
    image_prompt.contribution,  # after the ControlNet: it reads no image embeddings
)


def sd_conditioning(model: Model, job: Job, on_event: OnEvent | None = None) -> Embedded:
    """SD 1.x/2.x: one text encoder's embeddings, once for the whole command (the passes of
    `-n` share them); the UNet takes nothing else."""
    cond, uncond = speed.prompt_embeddings(
        model,
        job,
        lambda: encode_prompt(model, job.prompt, job.log_tokenization, job.embeddings, on_event),
    )
    return cond, uncond, []


@torch.no_grad()
def generate(
    model: Model,
    job: Job,
    on_step: Callable[[StepInfo], None] | None = None,
    conditioning: Conditioning = sd_conditioning,
    on_event: OnEvent | None = None,
    refiner: Model | None = None,
) -> list[Image.Image]:
    """The job's pictures; with `refiner` (job.refiner's model) the base hands it the latents."""
    _check(model, job)

    def embedded(model: Model, job: Job) -> Embedded:
        return conditioning(model, job, on_event)

    if job.first_pass is not None:
        latents = _hires_fix(model, job, on_step, embedded)
    else:
        start = _start(model, job)
        if refiner is None:
            latents = _run_pass(model, job, on_step, embedded, start)
        else:
            latents = _handoff(model, refiner, job, on_step, embedded, start)
            model = refiner  # its VAE decodes, as diffusers' refiner pipeline does
    check_latents(latents, model.dtype, job)
    # Decode; inpainting pastes the kept pixels back so they come out identical.
    images = model.decode(latents)
    if job.mask is not None and job.init_image is not None:
        images = [Image.composite(image, job.init_image, job.mask) for image in images]
    return images


def _hires_fix(
    model: Model,
    job: Job,
    on_step: Callable[[StepInfo], None] | None,
    conditioning: Callable[[Model, Job], Embedded],
) -> torch.Tensor:
    """--hires_fix (InvokeAI's txt2img2img): txt2img at job.first_pass, the latents upscaled
    bilinearly to the job's size, then img2img on them at job.strength with the second pass's
    own noise. Both passes are plain jobs through _run_pass: one loop, and each pass's UNet shape
    gets its own compile decision and eager-time count (speed.py).
    """
    assert job.first_pass is not None
    width, height = job.first_pass
    first = replace(job, width=width, height=height, first_pass=None)
    second = replace(job, noises=tuple(second_pass_noise(n) for n in job.noises), first_pass=None)
    first_on_step = second_on_step = None
    if on_step is not None:
        total, done = job.steps_taken, job.steps

        def first_on_step(info: StepInfo) -> None:
            on_step(replace(info, total=total))

        def second_on_step(info: StepInfo) -> None:
            # Step 0 of the second pass is no step: the first pass's last one already ended.
            if info.step > 0:
                on_step(replace(info, step=done + info.step, total=total))

    small = _run_pass(model, first, first_on_step, conditioning, None)
    cell = model.size_multiple
    upscaled = upscale_latents(small, job.height // cell, job.width // cell, job.seamless_axes)
    return _run_pass(model, second, second_on_step, conditioning, upscaled)


def upscale_latents(
    latents: torch.Tensor, height: int, width: int, wrap: tuple[str, ...] = ()
) -> torch.Tensor:
    """Bilinear resize of (batch, c, h, w) latents to (height, width), as F.interpolate does it
    (align_corners=False: edges clamp), except that along a wrapped (--seamless) axis the edge
    interpolates toward the opposite edge, so latents that are a torus stay one."""
    out = latents.float()  # half-precision arithmetic is not on every device
    for dim, size, axis in ((2, height, "y"), (3, width, "x")):
        old = out.shape[dim]
        source = (torch.arange(size, device=out.device, dtype=torch.float32) + 0.5) * old / size
        source = source - 0.5
        if axis not in wrap:
            source = source.clamp(min=0)
        low = source.floor()
        frac = source - low
        low = low.long()
        high = low + 1
        if axis in wrap:
            low, high = low % old, high % old
        else:
            low, high = low.clamp(max=old - 1), high.clamp(max=old - 1)
        shape = [1] * out.ndim
        shape[dim] = size
        frac = frac.view(shape)
        out = out.index_select(dim, low) * (1 - frac) + out.index_select(dim, high) * frac
    return out.to(latents.dtype)


def _run_pass(
    model: Model,
    job: Job,
    on_step: Callable[[StepInfo], None] | None,
    conditioning: Callable[[Model, Job], Embedded],
    start: torch.Tensor | None,
    cut: Cut | None = None,
) -> torch.Tensor:
    """One denoising pass on the UNet speed.py picks for the job's shape; its eager time counts
    toward compiling that shape. Returns the final latents. `cut`: the base's or the refiner's
    part of a --refiner schedule."""
    unet = speed.unet_for(model, job)
    if unet is model.unet:
        with speed.timed(model, job):
            return _denoise_pass(model, job, on_step, conditioning, unet, start, cut)
    try:
        return _denoise_pass(model, job, on_step, conditioning, unet, start, cut)
    except Exception as err:
        if not speed.is_compile_error(err):
            raise
        # A compile that fails (no C compiler, an unsupported op) must not cost the image.
        speed.give_up_compiling(model, err)
    return _run_pass(model, job, on_step, conditioning, start, cut)


def _denoise_pass(
    model: Model,
    job: Job,
    on_step: Callable[[StepInfo], None] | None,
    conditioning: Callable[[Model, Job], Embedded],
    unet: Any,
    start: torch.Tensor | None,
    cut: Cut | None = None,
) -> torch.Tensor:
    """txt2img (start None) or img2img from `start`, latents (1 or batch, 4, h, w); a refiner's
    part (cut.refiner) goes on from `start` as it is."""
    # 1. The schedule; img2img keeps its tail, a --refiner schedule its part.
    scheduler = make_scheduler(job.sampler, model.scheduler_config, job.noises[0].seed)
    timesteps, steps = schedule(scheduler, model, job, start is not None, cut)

    # 2. The conditioning: the job's contributions (its ControlNet), then the family's prompt
    # embeddings (cached per command) and contributions; a ControlNet goes after the family's
    # at each UNet call, so it gets the same extras (SDXL's) as the UNet.
    calls = len(timesteps)
    asked = [c for make in JOB_CONTRIBUTIONS if (c := make(model, job, calls)) is not None]
    cond, uncond, contributions = conditioning(model, job)

    # 3. Per-image noise from CPU generators, then one batch on the device.
    shape = (4, job.height // model.size_multiple, job.width // model.size_multiple)
    drawn = [image_noise(n, shape) for n in job.noises]
    noise = torch.cat([n for n, _ in drawn]).to(model.device, model.dtype)
    generators = [g for _, g in drawn]

    # 4. Starting latents: pure noise, or the init latents noised to the first timestep taken.
    # An inpainting UNet at full strength starts from pure noise, as diffusers' pipeline does.
    batch = len(job.noises)
    blend = condition = None
    if model.inpainting:
        condition = _inpainting_condition(model, job).expand(batch, -1, -1, -1)
    if cut is not None and cut.refiner:
        assert start is not None
        latents = start  # diffusers' denoising_start: the base's latents, no noise added
    elif start is None or (model.inpainting and job.strength >= 1):
        latents = noise * scheduler.init_noise_sigma
    else:
        init = start.expand(batch, -1, -1, -1)
        latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))
        if job.mask is not None and not model.inpainting:
            blend = _known_region_blend(model, scheduler, init, noise, timesteps, job.mask)

    # 5. Denoise.
    return denoise(
        unet, scheduler, latents, timesteps, steps, cond, uncond, job.cfg_scale,
        generators, on_step, blend, condition, [*contributions, *asked],
    )  # fmt: skip


@dataclass(frozen=True)
class Cut:
    """A --refiner schedule's split: the base runs the timesteps at or above the cutoff `at`
    (a fraction of the training timesteps), the refiner (refiner=True) those below it."""

    at: float
    refiner: bool = False


def schedule(
    scheduler: Any, model: Model, job: Job, img2img: bool, cut: Cut | None = None
) -> tuple[torch.Tensor, int]:
    """(timesteps to run, the steps they make) for a pass, the scheduler set up for them.

    As diffusers: img2img keeps the last int(strength * steps) steps; a base with denoising_end
    keeps those at or above the cutoff; a refiner with denoising_start takes the whole schedule's
    timesteps below it (strength plays no part), one more on a second-order sampler that would
    otherwise stop between its two evaluations.
    """
    set_steps(scheduler, job.sampler, job.steps, model.device)
    order = scheduler.order
    if cut is not None and cut.refiner:
        count = int((scheduler.timesteps < _cutoff(scheduler, cut.at)).sum())
        if order == 2 and count % 2 == 0:
            count += 1
        begin = len(scheduler.timesteps) - count
    else:
        steps = img2img_steps(job.steps, job.strength) if img2img else job.steps
        begin = (job.steps - steps) * order
    timesteps = scheduler.timesteps[begin:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    if cut is None:
        return timesteps, steps
    if not cut.refiner:
        timesteps = timesteps[: int((timesteps >= _cutoff(scheduler, cut.at)).sum())]
    return timesteps, -(-len(timesteps) // order)


def _cutoff(scheduler: Any, fraction: float) -> int:
    train = scheduler.config.num_train_timesteps
    return round(train - fraction * train)


def _handoff(
    model: Model,
    refiner: Model,
    job: Job,
    on_step: Callable[[StepInfo], None] | None,
    conditioning: Callable[[Model, Job], Embedded],
    start: torch.Tensor | None,
) -> torch.Tensor:
    """--refiner: the base's part of the schedule, then the refiner's from its latents (no
    decode between), each with its own conditioning; the steps count on through both."""
    assert job.refiner is not None
    at = job.refiner.start
    base_steps, refiner_steps = handoff_steps(model, job)
    base_on_step = refiner_on_step = None
    if on_step is not None:
        total = base_steps + refiner_steps

        def base_on_step(info: StepInfo) -> None:
            on_step(replace(info, total=total))

        def refiner_on_step(info: StepInfo) -> None:
            if info.step > 0:  # its step 0 is the base's last step
                on_step(replace(info, step=base_steps + info.step, total=total))

    latents = _run_pass(model, job, base_on_step, conditioning, start, Cut(at))
    return _run_pass(refiner, job, refiner_on_step, conditioning, latents, Cut(at, refiner=True))


def handoff_steps(model: Model, job: Job) -> tuple[int, int]:
    """(the base's steps, the refiner's) of a --refiner job; InvokeError when either is none."""
    assert job.refiner is not None
    at = job.refiner.start
    img2img = job.init_image is not None
    counts = []
    for cut in (Cut(at), Cut(at, refiner=True)):
        scheduler = make_scheduler(job.sampler, model.scheduler_config, 0)
        counts.append(schedule(scheduler, model, job, img2img, cut)[1])
    for who, count in zip(("the base", "the refiner"), counts, strict=True):
        if count == 0:
            raise InvokeError(
                f"--refiner_start: {at:g} with -s {job.steps}"
                + (f" -f {job.strength:g}" if img2img else "")
                + f" leaves {who} no step; give more steps or move --refiner_start"
            )
    return counts[0], counts[1]


def _start(model: Model, job: Job) -> torch.Tensor | None:
    """img2img's starting latents: the job's own (--init_latents), else its init image's."""
    if job.init_latents is not None:
        return torch.as_tensor(job.init_latents).to(model.device, model.dtype)
    return None if job.init_image is None else encode_image(model, job.init_image)


def encode_image(model: Model, image: Image.Image) -> torch.Tensor:
    """Init latents (1, 4, h, w): the VAE posterior's mean, so an image always gives the same."""
    return _encode(model, _pixels(image))


def _pixels(image: Image.Image) -> torch.Tensor:
    """(1, 3, h, w) in [-1, 1], as diffusers' image processor makes them."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None] * 2 - 1


def _encode(model: Model, pixels: torch.Tensor) -> torch.Tensor:
    # vae_run: a float16 VAE that gives NaN (SDXL's does) encodes in float32 instead.
    posterior = model.vae_run("encode", pixels)
    return (posterior.mean * model.vae.config.scaling_factor).to(model.dtype)


def _inpainting_condition(model: Model, job: Job) -> torch.Tensor:
    """An inpainting UNet's extra input (1, 5, h, w): the mask, then the masked image's latents.

    Without a mask everything is redrawn (txt2img and img2img on an inpainting model).
    """
    size = (job.height, job.width)
    if job.mask is None:
        redraw = torch.ones((1, 1, *size))
    else:
        redraw = torch.from_numpy(np.asarray(job.mask.convert("L"), dtype=np.float32) / 255.0)
        redraw = (redraw >= 0.5).float()[None, None]
    pixels = torch.zeros((1, 3, *size)) if job.init_image is None else _pixels(job.init_image)
    masked_latents = _encode(model, pixels * (redraw < 0.5))
    latent_size = masked_latents.shape[-2:]
    mask = torch.nn.functional.interpolate(redraw, size=latent_size).to(model.device, model.dtype)
    return torch.cat([mask, masked_latents], dim=1)


def _known_region_blend(
    model: Model,
    scheduler: Any,
    init: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    mask: Image.Image,
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """After step i, the kept region becomes the init latents noised to the next timestep.

    A latent cell is redrawn if any pixel it covers is (a max-pool of the mask): the cells at the
    edge of the hole are painted, and the pixel paste after decoding restores what is kept.
    """
    redraw = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0 >= 0.5)
    cell = model.size_multiple
    redraw = torch.nn.functional.max_pool2d(redraw[None, None].float(), cell, cell)
    redraw = redraw.to(model.device, model.dtype)
    last = len(timesteps) - 1

    def blend(i: int, latents: torch.Tensor) -> torch.Tensor:
        # After the last step the known region is the clean init latents.
        known = init if i == last else scheduler.add_noise(init, noise, timesteps[i + 1 : i + 2])
        return redraw * latents + (1 - redraw) * known

    return blend


def _check(model: Model, job: Job) -> None:
    multiple = model.size_multiple
    for switch, side in (("-W/--width", job.width), ("-H/--height", job.height)):
        if side <= 0 or side % multiple:
            raise InvokeError(f"{switch}: {side} is not a positive multiple of {multiple}")
    if not job.noises:
        raise InvokeError("nothing to generate: the job has no seeds")
    if job.mask is not None and job.init_image is None:
        raise InvokeError("-M/--init_mask: a mask needs an init image (-I)")
    for what, image in (("init image", job.init_image), ("mask", job.mask)):
        if image is not None and image.size != (job.width, job.height):
            width, height = image.size
            raise InvokeError(
                f"{what}: {width}x{height} does not match -W {job.width} -H {job.height}"
            )
    if job.first_pass is not None:
        if job.init_image is not None:
            raise InvokeError("--hires_fix: makes a new picture; it cannot start from -I")
        for switch, side, first in (
            ("-W/--width", job.width, job.first_pass[0]),
            ("-H/--height", job.height, job.first_pass[1]),
        ):
            if not 0 < first <= side or first % multiple:
                raise InvokeError(
                    f"--hires_fix: first pass side {first} is not a positive multiple of "
                    f"{multiple} no larger than {switch} {side}"
                )
    img2img = job.init_image is not None or job.first_pass is not None
    if img2img and img2img_steps(job.steps, job.strength) == 0:
        message = _zero_steps_message(job.steps, job.strength)
        raise InvokeError(message if job.init_image is not None else f"--hires_fix: {message}")


def _zero_steps_message(steps: int, strength: float) -> str:
    """Say which -f (for these -s) or which -s (for this -f) would take at least one step."""
    min_strength = math.ceil(100 / steps) / 100
    while img2img_steps(steps, min_strength) < 1:
        min_strength += 0.01
    fix = f"use -f {min_strength:.2f} or more"
    if strength > 0:
        min_steps = math.ceil(1 / strength)
        while img2img_steps(min_steps, strength) < 1:
            min_steps += 1
        fix += f", or -s {min_steps} or more"
    return (
        f"-f/--strength: {strength:g} with -s {steps} takes int({strength:g} x {steps}) = 0 steps; "
        f"{fix}"
    )
