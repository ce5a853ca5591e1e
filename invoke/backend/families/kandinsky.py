"""Kandinsky 2.2 through diffusers' Auto pipelines (the combined prior + decoder pipeline).

The folder is a saved KandinskyV22CombinedPipeline (prior_* parts, unet, scheduler, movq), or a
decoder folder whose README.md names its prior (as kandinsky-2-2-decoder in the hub cache);
AutoPipelineForImage2Image loads it as the img2img pipeline and AutoPipelineForText2Image shares
its parts for txt2img. diffusers owns the loop here, so what it cannot do is refused up front
(Kandinsky.refuse, and _refuse below): LoRAs, ControlNets, embeddings, --hires_fix, variations
and intermediates (it draws its own noise), inpainting masks, weighted sub-prompts, and the
samplers its loop would run wrongly.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from invoke.backend.components import quiet_loading
from invoke.backend.finite import pictures
from invoke.backend.job import Job, StepInfo
from invoke.backend.pipelines import check_pipeline, place
from invoke.backend.schedulers import make_scheduler, numpy_quiet
from invoke.errors import InvokeError, ModelError
from invoke.line.prompt import Parts, SubPrompt, is_weighted

if TYPE_CHECKING:
    from invoke.backend.model import Model, OnEvent

log = logging.getLogger(__name__)

# The samplers diffusers' Kandinsky loop can run: it neither scales the model input (k_euler,
# k_lms... need it) nor takes samplers whose step has no generator (plms) or that evaluate twice
# per step (k_heun, k_dpm_2).
SAMPLERS = ("ddim", "k_dpmpp_2", "k_dpmpp_2_a")
PIPELINES = (
    "KandinskyV22CombinedPipeline",
    "KandinskyV22Img2ImgCombinedPipeline",
    # A decoder folder alone (kandinsky-2-2-decoder): diffusers adds the prior its README names.
    "KandinskyV22Pipeline",
    "KandinskyV22Img2ImgPipeline",
)


@dataclass(frozen=True)
class Kandinsky:
    """Kandinsky 2.2: diffusers' Auto pipelines own the parts and the loop."""

    name: str = "kandinsky-2.2"
    description: str = "Kandinsky 2.2 (through diffusers' Auto pipelines)"
    default_size: int = 512
    default_sampler: str = "ddim"  # its loop cannot run k_lms
    files: str = "kandinsky-2.2"
    label: str = "Kandinsky 2.2 (KandinskyV22CombinedPipeline)"
    latent_rgb: tuple[Any, Any] | None = None

    def is_folder(self, folder: Path, index: dict[str, Any]) -> bool:
        return index.get("_class_name") in PIPELINES

    def is_checkpoint(self, keys: set[str], v_prediction: bool | None) -> bool:
        return False

    def size_multiple(self, cell: int) -> int:
        # Its pipeline rounds sides up to the square of its cell (64 px) and would return
        # another size than asked.
        return cell * cell

    def components(self, index: dict[str, Any]) -> tuple[str, ...]:
        parts: tuple[str, ...] = ("unet", "movq", "scheduler")
        if "prior_prior" in index:  # a combined folder holds its prior
            parts += ("prior_prior", "prior_text_encoder", "prior_image_encoder")
        return parts

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
        return load_kandinsky(folder, device, dtype, offload=offload)

    def load_checkpoint(
        self,
        path: Path,
        checkpoint: dict[str, torch.Tensor],
        dtype: torch.dtype,
        config: str | Path | None,
    ) -> tuple[str, dict[str, Any]]:
        raise ModelError(f"model {path}: {self.name} models load from diffusers folders only")

    def replace_vae(
        self, parts: dict[str, Any], vae: str | Path, dtype: torch.dtype, allow_pickle: bool
    ) -> None:
        raise ModelError(f"vae {vae}: {self.name} models keep their own MoVQ decoder")

    def refuse(self, model: Model, job: Job) -> None:
        what = f"model {model.name} ({model.family})"
        if job.loras:
            raise InvokeError(
                f"withLora/<lora:>: {what} runs diffusers' own pipeline, which takes no LoRA "
                "here; drop the LoRA from the prompt"
            )
        if job.control is not None:
            raise InvokeError(
                f"--controlnet: {what} runs diffusers' own pipeline, which takes no ControlNet "
                "here; drop --controlnet and --control_image"
            )
        if job.embeddings:
            names = ", ".join(f"<{e.name}>" for e in job.embeddings)
            raise InvokeError(
                f"embeddings: {what} runs diffusers' own pipeline, which takes no textual "
                f"inversion embeddings here; drop {names} from the prompt"
            )
        if job.first_pass is not None:
            raise InvokeError(
                f"--hires_fix: {what} runs diffusers' own pipeline, which cannot redraw "
                "upscaled latents; drop --hires_fix"
            )
        if job.init_latents is not None:
            raise InvokeError(
                f"--latents: {what} runs diffusers' own pipeline, which starts img2img from the "
                "picture's pixels; drop --latents"
            )
        _refuse_own_noise(what, job)

    def generate(
        self,
        model: Model,
        job: Job,
        on_step: Callable[[StepInfo], None] | None,
        on_event: OnEvent | None,
    ) -> list[Image.Image]:
        return generate(model, job, on_step)


