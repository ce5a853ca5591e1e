"""SDXL base and refiner through our own sampling loop: the same switches as SD 1.x/2.x.

What SDXL adds, as diffusers' StableDiffusionXL pipelines do it (they are the test oracle):
- two text encoders (CLIP ViT-L and OpenCLIP bigG); the UNet reads their penultimate hidden
  states side by side, and the pooled, projected output of the second one;
- "time ids", the micro-conditioning on sizes: (original h, w, crop top, left, target h, w) for
  the base; the refiner has only the second encoder and takes an aesthetic score instead of the
  target size (6 for the prompt, 2.5 for the negative prompt);
- the base model's empty negative prompt is zeros, not the encoding of "".
That is all this file does (`conditioning`); the loop, variations, seeds, samplers, CFG, img2img,
masks, the step callback, the compiled-or-eager UNet and the prompt cache are the SD path's
(generate.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from invoke.backend import generate as shared
from invoke.backend import speed
from invoke.backend.generate import encode_image as encode_image  # the same for SDXL
from invoke.backend.job import EmbeddingFile, Job, StepInfo
from invoke.backend.prompts import (
    Embedding,
    Encoders,
    TextEncoder,
    embedding_triggers,
    encode_parts,
)

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


def sdxl_encoders(
    model: Model, log_tokenization: bool = False, embeddings: tuple[EmbeddingFile, ...] = ()
) -> Encoders:
    """Both encoders (the refiner has only the second): penultimate hidden states, side by side,
    and the second one's pooled, projected output."""

    def reader(encoder: Any) -> Callable[[torch.Tensor], Embedding]:
        def run(ids: torch.Tensor) -> Embedding:
            out = encoder(ids, output_hidden_states=True)
            pooled = out[0] if out[0].ndim == 2 else None  # CLIPTextModelWithProjection
            return out.hidden_states[-2], pooled

        return run

    pairs = [
        TextEncoder(tokenizer, reader(encoder), triggers)
        for (tokenizer, encoder), triggers in zip(
            _encoders(model), embedding_triggers(model, embeddings), strict=True
        )
    ]
    return Encoders(pairs, model.device, log_tokenization)


@torch.no_grad()
def encode_prompt(
    model: Model,
    prompt: str,
    skip_normalize: bool = False,
    log_tokenization: bool = False,
    embeddings: tuple[EmbeddingFile, ...] = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cond, uncond, pooled cond, pooled uncond); weighted sub-prompts sum both kinds."""
    encoders = sdxl_encoders(model, log_tokenization, embeddings)
    zeros = bool(model.force_zeros_for_empty_prompt)
    (cond, pooled), (uncond, pooled_uncond) = encode_parts(encoders, prompt, skip_normalize, zeros)
    return tuple(t.to(model.dtype) for t in (cond, uncond, pooled, pooled_uncond))  # type: ignore[return-value,union-attr]


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


def conditioning(model: Model, job: Job, unet: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """SDXL's piece of the shared loop: both encoders' embeddings (cached per command, as SD's),
    and the UNet called with the pooled embeddings and time ids as added conditions."""
    cond, uncond, pooled, pooled_uncond = speed.prompt_embeddings(
        model,
        job,
        lambda: encode_prompt(
            model, job.prompt, job.skip_normalize, job.log_tokenization, job.embeddings
        ),
    )
    batch = len(job.noises)
    ids, negative_ids = time_ids(model, job)
    text_embeds, added_ids = pooled.expand(batch, -1), ids.expand(batch, -1)
    if job.cfg_scale > 1:  # denoise() puts the unconditional half first
        text_embeds = torch.cat([pooled_uncond.expand(batch, -1), text_embeds])
        added_ids = torch.cat([negative_ids.expand(batch, -1), added_ids])
    added = {"text_embeds": text_embeds, "time_ids": added_ids}
    return cond, uncond, functools.partial(unet, added_cond_kwargs=added)


def generate(
    model: Model, job: Job, on_step: Callable[[StepInfo], None] | None = None
) -> list[Image.Image]:
    return shared.generate(model, job, on_step, conditioning)
