"""SDXL base and refiner through our own sampling loop: the same switches as SD 1.x/2.x.

What SDXL adds, as diffusers' StableDiffusionXL pipelines do it (they are the test oracle):
- two text encoders (CLIP ViT-L and OpenCLIP bigG); the UNet reads their penultimate hidden
  states side by side, and the pooled, projected output of the second one;
- "time ids", the micro-conditioning on sizes: (original h, w, crop top, left, target h, w) for
  the base; the refiner has only the second encoder and takes an aesthetic score instead of the
  target size (6 for the prompt, 2.5 for the negative prompt);
- the base model's empty negative prompt is zeros, not the encoding of "".
That is all this file does (`conditioning`: the embeddings, and the pooled embeddings and time ids
as a contribution to every UNet call); the loop, variations, seeds, samplers, CFG, img2img,
masks, the step callback, the compiled-or-eager UNet and the prompt cache are the SD path's
(generate.py). --refiner hands a base's latents to a refiner part way (generate_refined).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from invoke.backend import generate as shared
from invoke.backend import speed
from invoke.backend.families.sd import StableDiffusion
from invoke.backend.job import EmbeddingFile, Job
from invoke.backend.prompts import (
    Embedding,
    Encoders,
    TextEncoder,
    embedding_triggers,
    encode_parts,
)
from invoke.backend.single_file import config_folder, config_index, load_single_file
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.denoise import Contribution
    from invoke.backend.model import Model, OnEvent, OnStep
    from invoke.line.prompt import Prompt

PIPELINES = (
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
)
# Original (sgm) checkpoint keys of the base's second encoder and the refiner's only one.
_BASE_KEY = "conditioner.embedders.1.model.positional_embedding"
_REFINER_KEY = "conditioner.embedders.0.model.text_projection"

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


@dataclass(frozen=True)
class StableDiffusionXL(StableDiffusion):
    """SDXL: SD's loading and loop, two text encoders and the UNet's added conditions."""

    refiner: bool = False
    label: str = "SDXL (StableDiffusionXLPipeline)"
    latent_rgb: tuple[Any, Any] | None = (SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS)

    def is_folder(self, folder: Path, index: dict[str, Any]) -> bool:
        if index.get("_class_name") not in PIPELINES:
            return False
        # The refiner has only the big OpenCLIP encoder (model_index lists text_encoder as null).
        first = index.get("text_encoder")
        has_first = isinstance(first, list) and first[0] is not None
        return has_first != self.refiner

    def is_checkpoint(self, keys: set[str], v_prediction: bool | None) -> bool:
        if self.refiner:
            return _REFINER_KEY in keys and _BASE_KEY not in keys
        return _BASE_KEY in keys

    def components(self, index: dict[str, Any]) -> tuple[str, ...]:
        first = () if self.refiner else ("text_encoder", "tokenizer")
        return ("unet", "vae", *first, "text_encoder_2", "tokenizer_2", "scheduler")

    def load(
        self,
        folder: Path,
        index: dict[str, Any],
        device: torch.device,
        dtype: torch.dtype,
        *,
        offload: bool,
        allow_pickle: bool,
    ) -> dict[str, Any]:
        parts = super().load(
            folder, index, device, dtype, offload=offload, allow_pickle=allow_pickle
        )
        return parts | _zeros_for_empty(index)

    def load_checkpoint(
        self,
        path: Path,
        checkpoint: dict[str, torch.Tensor],
        dtype: torch.dtype,
        config: str | Path | None,
    ) -> tuple[str, dict[str, Any]]:
        folder = config_folder(path, self.name, config)
        parts = load_single_file(path, checkpoint, folder, dtype, self.text_encoders)
        return self.name, parts | _zeros_for_empty(config_index(path, folder))

    def refuse(self, model: Model, job: Job) -> None:
        if self.refiner and job.init_image is None:
            raise InvokeError(
                f"model {model.name} ({model.family}) only refines images: give an init image "
                "with -I"
            )

    def generate(
        self, model: Model, job: Job, on_step: OnStep | None, on_event: OnEvent | None
    ) -> list[Image.Image]:
        return shared.generate(model, job, on_step, conditioning, on_event)


# -- --refiner: the base hands its latents to a refiner part way through the schedule ----------

REFINERS = ("sdxl-refiner", "sdxl")  # what can take an SDXL base's latents
# What the refiner's part could not honour as the line asks: one line each, never ignored.
_NOT_WITH_REFINER = (
    ("first_pass", "--hires_fix"),
    ("mask", "-M/--init_mask"),
    ("control", "--controlnet"),
    ("seamless_axes", "--seamless"),
)


def refuse_refiner(model: Model, job: Job) -> None:
    """A --refiner line the base cannot run: not an SDXL base, a switch the hand-off cannot
    carry, or a split that leaves the base or the refiner no step."""
    if job.refiner is None:
        return
    if model.family != "sdxl":
        raise InvokeError(
            f"--refiner: model {model.name} is {model.family}; a refiner takes over from an "
            "SDXL base model (!switch to one)"
        )
    for field, switch in _NOT_WITH_REFINER:
        if getattr(job, field):
            raise InvokeError(f"--refiner: cannot be combined with {switch} (yet)")
    shared.handoff_steps(model, job)


def check_refiner(base: Model, refiner: Model, job: Job) -> None:
    """The model --refiner named must be an SDXL refiner (or base) the latents fit."""
    assert job.refiner is not None
    if refiner.family not in REFINERS:
        raise InvokeError(
            f"--refiner: {job.refiner.name} is a {refiner.family} model; give an SDXL refiner "
            "(or SDXL base) model"
        )
    if refiner.size_multiple != base.size_multiple:
        raise InvokeError(f"--refiner: {job.refiner.name}'s VAE does not fit {base.name}'s latents")


def generate_refined(
    base: Model, refiner: Model, job: Job, on_step: OnStep | None, on_event: OnEvent | None
) -> list[Image.Image]:
    """The base's part of the schedule, the refiner's from its latents, the refiner's decode."""
    return shared.generate(base, job, on_step, conditioning, on_event, refiner=refiner)