def _refuse_own_noise(what: str, job: Job) -> None:
    """diffusers' Kandinsky pipelines draw their own noise and own their loop."""
    if any(n.variations for n in job.noises):
        raise InvokeError(f"-v/-V: {what} cannot make variations; drop -v/-V")
    if job.intermediate_every:
        raise InvokeError(f"--save_intermediates: {what} cannot save intermediates")
    if job.mask is not None:
        raise InvokeError(f"-M/--init_mask: {what} cannot inpaint; drop the mask")


FAMILIES = (Kandinsky(),)


def load_kandinsky(
    folder: Path, device: torch.device, dtype: torch.dtype, *, offload: bool
) -> dict[str, Any]:
    """The Model's parts for a Kandinsky 2.2 combined folder."""
    from diffusers import AutoPipelineForImage2Image

    try:
        with quiet_loading():
            pipe = AutoPipelineForImage2Image.from_pretrained(
                folder,
                dtype=dtype,
                local_files_only=True,
                use_safetensors=True,
                low_cpu_mem_usage=False,  # without accelerate, the same thing minus a long warning
            )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not (folder / "prior_prior").is_dir():
            raise ModelError(
                f"model {folder}: a Kandinsky 2.2 decoder folder needs its prior (the one its "
                f"README.md names, in the hub cache), or save the combined pipeline "
                f"(KandinskyV22CombinedPipeline) in one folder ({first})"
            ) from err
        raise ModelError(f"model {folder}: cannot load the Kandinsky pipeline ({first})") from err
    for each in (pipe.prior_pipe, pipe.decoder_pipe):
        each.set_progress_bar_config(disable=True)
    check_pipeline(pipe, "model", folder, dtype)
    place(pipe, device, offload, f"model {folder}")
    return {
        "pipeline": pipe,
        "unet": pipe.unet,
        "vae": pipe.movq,
        "tokenizer": pipe.prior_tokenizer,
        "text_encoder": pipe.prior_text_encoder,
        "scheduler_config": dict(pipe.scheduler.config),
    }


def _refuse(model: Model, job: Job) -> tuple[str, str]:
    """(prompt, negative prompt) for the pipeline, or InvokeError for what it cannot do."""
    what = f"model {model.name} (kandinsky-2.2)"
    if job.sampler not in SAMPLERS:
        raise InvokeError(
            f"-A/--sampler: {job.sampler} is not available for {what}; use {', '.join(SAMPLERS)}"
        )
    if len(job.prompt.positive) > 1:
        raise InvokeError(f"prompt: {what} takes no weighted sub-prompts (a:0.5 b:0.5); use one")
    multiple = model.size_multiple
    for switch, side in (("-W/--width", job.width), ("-H/--height", job.height)):
        if side <= 0 or side % multiple:
            raise InvokeError(f"{switch}: {side} is not a positive multiple of {multiple}")
    return _plain(job.prompt.positive[0], what), _plain(job.prompt.negative, what)


def _plain(part: SubPrompt, what: str) -> str:
    """The prompt without weighting syntax: the pipeline encodes plain text only."""
    parsed = part.fragments
    if isinstance(parsed, Parts):
        raise InvokeError(f"prompt: {what} takes no .{parsed.combine}(); use one prompt")
    if is_weighted(parsed):
        log.warning("%s takes no word weights; using the words as plain text", what)
    return part.plain


@torch.no_grad()
def generate(
    model: Model, job: Job, on_step: Callable[[StepInfo], None] | None = None
) -> list[Image.Image]:
    from diffusers import AutoPipelineForText2Image

    prompt, negative = _refuse(model, job)
    pipe = model.pipeline
    if job.init_image is None:
        pipe = AutoPipelineForText2Image.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)
    options: dict[str, Any] = {
        "prompt": prompt,
        "negative_prompt": negative or None,
        "num_inference_steps": job.steps,
        "guidance_scale": job.cfg_scale,
        "width": job.width,
        "height": job.height,
    }
    if job.init_image is not None:
        options.update(image=job.init_image, strength=job.strength)
    total, count = job.steps_taken, len(job.noises)
    calls = 0

    def step_end(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        # One progress step per step of the whole job (its images run one after another).
        nonlocal calls
        calls += 1
        if on_step is not None and calls % count == 0:
            on_step(StepInfo(calls // count, total, int(t), kwargs["latents"]))
        return kwargs

    images = []
    for noise in job.noises:
        scheduler = make_scheduler(job.sampler, model.scheduler_config)
        pipe.scheduler = pipe.decoder_pipe.scheduler = scheduler
        generator = torch.Generator("cpu").manual_seed(noise.seed)
        with numpy_quiet(), warnings.catch_warnings():
            # The combined pipeline hands its parts a deprecated argument of its own.
            warnings.filterwarnings("ignore", "`callback_steps` is deprecated", FutureWarning)
            out = pipe(
                **options, generator=generator, callback_on_step_end=step_end, output_type="np"
            )
        images += pictures(out.images, "the pipeline", model.dtype)
    return images
