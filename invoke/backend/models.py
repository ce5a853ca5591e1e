"""Loading a Stable Diffusion diffusers folder onto a device, and the `Model` the session drives.

Each component is loaded on its own from local files (safetensors only: model files are untrusted),
so a broken folder is reported as the one part that is wrong, in one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError

from invoke.backend.job import Job, StepInfo
from invoke.errors import ModelError

PRECISIONS = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DEVICES = ("auto", "cuda", "mps", "cpu")
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# Pipelines whose parts are SD 1.x/2.x's: the own sampling loop covers these.
SD_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionInpaintPipeline",
)
# 4: plain latents; 9: an inpainting UNet, which also sees the mask and the masked image's latents.
UNET_CHANNELS = (4, 9)

# SD 1.x latent channels -> RGB, a least-squares fit (InvokeAI 2.3's values): a preview costs a
# matrix product instead of a VAE decode.
SD1_LATENT_RGB = (
    (0.3444, 0.1385, 0.0670),
    (0.1247, 0.4027, 0.1494),
    (-0.3192, 0.2513, 0.2103),
    (-0.1307, -0.1874, -0.7445),
)


def pick_device(device: str = "auto") -> torch.device:
    """auto = cuda, then mps, then cpu; an explicit device must be present."""
    if device not in DEVICES:
        raise ModelError(f"--device: {device} is not one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    has_mps = torch.backends.mps.is_available()
    if device == "auto":
        device = "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if (device == "cuda" and not has_cuda) or (device == "mps" and not has_mps):
        raise ModelError(f"--device: {device} is not available on this machine; use auto or cpu")
    return torch.device(device)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto = float16 on GPUs (half the memory, tensor cores), float32 on CPUs (fp16 is slow)."""
    if precision == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if precision not in PRECISIONS:
        raise ModelError(f"--precision: {precision} is not one of auto, float32, float16, bfloat16")
    return PRECISIONS[precision]


@dataclass(eq=False)
class Model:
    """A loaded SD 1.x/2.x model: its parts, where they live, and what it generates natively."""

    name: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL
    scheduler_config: dict[str, Any] = field(repr=False)
    # rgb = latents @ factors + bias; SD 1.x's table unless the folder ships its VAE's own.
    latent_rgb_factors: tuple[tuple[float, float, float], ...] = SD1_LATENT_RGB
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def size_multiple(self) -> int:
        """Pixels per latent cell: image sides must be multiples of it."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def inpainting(self) -> bool:
        """A 9-channel inpainting UNet (sd-v1-5-inpainting and the like)."""
        return int(self.unet.config.in_channels) == 9

    @property
    def native_size(self) -> int:
        """The side length the model was trained at (512 for SD 1.5, 64 for the test model)."""
        return int(self.unet.config.sample_size) * self.size_multiple

    def generate(
        self, job: Job, on_step: Callable[[StepInfo], None] | None = None
    ) -> list[Image.Image]:
        """One image per `Noise` of the job, all in one UNet batch."""
        from invoke.backend.generate import generate

        return generate(self, job, on_step)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """The VAE's pictures of `latents` (batch, 4, h, w), as diffusers' pipelines make them."""
        latents = latents.to(self.device, self.dtype)
        pixels = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        pixels = (pixels / 2 + 0.5).clamp(0, 1)
        array = pixels.cpu().permute(0, 2, 3, 1).float().numpy()
        return [Image.fromarray(a) for a in (array * 255).round().astype("uint8")]

    @torch.no_grad()
    def preview(self, latents: torch.Tensor) -> list[Image.Image]:
        """A fast linear latent->RGB estimate, upscaled to the image size: for intermediates."""
        factors = torch.tensor(self.latent_rgb_factors, device=latents.device, dtype=torch.float32)
        bias = torch.tensor(self.latent_rgb_bias, device=latents.device, dtype=torch.float32)
        rgb = torch.einsum("bchw,cr->bhwr", latents.float(), factors) + bias
        array = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        _, _, h, w = latents.shape
        size = (w * self.size_multiple, h * self.size_multiple)
        return [Image.fromarray(a).resize(size, Image.Resampling.BILINEAR) for a in array]


def load_model(
    path: str | Path,
    device: str = "auto",
    precision: str = "auto",
    name: str | None = None,
    *,
    offload: bool = False,
    allow_pickle: bool = False,
    compile: bool | None = None,
) -> Model:
    """Load a diffusers Stable Diffusion folder; raise ModelError naming what is wrong.

    offload: keep parts in CPU memory, on the GPU only while used (small GPUs).
    allow_pickle: let pickle checkpoints (.ckpt/.pt/.bin) load, still with weights_only=True.
    compile: torch.compile the UNet (None = decide by device and workload).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"model {folder}: no such folder; give a diffusers model folder")
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelError(
            f"model {folder}: not a diffusers model folder (no model_index.json); "
            f"it needs model_index.json and {', '.join(COMPONENTS)}/"
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"model {folder}: model_index.json is unreadable ({err})") from err
    pipeline = index.get("_class_name") if isinstance(index, dict) else None
    if pipeline not in SD_PIPELINES:
        raise ModelError(
            f"model {folder}: a {pipeline} is not supported; only Stable Diffusion 1.x/2.x "
            f"(StableDiffusionPipeline) folders are"
        )
    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    if missing:
        raise ModelError(f"model {folder}: missing {', '.join(m + '/' for m in missing)}")

    torch_device = pick_device(device)
    dtype = pick_dtype(precision, torch_device)
    parts = _load_parts(folder, dtype)
    if parts["unet"].config.in_channels not in UNET_CHANNELS:
        raise ModelError(
            f"model {folder}: its UNet takes {parts['unet'].config.in_channels} input channels; "
            f"only 4 (Stable Diffusion) or 9 (its inpainting models) are supported"
        )
    for module in ("unet", "vae", "text_encoder"):
        parts[module].to(torch_device).eval().requires_grad_(False)
    model = Model(
        name=name or folder.name,
        path=folder,
        device=torch_device,
        dtype=dtype,
        **parts,
        **_preview_factors(folder),
    )
    # The CUDA fast path (channels_last, fused QKV, compile where it pays): see speed.py.
    from invoke.backend.speed import prepare

    prepare(model, compile)
    return model


