"""Loading a model onto a device, and the `Model` the session drives.

Sources: a diffusers folder (SD 1.x/2.x, SDXL base and refiner, Kandinsky 2.2), or one original-
layout checkpoint file (single_file.py). The family is read from the files (families.py). Each
component is loaded on its own from local files (safetensors unless the user allowed pickle: model
files are untrusted), so a broken folder is reported as the one part that is wrong, in one line.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import SafetensorError

from invoke.backend.families import (
    FAMILIES,
    KANDINSKY_PIPELINES,
    SDXL_FAMILIES,
    default_sampler,
    folder_family,
    recommended_sampler,
)
from invoke.backend.job import Job, StepInfo
from invoke.errors import InvokeError, ModelError

log = logging.getLogger(__name__)

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
# The folders each family needs (the SDXL refiner has only the second, OpenCLIP, text encoder).
FAMILY_COMPONENTS = {
    "sdxl": (
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "text_encoder_2",
        "tokenizer_2",
        "scheduler",
    ),
    "sdxl-refiner": ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"),
}
# Images with more pixels than this many native-size squares are VAE-coded in tiles: a large
# --fit image would otherwise need the whole picture's activations at once (GBs at 2048 px).
TILING_AREA = 2
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
    """auto = float16 on GPUs (CUDA, MPS: half the memory, tensor cores), float32 on CPUs."""
    if precision == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if precision not in PRECISIONS:
        raise ModelError(f"--precision: {precision} is not one of auto, float32, float16, bfloat16")
    return PRECISIONS[precision]


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
    # rgb = latents @ factors + bias; SD 1.x's table unless the folder ships its VAE's own.
    latent_rgb_factors: tuple[tuple[float, float, float], ...] = SD1_LATENT_RGB
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # The sampler its makers recommend (the default model's training.json says which).
    recommended_sampler: str | None = None
    family: str = "sd-1"  # a key of families.FAMILIES
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
    def size_multiple(self) -> int:
        """Image sides must be multiples of it: pixels per latent cell.

        Kandinsky's pipeline rounds sides up to the square of its cell (64 px) and would return
        another size than asked.
        """
        cell = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return cell * cell if self.family == "kandinsky-2.2" else cell

    @property
    def default_sampler(self) -> str:
        """The sampler to use when the line names none: the model's recommendation, else k_lms
        (InvokeAI's default), except on Kandinsky, whose loop cannot run k_lms."""
        return default_sampler(self.family, self.recommended_sampler)

    @property
    def inpainting(self) -> bool:
        """A 9-channel inpainting UNet (sd-v1-5-inpainting and the like)."""
        return int(self.unet.config.in_channels) == 9

    @property
    def native_size(self) -> int:
        """The side length the model was trained at (512 for SD 1.5, 64 for the test model)."""
        latent_cell = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * latent_cell

    def generate(
        self,
        job: Job,
        on_step: Callable[[StepInfo], None] | None = None,
        on_event: Callable[[object], None] | None = None,
    ) -> list[Image.Image]:
        """One image per `Noise` of the job, all in one UNet batch.

        Out of memory, in any family, is one InvokeError saying what to try (speed.guard_memory).
        """
        from invoke.backend.seamless import wrapped_convolutions, wrapped_decoder
        from invoke.backend.speed import guard_memory

        self.prepare(job)
        if hasattr(self.vae, "use_tiling"):  # AutoencoderKL; Kandinsky's VQModel cannot tile
            big = job.width * job.height > TILING_AREA * self.native_size**2
            # A seamless picture decodes whole: tiles sit at fixed places and blend where they
            # overlap, so the picture would stop being the same across the wrapped edges (and
            # it is decoded with a circular margin, seamless.py, which tiles do not know about).
            tile = big and not job.seamless_axes
            self.vae.enable_tiling() if tile else self.vae.disable_tiling()
        if self.family in SDXL_FAMILIES:
            from invoke.backend.sdxl import generate
        elif self.family == "kandinsky-2.2":
            from invoke.backend.kandinsky import generate
        else:
            from invoke.backend.generate import generate
        # --seamless holds for this job only: the convolutions are put back when it ends, however
        # it ends. Intermediates decoded in on_step are inside the block, so they tile too.
        axes = job.seamless_axes
        with wrapped_convolutions((self.unet,), axes), wrapped_decoder(self.vae, axes):
            return guard_memory(self, job, lambda: generate(self, job, on_step))

    def prepare(self, job: Job) -> list[str]:
        """What can fail before a step is taken: switches this family cannot honour, and the
        LoRAs the prompt names (merged now, kept for the next job that names the same) and its
        ControlNet (loaded now, kept likewise). Returns what was done worth telling the user
        (a line per LoRA merged now, one for a ControlNet loaded now)."""
        self._refuse(job)
        if self.pipeline is not None:  # Kandinsky: diffusers' pipeline, none of these (refused)
            return []
        from invoke.backend.control import use_controlnet
        from invoke.backend.lora import use_loras

        notes = use_loras(self, job.loras)
        if job.control is not None and use_controlnet(self, job.control)[1]:
            notes.append(f"ControlNet {job.control.name} loaded")
        return notes

    def _refuse(self, job: Job) -> None:
        """Switches this family cannot honour: one line each, never silently ignored."""
        what = f"model {self.name} ({self.family})"
        if self.family == "sdxl-refiner" and job.init_image is None:
            raise InvokeError(f"{what} only refines images: give an init image with -I")
        if self.family != "kandinsky-2.2":
            return
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
        # diffusers' Kandinsky pipelines draw their own noise and own their loop.
        if any(n.variations for n in job.noises):
            raise InvokeError(f"-v/-V: {what} cannot make variations; drop -v/-V")
        if job.intermediate_every:
            raise InvokeError(f"--save_intermediates: {what} cannot save intermediates")
        if job.mask is not None:
            raise InvokeError(f"-M/--init_mask: {what} cannot inpaint; drop the mask")

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
            if self.dtype == torch.float32 or not torch.isnan(check).any():
                return result
            log.warning(
                "model %s: the VAE gives NaN in %s; decoding in float32 from now on (slower)",
                self.name,
                str(self.dtype).removeprefix("torch."),
            )
            self._vae_fp32 = True
        self.vae.to(torch.float32)
        try:
            return run(torch.float32)
        finally:
            self.vae.to(self.dtype)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """The VAE's pictures of `latents` (batch, 4, h, w), as diffusers' pipelines make them."""
        scaled = latents / self.vae.config.scaling_factor
        pixels = self.vae_run("decode", scaled).float()
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
    family: str | None = None,
    config: str | Path | None = None,
    vae: str | Path | None = None,
) -> Model:
    """Load a diffusers folder or a single checkpoint file; raise ModelError naming what is wrong.

    offload: keep parts in CPU memory, on the GPU only while used (small GPUs; no-op on the CPU).
    allow_pickle: let pickle checkpoints (.ckpt/.pt/.bin) load, still with weights_only=True.
    compile: torch.compile the UNet (None = decide by device and workload).
    family: the family when the files cannot tell (SD 2.x single files: sd-2 or sd-2-v).
    config: a diffusers config folder for a single file (default: the family's shipped one).
    vae: another VAE for the model (a VAE folder, a model folder, or one VAE file).
    """
    source = Path(path).expanduser()
    if source.is_file():
        return _load_file(
            source, device, precision, name, offload, allow_pickle, compile, family, config, vae
        )
    folder = source
    if not folder.is_dir():
        raise ModelError(
            f"model {folder}: no such folder or file; give a diffusers model folder or a "
            f".safetensors checkpoint"
        )
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
    if not isinstance(index, dict):
        raise ModelError(f"model {folder}: model_index.json is not a JSON object")
    detected = folder_family(folder, index)
    if family is not None and family not in FAMILIES:
        raise ModelError(f"family: {family} is not one of {', '.join(FAMILIES)}")
    if family is not None and _kind(family) != _kind(detected):
        raise ModelError(f"model {folder}: family {family} given, but the folder holds {detected}")
    family = family or detected
    components = FAMILY_COMPONENTS.get(family, COMPONENTS)
    if index.get("_class_name") in KANDINSKY_PIPELINES:
        components = ("unet", "movq", "scheduler")
        if "prior_prior" in index:  # a combined folder holds its prior
            components += ("prior_prior", "prior_text_encoder", "prior_image_encoder")
    missing = [c for c in components if not (folder / c).is_dir()]
    if missing:
        raise ModelError(f"model {folder}: missing {', '.join(m + '/' for m in missing)}")
    if not allow_pickle:
        _refuse_pickle_only(folder, components)

    torch_device = pick_device(device)
    dtype = pick_dtype(precision, torch_device)
    if family == "kandinsky-2.2":
        from invoke.backend.kandinsky import load_kandinsky

        parts = load_kandinsky(folder, torch_device, dtype, offload=offload)
    else:
        parts = _load_parts(folder, dtype, components, allow_pickle)
        if family in SDXL_FAMILIES:
            parts["force_zeros_for_empty_prompt"] = bool(
                index.get("force_zeros_for_empty_prompt", True)
            )
    _replace_vae(parts, vae, dtype, allow_pickle, family)
    return _finish(
        name or folder.name, folder, torch_device, dtype, family, parts, offload, compile,
        _preview_factors(folder),
    )  # fmt: skip


