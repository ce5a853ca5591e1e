"""Stable Diffusion 1.x and 2.x (their inpainting models too): one CLIP text encoder, our loop.

SD 2.x comes in two kinds with the same files: 512 px epsilon-prediction (sd-2) and 768 px
v-prediction (sd-2-v); the scheduler config (a folder) or the .yaml beside a checkpoint tells
them apart. Generating is the shared loop with its default conditioning (generate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke.backend import generate as shared
from invoke.backend.components import COMPONENTS, load_parts, read_json
from invoke.backend.single_file import (
    TextEncoders,
    config_folder,
    load_single_file,
    load_vae,
    v_prediction_from_yaml,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from invoke.backend.job import Job
    from invoke.backend.model import Model, OnEvent, OnStep

PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
)
# Original (LDM) checkpoint keys that tell the families apart, the same landmarks diffusers' own
# single-file code looks for: SD 1.x has CLIP ViT-L, SD 2.x OpenCLIP ViT-H.
_CLIP_KEY = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
_OPEN_CLIP_KEY = "cond_stage_model.model.token_embedding.weight"


@dataclass(frozen=True)
class StableDiffusion:
    """A family that runs the shared loop on a diffusers UNet and VAE (sdxl.py builds on it)."""

    name: str
    description: str
    default_size: int
    files: str  # the family whose files it shares (its own name but for sd-2-v)
    text_encoders: TextEncoders  # in a checkpoint
    v_variant: str = ""  # sd-2: the family a checkpoint is when its .yaml says v-prediction
    default_sampler: str = "k_lms"
    label: str = "Stable Diffusion 1.x/2.x (StableDiffusionPipeline)"
    latent_rgb: tuple[Any, Any] | None = None

    def is_folder(self, folder: Path, index: dict[str, Any]) -> bool:
        return index.get("_class_name") in PIPELINES and _folder_kind(folder) == self.name

    def is_checkpoint(self, keys: set[str], v_prediction: bool | None) -> bool:
        return _checkpoint_kind(keys, v_prediction) == self.name

    def size_multiple(self, cell: int) -> int:
        return cell

    def components(self, index: dict[str, Any]) -> tuple[str, ...]:
        return COMPONENTS

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
        return load_parts(folder, dtype, self.components(index), allow_pickle)

    def load_checkpoint(
        self,
        path: Path,
        checkpoint: dict[str, torch.Tensor],
        dtype: torch.dtype,
        config: str | Path | None,
    ) -> tuple[str, dict[str, Any]]:
        # The original config beside the file knows best.
        name = self.v_variant if self.v_variant and v_prediction_from_yaml(path) else self.name
        folder = config_folder(path, name, config)
        return name, load_single_file(path, checkpoint, folder, dtype, self.text_encoders)

    def replace_vae(
        self, parts: dict[str, Any], vae: str | Path, dtype: torch.dtype, allow_pickle: bool
    ) -> None:
        parts["vae"] = load_vae(vae, dict(parts["vae"].config), dtype, allow_pickle)

    def refuse(self, model: Model, job: Job) -> None:
        pass  # our loop honours every switch

    def generate(
        self, model: Model, job: Job, on_step: OnStep | None, on_event: OnEvent | None
    ) -> list[Image.Image]:
        return shared.generate(model, job, on_step, on_event=on_event)


def _checkpoint_kind(keys: set[str], v_prediction: bool | None) -> str | None:
    """sd-1, sd-2 or sd-2-v (None: neither), from a checkpoint's keys; SD 2.x 768-v and
    512-base have the same keys, and without `v_prediction` we assume 768-v as diffusers does."""
    if _OPEN_CLIP_KEY in keys:
        return "sd-2" if v_prediction is False else "sd-2-v"
    return "sd-1" if _CLIP_KEY in keys else None


def _folder_kind(folder: Path) -> str:
    """sd-1, sd-2 or sd-2-v, from a folder's scheduler and UNet configs."""
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    if scheduler.get("prediction_type") == "v_prediction":
        return "sd-2-v"
    unet = read_json(folder / "unet" / "config.json")
    return "sd-2" if unet.get("cross_attention_dim") == 1024 else "sd-1"


_OPEN_CLIP = (("text_encoder", "cond_stage_model.model.", True),)
FAMILIES = (
    StableDiffusion(
        "sd-1",
        "Stable Diffusion 1.x",
        512,
        "sd-1",
        (("text_encoder", "cond_stage_model.transformer.", False),),
    ),
    StableDiffusion(
        "sd-2", "Stable Diffusion 2.x (epsilon, 512 px)", 512, "sd-2", _OPEN_CLIP, "sd-2-v"
    ),
    StableDiffusion(
        "sd-2-v", "Stable Diffusion 2.x (v-prediction, 768 px)", 768, "sd-2", _OPEN_CLIP
    ),
)


def sd_index(pipeline: str = "StableDiffusionPipeline") -> dict[str, Any]:
    """model_index.json of an SD 1.x/2.x folder (shipped configs, test models, bench)."""
    return {
        "_class_name": pipeline,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