def _preview_factors(folder: Path) -> dict[str, Any]:
    """A VAE's own latent->RGB fit, if the folder has one (the default model's training.json).

    SD 1.x's table is wrong for any other VAE; a missing or unusable file just keeps it.
    """
    try:
        meta = json.loads((folder / "training.json").read_text(encoding="utf-8"))
        factors = tuple(tuple(float(v) for v in row) for row in meta["latent_rgb_factors"])
        bias = tuple(float(v) for v in meta.get("latent_rgb_bias", (0.0, 0.0, 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if len(factors) != 4 or any(len(row) != 3 for row in factors) or len(bias) != 3:
        return {}
    return {"latent_rgb_factors": factors, "latent_rgb_bias": bias}


def _load_parts(folder: Path, dtype: torch.dtype) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    # low_cpu_mem_usage=False: without accelerate diffusers warns at length and does this anyway.
    diffusers_options = {"torch_dtype": dtype, "local_files_only": True, "use_safetensors": True}
    loaders: dict[str, Callable[[], Any]] = {
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(
            folder / "tokenizer", local_files_only=True
        ),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(
            folder / "text_encoder", dtype=dtype, local_files_only=True, use_safetensors=True
        ),
        "unet": lambda: UNet2DConditionModel.from_pretrained(
            folder / "unet", low_cpu_mem_usage=False, **diffusers_options
        ),
        "vae": lambda: AutoencoderKL.from_pretrained(
            folder / "vae", low_cpu_mem_usage=False, **diffusers_options
        ),
        "scheduler_config": lambda: _read_json(folder / "scheduler" / "scheduler_config.json"),
    }
    parts = {}
    # transformers draws a "Loading weights" bar per model; the front ends draw their own.
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        for part, load in loaders.items():
            try:
                parts[part] = load()
            except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as err:
                # Library messages run to many lines; the first names the file or key at fault.
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                where = part.removesuffix("_config")
                raise ModelError(f"model {folder}: cannot load {where}/ ({first})") from err
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return parts


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data