def _replace_vae(
    parts: dict[str, Any],
    vae: str | Path | None,
    dtype: torch.dtype,
    allow_pickle: bool,
    family: str,
) -> None:
    if vae is None:
        return
    if family == "kandinsky-2.2":
        raise ModelError(f"vae {vae}: kandinsky-2.2 models keep their own MoVQ decoder")
    from invoke.backend.single_file import load_vae

    parts["vae"] = load_vae(vae, dict(parts["vae"].config), dtype, allow_pickle)


def _kind(family: str) -> str:
    """sd-2 and sd-2-v share their files; a v-prediction choice is not a contradiction."""
    return "sd-2" if family in ("sd-2", "sd-2-v") else family


def _load_file(
    file: Path,
    device: str,
    precision: str,
    name: str | None,
    offload: bool,
    allow_pickle: bool,
    compile: bool | None,
    family: str | None,
    config: str | Path | None,
    vae: str | Path | None = None,
) -> Model:
    from invoke.backend.single_file import load_single_file, read_checkpoint

    torch_device = pick_device(device)
    dtype = pick_dtype(precision, torch_device)
    if family == "kandinsky-2.2":
        read_checkpoint(file, allow_pickle)  # the pickle refusal comes first
        raise ModelError(f"model {file}: kandinsky-2.2 models load from diffusers folders only")
    family, parts = load_single_file(
        file, dtype, allow_pickle=allow_pickle, family=family, config=config
    )
    _replace_vae(parts, vae, dtype, allow_pickle, family)
    return _finish(
        name or file.stem, file, torch_device, dtype, family, parts, offload, compile, {}
    )


