"""Which kind of model a folder or a single checkpoint holds, read from its files.

A family decides how the model is loaded (which parts, which config folder for a single file) and
how it generates (one or two text encoders, time ids, an Auto pipeline), and which switches it
can honour. The 9-channel inpainting UNets are a property of the model (`Model.inpainting`), not a
family: an inpainting SD 1.5 is still SD 1.x in every other way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from invoke.errors import ModelError

# family -> what the user sees in !models and messages.
FAMILIES = {
    "sd-1": "Stable Diffusion 1.x",
    "sd-2": "Stable Diffusion 2.x (epsilon, 512 px)",
    "sd-2-v": "Stable Diffusion 2.x (v-prediction, 768 px)",
    "sdxl": "Stable Diffusion XL base",
    "sdxl-refiner": "Stable Diffusion XL refiner (img2img only)",
    "kandinsky-2.2": "Kandinsky 2.2 (through diffusers' Auto pipelines)",
}
SD_FAMILIES = ("sd-1", "sd-2", "sd-2-v")
SDXL_FAMILIES = ("sdxl", "sdxl-refiner")

SD_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
)
SDXL_PIPELINES = (
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline",
)
KANDINSKY_PIPELINES = (
    "KandinskyV22CombinedPipeline",
    "KandinskyV22Img2ImgCombinedPipeline",
    # A decoder folder alone (kandinsky-2-2-decoder): diffusers adds the prior its README names.
    "KandinskyV22Pipeline",
    "KandinskyV22Img2ImgPipeline",
)

# Original (LDM / sgm) checkpoint keys that tell the families apart, the same landmarks diffusers'
# own single-file code looks for.
_SDXL_BASE_KEY = "conditioner.embedders.1.model.positional_embedding"
_SDXL_REFINER_KEY = "conditioner.embedders.0.model.text_projection"
_OPEN_CLIP_KEY = "cond_stage_model.model.token_embedding.weight"
_CLIP_KEY = "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"
UNET_IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"


def check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ModelError(f"family: {family} is not one of {', '.join(FAMILIES)}")
    return family


def folder_family(folder: Path, index: dict[str, Any]) -> str:
    """The family of a diffusers folder, from model_index.json and its parts' configs."""
    pipeline = index.get("_class_name")
    if pipeline in SDXL_PIPELINES:
        # The refiner has only the big OpenCLIP encoder (model_index lists text_encoder as null).
        first = index.get("text_encoder")
        has_first = isinstance(first, list) and first[0] is not None
        return "sdxl" if has_first else "sdxl-refiner"
    if pipeline in KANDINSKY_PIPELINES:
        return "kandinsky-2.2"
    if pipeline in SD_PIPELINES:
        scheduler = _json(folder / "scheduler" / "scheduler_config.json")
        if scheduler.get("prediction_type") == "v_prediction":
            return "sd-2-v"
        unet = _json(folder / "unet" / "config.json")
        return "sd-2" if unet.get("cross_attention_dim") == 1024 else "sd-1"
    raise ModelError(
        f"model {folder}: a {pipeline} is not supported; only Stable Diffusion 1.x/2.x "
        f"(StableDiffusionPipeline), SDXL (StableDiffusionXLPipeline) and Kandinsky 2.2 "
        f"(KandinskyV22CombinedPipeline) folders are"
    )


def checkpoint_family(keys: Iterable[str], v_prediction: bool | None = None) -> str:
    """The family of an original-layout checkpoint from its key names.

    SD 2.x 768-v and 512-base checkpoints have the same keys; `v_prediction` (from the .yaml
    beside the file, or the user) decides, and without it we assume 768-v as diffusers does.
    """
    keys = set(keys)
    if _SDXL_BASE_KEY in keys:
        return "sdxl"
    if _SDXL_REFINER_KEY in keys:
        return "sdxl-refiner"
    if _OPEN_CLIP_KEY in keys:
        return "sd-2" if v_prediction is False else "sd-2-v"
    if _CLIP_KEY in keys:
        return "sd-1"
    raise ModelError(
        "not a Stable Diffusion checkpoint in the original layout (no CLIP text encoder keys "
        "such as cond_stage_model.* or conditioner.embedders.*); give a diffusers folder instead"
    )


def default_sampler(family: str, recommended: str | None = None) -> str:
    """The sampler a line that names none gets: the model's makers' recommendation (the default
    model's training.json), else k_lms as in InvokeAI, except on Kandinsky, whose loop cannot
    run k_lms."""
    if recommended is not None:
        return recommended
    return "ddim" if family == "kandinsky-2.2" else "k_lms"


def recommended_sampler(folder: Path) -> str | None:
    """The sampler a model folder's training.json recommends (the default model has one)."""
    from invoke.samplers import SAMPLERS

    value = _json(folder / "training.json").get("default_sampler")
    return value if value in SAMPLERS else None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


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