def _zeros_for_empty(index: dict[str, Any]) -> dict[str, Any]:
    return {"force_zeros_for_empty_prompt": bool(index.get("force_zeros_for_empty_prompt", True))}


FAMILIES = (
    StableDiffusionXL(
        "sdxl",
        "Stable Diffusion XL base",
        1024,
        "sdxl",
        (
            ("text_encoder", "conditioner.embedders.0.transformer.", False),
            ("text_encoder_2", "conditioner.embedders.1.model.", True),
        ),
    ),
    StableDiffusionXL(
        "sdxl-refiner",
        "Stable Diffusion XL refiner (img2img only)",
        1024,
        "sdxl-refiner",
        (("text_encoder_2", "conditioner.embedders.0.model.", True),),
        refiner=True,
    ),
)


def _encoders(model: Model) -> list[tuple[Any, Any]]:
    pairs = [(model.tokenizer, model.text_encoder), (model.tokenizer_2, model.text_encoder_2)]
    return [(t, e) for t, e in pairs if e is not None]


def sdxl_encoders(
    model: Model,
    log_tokenization: bool = False,
    embeddings: tuple[EmbeddingFile, ...] = (),
    on_event: OnEvent | None = None,
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
    return Encoders(pairs, model.device, log_tokenization, on_event)


@torch.no_grad()
def encode_prompt(
    model: Model,
    prompt: Prompt,
    log_tokenization: bool = False,
    embeddings: tuple[EmbeddingFile, ...] = (),
    on_event: OnEvent | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cond, uncond, pooled cond, pooled uncond); weighted sub-prompts sum both kinds."""
    encoders = sdxl_encoders(model, log_tokenization, embeddings, on_event)
    zeros = bool(model.force_zeros_for_empty_prompt)
    (cond, pooled), (uncond, pooled_uncond) = encode_parts(encoders, prompt, zeros)
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


class AddedConditions:
    """SDXL's contribution to every UNet call: the pooled embeddings and the time ids."""

    def __init__(self, text_embeds: torch.Tensor, time_ids: torch.Tensor) -> None:
        self.added = {"text_embeds": text_embeds, "time_ids": time_ids}

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        return {"added_cond_kwargs": self.added}


def conditioning(
    model: Model, job: Job, on_event: OnEvent | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[Contribution]]:
    """SDXL's piece of the shared loop: both encoders' embeddings (cached per command, as SD's),
    and the pooled embeddings and time ids as the UNet's added conditions."""
    cond, uncond, pooled, pooled_uncond = speed.prompt_embeddings(
        model,
        job,
        lambda: encode_prompt(model, job.prompt, job.log_tokenization, job.embeddings, on_event),
    )
    batch = len(job.noises)
    ids, negative_ids = time_ids(model, job)
    text_embeds, added_ids = pooled.expand(batch, -1), ids.expand(batch, -1)
    if job.cfg_scale > 1:  # denoise() puts the unconditional half first
        text_embeds = torch.cat([pooled_uncond.expand(batch, -1), text_embeds])
        added_ids = torch.cat([negative_ids.expand(batch, -1), added_ids])
    return cond, uncond, [AddedConditions(text_embeds, added_ids)]


def sdxl_index(refiner: bool, inpainting: bool = False) -> dict[str, Any]:
    """model_index.json of an SDXL base or refiner folder (`inpainting`: a 9-channel UNet's, as
    stable-diffusion-xl-1.0-inpainting-0.1)."""
    pipeline = "Inpaint" if inpainting else "Img2Img" if refiner else ""
    index: dict[str, Any] = {
        "_class_name": f"StableDiffusionXL{pipeline}Pipeline",
        "force_zeros_for_empty_prompt": not refiner,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": [None, None] if refiner else ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": [None, None] if refiner else ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if refiner:
        index["requires_aesthetics_score"] = True
    return index