def _finish(
    name: str,
    path: Path,
    torch_device: torch.device,
    dtype: torch.dtype,
    family: str,
    parts: dict[str, Any],
    offload: bool,
    compile: bool | None,
    preview: dict[str, Any],
) -> Model:
    if parts["unet"].config.in_channels not in UNET_CHANNELS:
        raise ModelError(
            f"model {path}: its UNet takes {parts['unet'].config.in_channels} input channels; "
            f"only 4 (Stable Diffusion) or 9 (its inpainting models) are supported"
        )
    for module in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if parts.get(module) is not None:
            parts[module].eval().requires_grad_(False)
            if not offload and parts.get("pipeline") is None:
                parts[module].to(torch_device)
    if family in SDXL_FAMILIES and "latent_rgb_factors" not in preview:
        from invoke.backend.sdxl import SDXL_LATENT_RGB, SDXL_LATENT_RGB_BIAS

        preview |= {"latent_rgb_factors": SDXL_LATENT_RGB, "latent_rgb_bias": SDXL_LATENT_RGB_BIAS}
    model = Model(
        name=name, path=path, device=torch_device, dtype=dtype, family=family, **parts, **preview
    )
    if offload and model.pipeline is None:
        from invoke.backend.offload import enable_offload

        model.offloader = enable_offload(model)
    # The CUDA fast path (channels_last, fused QKV, compile where it pays): see speed.py.
    from invoke.backend.speed import prepare

    prepare(model, compile)
    return model


