"""SDXL base and refiner through our own sampling loop: the same switches as SD 1.x/2.x.

What SDXL adds, as diffusers' StableDiffusionXL pipelines do it (they are the test oracle):
- two text encoders (CLIP ViT-L and OpenCLIP bigG); the UNet reads their penultimate hidden
  states side by side, and the pooled, projected output of the second one;
- "time ids", the micro-conditioning on sizes: (original h, w, crop top, left, target h, w) for
  the base; the refiner has only the second encoder and takes an aesthetic score instead of the
  target size (6 for the prompt, 2.5 for the negative prompt);
- the base model's empty negative prompt is zeros, not the encoding of "".
Variations, seeds, samplers, CFG, img2img, masks and the step callback are the SD path's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from invoke.backend.denoise import denoise
from invoke.backend.generate import _check, _inpainting_condition, _known_region_blend, _pixels
from invoke.backend.job import Job, StepInfo, img2img_steps
from invoke.backend.noise import image_noise
from invoke.backend.prompts import _text, token_ids
from invoke.backend.schedulers import make_scheduler, numpy_quiet

if TYPE_CHECKING:
    from invoke.backend.models import Model

AESTHETIC_SCORE = 6.0
NEGATIVE_AESTHETIC_SCORE = 2.5
# A least-squares latent->RGB fit for SDXL's VAE (the one ComfyUI and InvokeAI use for previews).
SDXL_LATENT_RGB = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


def _encoders(model: Model) -> list[tuple[Any, Any]]:
    pairs = [(model.tokenizer, model.text_encoder), (model.tokenizer_2, model.text_encoder_2)]
    return [(t, e) for t, e in pairs if e is not None]


def embed_text(model: Model, text: str, log_tokenization: bool = False) -> tuple[Any, Any]:
    """(hidden states (1, 77, dim1 + dim2), pooled (1, proj)) for one piece of text."""
    hidden = []
    pooled = None
    for n, (tokenizer, encoder) in enumerate(_encoders(model)):
        kept, dropped = token_ids(tokenizer, text)
        if log_tokenization and n == 0:
            print(f">> Tokens ({len(kept)}): {_text(tokenizer, kept)}")
            if dropped:
                print(f">> Tokens dropped ({len(dropped)}): {_text(tokenizer, dropped)}")
        ids = [tokenizer.bos_token_id, *kept, tokenizer.eos_token_id]
        ids += [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(ids))
        out = encoder(torch.tensor([ids], device=model.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        if out[0].ndim == 2:  # the projected, pooled output (CLIPTextModelWithProjection)
            pooled = out[0]
    return torch.cat(hidden, dim=-1), pooled


@torch.no_grad()
def encode_prompt(
    model: Model, prompt: str, skip_normalize: bool = False, log_tokenization: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cond, uncond, pooled cond, pooled uncond); weighted sub-prompts sum both kinds."""
    from invoke.parse import split_prompt

    parts = split_prompt(prompt, skip_normalize=skip_normalize)
    positive = parts.positive or (("", 1.0),)
    cond = pooled = 0
    for text, weight in positive:
        hidden, pool = embed_text(model, text, log_tokenization)
        cond, pooled = cond + weight * hidden, pooled + weight * pool
    if not parts.negative and model.force_zeros_for_empty_prompt:
        uncond, pooled_uncond = torch.zeros_like(cond), torch.zeros_like(pooled)
    else:
        uncond, pooled_uncond = embed_text(model, parts.negative, log_tokenization)
    return tuple(t.to(model.dtype) for t in (cond, uncond, pooled, pooled_uncond))  # type: ignore[return-value]


def time_ids(model: Model, job: Job) -> tuple[torch.Tensor, torch.Tensor]:
    """(for the prompt, for the negative prompt), each (1, n): the size micro-conditioning."""
    size = (job.height, job.width)
    if model.family == "sdxl-refiner":
        ids = [*size, 0, 0, AESTHETIC_SCORE]
        negative = [*size, 0, 0, NEGATIVE_AESTHETIC_SCORE]
    else:
        ids = negative = [*size, 0, 0, *size]
    return (
        torch.tensor([ids], device=model.device, dtype=model.dtype),
        torch.tensor([negative], device=model.device, dtype=model.dtype),
    )


class AddedConditions:
    """The UNet as denoise() calls it, with SDXL's pooled embeddings and time ids added.

    Everything else (config, dtype...) is the UNet's own.
    """

    def __init__(self, unet: Any, added: dict[str, torch.Tensor]) -> None:
        self._unet = unet
        self._added = added

    def __call__(self, sample: Any, timestep: Any, **kwargs: Any) -> Any:
        return self._unet(sample, timestep, added_cond_kwargs=self._added, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._unet, name)


@torch.no_grad()
def generate(
    model: Model, job: Job, on_step: Callable[[StepInfo], None] | None = None
) -> list[Image.Image]:
    _check(model, job)
    cond, uncond, pooled, pooled_uncond = encode_prompt(
        model, job.prompt, job.skip_normalize, job.log_tokenization
    )

    scheduler = make_scheduler(job.sampler, model.scheduler_config)
    with numpy_quiet():
        scheduler.set_timesteps(job.steps, device=model.device)
    steps = job.steps if job.init_image is None else img2img_steps(job.steps, job.strength)
    start = (job.steps - steps) * scheduler.order
    timesteps = scheduler.timesteps[start:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)

    shape = (4, job.height // model.size_multiple, job.width // model.size_multiple)
    drawn = [image_noise(n, shape) for n in job.noises]
    noise = torch.cat([n for n, _ in drawn]).to(model.device, model.dtype)
    generators = [g for _, g in drawn]

    batch = len(job.noises)
    blend = condition = None
    if model.inpainting:
        condition = _inpainting_condition(model, job).expand(batch, -1, -1, -1)
    if job.init_image is None or (model.inpainting and job.strength >= 1):
        latents = noise * scheduler.init_noise_sigma
    else:
        init = encode_image(model, job.init_image).expand(batch, -1, -1, -1)
        latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))
        if job.mask is not None and not model.inpainting:
            blend = _known_region_blend(model, scheduler, init, noise, timesteps, job.mask)

    ids, negative_ids = time_ids(model, job)
    text_embeds, added_ids = pooled.expand(batch, -1), ids.expand(batch, -1)
    if job.cfg_scale > 1:  # denoise() puts the unconditional half first
        text_embeds = torch.cat([pooled_uncond.expand(batch, -1), text_embeds])
        added_ids = torch.cat([negative_ids.expand(batch, -1), added_ids])
    unet = AddedConditions(model.unet, {"text_embeds": text_embeds, "time_ids": added_ids})

    latents = denoise(
        unet, scheduler, latents, timesteps, steps, cond, uncond, job.cfg_scale,
        generators, on_step, blend, condition,
    )  # fmt: skip
    images = model.decode(latents)
    if job.mask is not None and job.init_image is not None:
        images = [Image.composite(image, job.init_image, job.mask) for image in images]
    return images


def encode_image(model: Model, image: Image.Image) -> torch.Tensor:
    """Init latents (1, 4, h, w) from the posterior's mean; SDXL's fp16 VAE may need fp32."""
    posterior = model.vae_run("encode", _pixels(image))
    return (posterior.mean * model.vae.config.scaling_factor).to(model.dtype)
