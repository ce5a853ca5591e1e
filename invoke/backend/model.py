"""The `Model` the session drives: its parts, where they live, and what its family decided.

A Model is data. Which family it is (its name, a key of families.FAMILIES) and what that family
decided at load time (its size multiple, its default sampler) are plain fields; running a job is
run.py's, reached through `runner` (given by loading.py), so this module imports no feature
module and every feature module can take a Model as its argument.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from invoke.backend.finite import check_pixels
from invoke.backend.job import Job, StepInfo

log = logging.getLogger(__name__)

# What the caller is told after each step, and of everything else worth telling (events.Tokens).
OnStep = Callable[[StepInfo], None]
OnEvent = Callable[[object], None]

# SD 1.x latent channels -> RGB, a least-squares fit (InvokeAI 2.3's values): a preview costs a
# matrix product instead of a VAE decode.
SD1_LATENT_RGB = (
    (0.3444, 0.1385, 0.0670),
    (0.1247, 0.4027, 0.1494),
    (-0.3192, 0.2513, 0.2103),
    (-0.1307, -0.1874, -0.7445),
)


class Runner(Protocol):
    """What runs a job on a model (run.JobRunner)."""

    def generate(
        self,
        model: Model,
        job: Job,
        on_step: OnStep | None,
        on_event: OnEvent | None,
        refiner: Model | None = None,
    ) -> list[Image.Image]: ...

    def prepare(self, model: Model, job: Job) -> list[str]: ...


@dataclass(eq=False)
class Model:
    """A loaded model: its parts, where they live, its family and what it generates natively."""

    name: str
    path: Path
    device: torch.device
    dtype: torch.dtype
    tokenizer: Any  # transformers.CLIPTokenizer (None: the SDXL refiner)
    text_encoder: Any  # transformers.CLIPTextModel (None: the SDXL refiner)
    unet: Any  # diffusers.UNet2DConditionModel
    vae: Any  # diffusers.AutoencoderKL (Kandinsky: its VQModel, "movq")
    scheduler_config: dict[str, Any] = field(repr=False)
    runner: Runner = field(repr=False)
    family: str  # a key of families.FAMILIES
    # Image sides must be multiples of it: pixels per latent cell, or what the family asks more.
    size_multiple: int
    # The sampler to use when the line names none: the model's makers' recommendation (the
    # default model's training.json), else its family's.
    default_sampler: str
    # rgb = latents @ factors + bias; SD 1.x's table unless the folder ships its VAE's own.
    latent_rgb_factors: tuple[tuple[float, float, float], ...] = SD1_LATENT_RGB
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # Previews are VAE decodes: for a VAE whose colours no linear map shows and whose decode is
    # cheap (the default model's; training.json "preview": "decode"; scripts/fit_preview_colors.py).
    preview_decodes: bool = False
    # SDXL's second (OpenCLIP bigG, with projection) text encoder and its tokenizer.
    tokenizer_2: Any = None
    text_encoder_2: Any = None
    # SDXL base: an empty negative prompt is zeros, not the encoding of "" (its model_index.json).
    force_zeros_for_empty_prompt: bool = False
    pipeline: Any = field(default=None, repr=False)  # Kandinsky: diffusers' combined pipeline
    offloader: Any = field(default=None, repr=False)  # offload.Offloader with --offload on a GPU
    merged_loras: Any = field(default=None, repr=False)  # lora._Merged: the LoRAs merged now
    # embeddings._Rows: the textual inversion embeddings its text encoders have rows for
    embedding_rows: Any = field(default=None, repr=False)
    # (its path and file stamp, diffusers.ControlNetModel): the last ControlNet a job used
    controlnet: Any = field(default=None, repr=False)
    # {unit number: the same pair}: the ControlNets of a line's second and later units
    more_controlnets: dict[int, Any] = field(default_factory=dict, repr=False)
    # (its path, file stamp and image encoder folder, image_prompt.Adapter): the last IP-Adapter
    ip_adapter: Any = field(default=None, repr=False)
    # speed._State: the compile choice, eager time per shape, the prompt cache
    speed: Any = field(default=None, repr=False)
    _hash: str | None = field(default=None, repr=False)
    _vae_fp32: bool = field(default=False, repr=False)  # fp16 decoded to NaN once: use fp32

    @property
    def model_hash(self) -> str:
        """sha256 of the weights file (a folder's UNet weights), cached beside it."""
        if self._hash is None:
            from invoke.backend.hashing import model_hash

            self._hash = model_hash(self.path)
        return self._hash

    @property
    def latent_cell(self) -> int:
        """Pixels per latent cell along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_space(self) -> str:
        """The latents its VAE reads, in words (upscaler_kinds.latent_space): -U 2 takes the
        final latents when the upscaler's VAE reads the same."""
        from invoke.backend.upscaler_kinds import latent_space

        return latent_space(type(self.vae).__name__, self.vae.config)

    @property
    def inpainting(self) -> bool:
        """A 9-channel inpainting UNet (sd-v1-5-inpainting and the like)."""
        return int(self.unet.config.in_channels) == 9

    @property
    def native_size(self) -> int:
        """The side length the model was trained at (512 for SD 1.5, 64 for the test model)."""
        return int(self.unet.config.sample_size) * self.latent_cell

    def generate(
        self,
        job: Job,
        on_step: OnStep | None = None,
        on_event: OnEvent | None = None,
        refiner: Model | None = None,
    ) -> list[Image.Image]:
        """One image per `Noise` of the job, all in one UNet batch (run.JobRunner.generate);
        `refiner`: job.refiner's model, loaded."""
        return self.runner.generate(self, job, on_step, on_event, refiner)

    def prepare(self, job: Job) -> list[str]:
        """What can fail before a step is taken, done now (run.JobRunner.prepare)."""
        return self.runner.prepare(self, job)

    def vae_run(self, method: str, tensor: torch.Tensor) -> Any:
        """vae.encode (-> its latent distribution) or vae.decode (-> pixels).

        A float16 VAE that gives NaN (SDXL's does) is run again in float32, said once per model;
        later calls go straight to float32, the VAE going back to the model's dtype after each so
        the rest of the code keeps one dtype.
        """

        def run(dtype: torch.dtype) -> Any:
            out = getattr(self.vae, method)(tensor.to(self.device, dtype))
            return out.latent_dist if method == "encode" else out.sample

        if not self._vae_fp32:
            result = run(self.dtype)
            check = result.mean if method == "encode" else result
            if self.dtype == torch.float32 or bool(torch.isfinite(check).all()):
                return result
            log.warning(
                "model %s: the VAE gives NaN or infinity in %s; decoding in float32 from now on "
                "(slower)",
                self.name,
                str(self.dtype).removeprefix("torch."),
            )
            self._vae_fp32 = True
        # nn.Module.to: diffusers' own .to(dtype) logs a warning about float32 modules each time.
        torch.nn.Module.to(self.vae, torch.float32)
        try:
            return run(torch.float32)
        finally:
            torch.nn.Module.to(self.vae, self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """The VAE's pictures of `latents` (batch, 4, h, w), as diffusers' pipelines make them."""
        scaled = latents / self.vae.config.scaling_factor
        pixels = self.vae_run("decode", scaled).float()
        # NaN would be cast to black, infinity clamped to white: neither is a picture.
        check_pixels(pixels, torch.float32 if self._vae_fp32 else self.dtype)
        pixels = (pixels / 2 + 0.5).clamp(0, 1)
        array = pixels.cpu().permute(0, 2, 3, 1).float().numpy()
        return [Image.fromarray(a) for a in (array * 255).round().astype("uint8")]

    @torch.no_grad()
    def preview(self, latents: torch.Tensor) -> list[Image.Image]:
        """A fast linear latent->RGB estimate, upscaled to the image size: for intermediates.
        The decode itself where the model says a linear map cannot show its colours."""
        if self.preview_decodes:
            return self.decode(latents)
        factors = torch.tensor(self.latent_rgb_factors, device=latents.device, dtype=torch.float32)
        bias = torch.tensor(self.latent_rgb_bias, device=latents.device, dtype=torch.float32)
        rgb = torch.einsum("bchw,cr->bhwr", latents.float(), factors) + bias
        array = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        _, _, h, w = latents.shape
        size = (w * self.size_multiple, h * self.size_multiple)
        return [Image.fromarray(a).resize(size, Image.Resampling.BILINEAR) for a in array]