def _refuse_pickle_only(folder: Path, components: tuple[str, ...]) -> None:
    """A part whose weights exist only as pickle (.bin/.ckpt/.pt) needs --allow-pickle."""
    for part in components:
        files = [p.suffix for p in (folder / part).iterdir() if p.is_file()]
        if (
            any(s in (".bin", ".ckpt", ".pt", ".pth") for s in files)
            and ".safetensors" not in files
        ):
            raise ModelError(
                f"model {folder}: {part}/ has only pickle weights (.bin), which can run code "
                f"when loaded; pickle files need --allow-pickle"
            )


def _preview_factors(folder: Path) -> dict[str, Any]:
    """What a model folder's training.json (the default model's) says of it: its VAE's own
    latent->RGB fit and the sampler it works best with.

    SD 1.x's table is wrong for any other VAE; a missing or unusable file just keeps it.
    """
    try:
        meta = json.loads((folder / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    notes: dict[str, Any] = {}
    recommended = recommended_sampler(folder)
    if recommended is not None:
        notes["recommended_sampler"] = recommended
    try:
        factors = tuple(tuple(float(v) for v in row) for row in meta["latent_rgb_factors"])
        bias = tuple(float(v) for v in meta.get("latent_rgb_bias", (0.0, 0.0, 0.0)))
    except (ValueError, KeyError, TypeError):
        return notes
    if len(factors) == 4 and all(len(row) == 3 for row in factors) and len(bias) == 3:
        notes |= {"latent_rgb_factors": factors, "latent_rgb_bias": bias}
    return notes


def _load_parts(
    folder: Path, dtype: torch.dtype, components: tuple[str, ...], allow_pickle: bool = False
) -> dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    # Pickle weights (.bin) only when allowed; both libraries then read them weights_only=True.
    safetensors = None if allow_pickle else True
    # low_cpu_mem_usage=False: without accelerate diffusers warns at length and does this anyway.
    diffusers_options = {
        "torch_dtype": dtype,
        "local_files_only": True,
        "use_safetensors": safetensors,
    }
    text_options = {"dtype": dtype, "local_files_only": True, "use_safetensors": safetensors}
    loaders: dict[str, Callable[[], Any]] = {
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(
            folder / "tokenizer", local_files_only=True
        ),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(
            folder / "text_encoder", **text_options
        ),
        "tokenizer_2": lambda: CLIPTokenizer.from_pretrained(
            folder / "tokenizer_2", local_files_only=True
        ),
        "text_encoder_2": lambda: CLIPTextModelWithProjection.from_pretrained(
            folder / "text_encoder_2", **text_options
        ),
        "unet": lambda: UNet2DConditionModel.from_pretrained(
            folder / "unet", low_cpu_mem_usage=False, **diffusers_options
        ),
        "vae": lambda: AutoencoderKL.from_pretrained(
            folder / "vae", low_cpu_mem_usage=False, **diffusers_options
        ),
        "scheduler_config": lambda: _read_json(folder / "scheduler" / "scheduler_config.json"),
    }
    wanted = [p for p in loaders if p.removesuffix("_config") in components]
    parts: dict[str, Any] = {"tokenizer": None, "text_encoder": None}
    # transformers draws a "Loading weights" bar per model; the front ends draw their own.
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        for part in wanted:
            try:
                parts[part] = loaders[part]()
            except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as err:
                # Library messages run to many lines; the first names the file or key at fault.
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                where = part.removesuffix("_config")
                damage = _damaged_weights(folder / where)
                if damage is not None:
                    name, why = damage
                    raise ModelError(
                        f"model {folder}: {where}/{name} is damaged ({why}); download or convert "
                        f"the model again"
                    ) from err
                raise ModelError(f"model {folder}: cannot load {where}/ ({first})") from err
    finally:
        if bars:
            transformers_logging.enable_progress_bar()
    return parts


def _damaged_weights(part: Path) -> tuple[str, str] | None:
    """The first .safetensors file in `part` whose header is unreadable, and why.

    diffusers reports a bad file as "Unable to load weights from checkpoint file for X at X",
    hiding the reason; reading just the header (safe_open checks it against the file's size, so a
    truncated download shows too) tells the user which file to replace.
    """
    from safetensors import safe_open

    if not part.is_dir():
        return None
    for file in sorted(part.glob("*.safetensors")):
        try:
            with safe_open(file, framework="pt"):
                pass
        except SafetensorError as err:
            return file.name, str(err).strip().splitlines()[0] or type(err).__name__
    return None


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data
