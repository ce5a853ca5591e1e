"""Test helpers shared by several test files (imported as `tests.helpers`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from invoke.backend.job import Job, Noise
from invoke.config.models_yaml import ModelEntry
from invoke.config.shown_defaults import ActiveModel, switch_defaults
from invoke.errors import InvokeError
from invoke.events import Saved, Tokens
from invoke.line.prompt_syntax import parse_prompt
from invoke.line.request import Request
from invoke.shell.batch import run_batch
from invoke.shell.runner import Runner


def readme_request(**changes: object) -> Request:
    """The first example line of docs/shell.md, with -A k_lms, as a Request, with `changes` on
    top."""
    fields: dict[str, object] = dict(
        prompt="a red circle on a blue background",
        steps=20,
        seed=42,
        width=64,
        height=64,
        cfg_scale=7.5,
        sampler="k_lms",
    )
    fields.update(changes)
    return Request(**fields)  # type: ignore[arg-type]


class FakeRunner:
    """A Runner (the whole protocol) that records what the shell or batch asks for; prompts
    containing a keyword misbehave the way a real run can (interrupt, crash, missing). Its model
    list holds one model, "fake"; its folders' names are `listed`; its seeds are those of the
    requests it ran, or `seeds` when a test sets them."""

    def __init__(self, outdir: Path, stored: dict[str, str] | None = None) -> None:
        self.outdir = outdir
        self.requests: list[Request] = []
        self.upscaled: list[Request] = []
        self.stored = stored or {}
        self.label = ""  # the prompt's text: "" for the plain `invoke> `
        self.seeds: list[int] | None = None
        self.listed: dict[str, list[str]] = {}  # "loras", "embeddings", ... -> names
        self.entry = ModelEntry("fake", "the fake runner's model", embedded=True, default=True)
        self.models = {self.entry.name: self.entry}

    def generate(self, request: Request) -> list[Path]:
        if "interrupt" in request.prompt:
            raise KeyboardInterrupt
        if "crash" in request.prompt:
            # Two lines: the front ends must still report it on one.
            raise RuntimeError("kaput\nsecond line")
        if "missing" in request.prompt:
            raise InvokeError("-I/--init_img: missing.png does not exist; give an image file")
        self.requests.append(request)
        return [self.outdir / f"{len(self.requests):06d}.png"]

    def canonical(self, request: Request) -> str:
        if "missing" in request.prompt:
            raise InvokeError("-I/--init_img: missing.png does not exist; give an image file")
        return f'"{request.prompt}" -s {request.steps or 50} -S {request.seed or 0}'

    def fetch(self, path: str) -> str:
        name = Path(path).name
        if name not in self.stored:
            raise InvokeError(f"{path}: no command stored in this PNG")
        return self.stored[name]

    def upscale_file(self, request: Request) -> list[Path]:
        self.upscaled.append(request)
        return [self.outdir / f"{len(self.requests) + len(self.upscaled):06d}.png"]

    def canonical_upscale(self, request: Request) -> str:
        return request.to_fix_command()

    def prompt_label(self) -> str:
        return self.label

    def active_model(self) -> ActiveModel:
        return ActiveModel(self.entry.name, "embedded", (64, 64), "k_euler", "cpu")

    def line_defaults(self) -> dict[str, str]:
        return switch_defaults(self.active_model())

    def finishing(self) -> bool:
        return False

    def recent_seeds(self) -> list[int]:
        if self.seeds is not None:
            return list(self.seeds)
        return [r.seed for r in [*self.requests, *self.upscaled] if r.seed is not None]

    def _listing(self, kind: str) -> tuple[list[Path], list[str]]:
        return [self.outdir / kind], sorted(self.listed.get(kind, []))

    def loras(self) -> tuple[list[Path], list[str]]:
        return self._listing("loras")

    def embeddings(self) -> tuple[list[Path], list[str]]:
        return self._listing("embeddings")

    def controlnets(self) -> tuple[list[Path], list[str]]:
        return self._listing("controlnets")

    def ip_adapters(self) -> tuple[list[Path], list[str]]:
        return self._listing("ip_adapters")

    def upscalers(self) -> tuple[list[Path], list[str]]:
        return self._listing("upscalers")

    def model_names(self) -> list[str]:
        return list(self.models)

    def model_entry(self, name: str) -> ModelEntry:
        if name not in self.models:
            raise InvokeError(f"model {name}: not in {self.models_file_name()}")
        return self.models[name]

    def model_state(self, name: str) -> str:
        return "active" if self.model_entry(name).name == self.entry.name else "not loaded"

    def switch(self, name: str) -> ModelEntry:
        self.entry = self.model_entry(name)
        return self.entry

    def models_file_name(self) -> str:
        return "the fake runner's model list"

    def change_models(self, change: Callable[[dict[str, Any]], None]) -> Path:
        """Applies `change` to the list's descriptions (nothing is written)."""
        bodies = {name: {"description": e.description} for name, e in self.models.items()}
        change(bodies)
        self.models = {
            name: replace(
                self.models.get(name, ModelEntry(name)), description=body.get("description", "")
            )
            for name, body in bodies.items()
        }
        return self.outdir / "models.yaml"


@dataclass
class RecordedBar:
    total: int
    label: str
    steps: int = 0
    closed: bool = False

    def advance(self, steps: int = 1) -> None:
        self.steps += steps

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class RecordedOutputs:
    number: int
    saved: tuple[Saved, ...]


@dataclass
class RecordingReporter:
    """A Reporter (invoke.events) that keeps what a run reported: `events` in order (a note is
    its text), and each kind on its own."""

    events: list[object] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        return [e for e in self.events if isinstance(e, str)]

    @property
    def bars(self) -> list[RecordedBar]:
        return [e for e in self.events if isinstance(e, RecordedBar)]

    @property
    def tokens_reported(self) -> list[Tokens]:
        return [e for e in self.events if isinstance(e, Tokens)]

    @property
    def saved(self) -> list[RecordedOutputs]:
        return [e for e in self.events if isinstance(e, RecordedOutputs)]

    def note(self, text: str) -> None:
        self.events.append(text)

    def tokens(self, tokens: Tokens) -> None:
        self.events.append(tokens)

    def progress(self, total: int, label: str) -> RecordedBar:
        bar = RecordedBar(total, label)
        self.events.append(bar)
        return bar

    def outputs(self, number: int, saved: list[Saved]) -> None:
        self.events.append(RecordedOutputs(number, tuple(saved)))


def batch(
    runner: Runner, lines: Iterable[str | bytes], **kw: Any
) -> tuple[int, list[str], list[str]]:
    """Run `lines` as a batch: its exit status, then what it printed to stdout and to stderr."""
    out: list[str] = []
    err: list[str] = []
    status = run_batch(runner, lines, out=out.append, err=err.append, **kw)
    return status, out, err


# -- the backend: jobs on the tiny models --------------------------------------------------------


def make_job(**changes: object) -> Job:
    """A small txt2img job (64x64, 4 k_euler steps, seed 42, a negative prompt), plus `changes`."""
    job = Job(
        prompt=parse_prompt("a red circle [blue]"),
        steps=4,
        cfg_scale=7.5,
        sampler="k_euler",
        width=64,
        height=64,
        noises=(Noise(42),),
    )
    if isinstance(changes.get("prompt"), str):  # a test's prompt text, read as a line's is
        changes["prompt"] = parse_prompt(str(changes["prompt"]))
    return replace(job, **changes)  # type: ignore[arg-type]


def pixels(images: list[Image.Image]) -> np.ndarray:
    """Images as one signed array, so differences between two runs do not wrap around."""
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def smooth_picture() -> Image.Image:
    """A 64x64 RGB gradient, so the VAE has something structured to encode."""
    y, x = np.mgrid[0:64, 0:64]
    return Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8))


def oracle_scheduler(sampler: str, model_config: dict[str, Any]) -> Any:
    """The diffusers scheduler a sampler name stands for, built from the table written out in
    tests/backend/test_backend_schedulers.py (EXPECTED), never from invoke's own map: the class
    named there, from the model's config with the listed options laid over it."""
    import diffusers

    from tests.backend.test_backend_schedulers import EXPECTED

    class_name, options = EXPECTED[sampler]
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    cls = _oracle_lms() if class_name == "LMSDiscreteScheduler" else getattr(diffusers, class_name)
    with warnings.catch_warnings():  # numpy 2's __array__ notes from diffusers' setup
        warnings.filterwarnings("ignore", message="__array", category=DeprecationWarning)
        return cls.from_config({**config, **options})


def _oracle_lms() -> type:
    """diffusers' LMSDiscreteScheduler, which needs scipy for its coefficients (not installed):
    here each coefficient is the exact integral of its Lagrange basis polynomial, taken with
    numpy's polynomial algebra (a method of the test's own, not invoke's Gauss-Legendre one)."""
    from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
    from numpy.polynomial import Polynomial

    class OracleLMS(LMSDiscreteScheduler):
        def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
            sigmas = [float(s) for s in self.sigmas]
            basis = Polynomial([1.0])
            for k in range(order):
                if k != current_order:
                    span = sigmas[t - current_order] - sigmas[t - k]
                    basis = basis * Polynomial([-sigmas[t - k] / span, 1.0 / span])
            integral = basis.integ()
            return float(integral(sigmas[t + 1]) - integral(sigmas[t]))

    return OracleLMS


def vae_mean_latents(pipe: Any, image: Any) -> Any:
    """`image`'s latents as we mean them, computed with diffusers' own parts only: the pipeline's
    image processor (unless `image` is a tensor it made), `vae.encode`, the posterior's mean times
    the VAE's scaling factor.

    diffusers' pipelines sample the posterior with the seed's generator, where we take its mean;
    no generator makes a sample equal the mean, so the oracle is handed these latents instead."""
    import torch

    with torch.no_grad():
        x = image if isinstance(image, torch.Tensor) else pipe.image_processor.preprocess(image)
        # contiguous: the processor's tensor is channels-last in memory, which on CPU moves the
        # tiny VAE's latents by up to 0.1 (a kernel's numerics, not a difference in meaning)
        x = x.to(pipe.vae.device, pipe.vae.dtype).contiguous()
        return pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor


def sd_pipeline(
    model: Any, sampler: str = "k_euler", pipeline: str = "StableDiffusionPipeline", **parts: Any
) -> Any:
    """diffusers' SD 1.x/2.x `pipeline` (a class name) on `model`'s parts and any other `parts`
    it takes (a controlnet): the oracle for our loop. Its scheduler is `oracle_scheduler`'s."""
    import diffusers

    pipe = getattr(diffusers, pipeline)(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=oracle_scheduler(sampler, model.scheduler_config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **parts,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_pipeline(
    model: Any, sampler: str, pipeline: str = "StableDiffusionXLPipeline", **parts: Any
) -> Any:
    """diffusers' SDXL `pipeline` (a class name) on `model`'s parts and any other `parts` it
    takes (a controlnet): the oracle for our loop. Its scheduler is `oracle_scheduler`'s."""
    import diffusers

    extra = dict(parts)
    if pipeline in ("StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"):
        extra["requires_aesthetics_score"] = model.family == "sdxl-refiner"
    pipe = getattr(diffusers, pipeline)(
        vae=model.vae,
        text_encoder=model.text_encoder,
        text_encoder_2=model.text_encoder_2,
        tokenizer=model.tokenizer,
        tokenizer_2=model.tokenizer_2,
        unet=model.unet,
        scheduler=oracle_scheduler(sampler, model.scheduler_config),
        force_zeros_for_empty_prompt=model.force_zeros_for_empty_prompt,
        **extra,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- 9-channel inpainting models against diffusers' inpaint pipelines ----------------------------


def inpaint_job(**changes: object) -> Job:
    """smooth_picture with a 24x32 hole to redraw, at full strength: 3 k_euler_a steps, seed 3."""
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[16:48, 16:40] = 255
    fields = dict(
        steps=3, sampler="k_euler_a", noises=(Noise(3),), init_image=smooth_picture(),
        mask=Image.fromarray(mask), strength=1.0,
    )  # fmt: skip
    return make_job(**{**fields, **changes})


def diffusers_inpaint(pipe: Any, job: Job) -> np.ndarray:
    """diffusers' inpaint `pipe` (SD or SDXL) run as `job` (prompt, sizes, steps, seeds), as
    pixels. No init image and no mask (txt2img) is a black image all redrawn.

    The pipeline's own mask handling is used (its mask processor; the masked image is the init
    image where the binarized mask keeps), but its latents are encoded here with diffusers' VAE as
    the posterior's mean (`vae_mean_latents`), where the pipeline would sample the posterior with
    the seed's generator: we use the mean, and no generator makes a sample equal it. Given
    `masked_image_latents`, and below full strength init latents, the pipeline takes them as
    they are."""
    import torch

    (positive,) = job.prompt.positive
    negative = job.prompt.negative.text
    size = (job.width, job.height)
    init, mask, strength = job.init_image, job.mask, job.strength
    if init is None:
        init, strength = Image.new("RGB", size), 1.0
    mask = Image.new("L", size, 255) if mask is None else mask
    keep = pipe.mask_processor.preprocess(mask, height=job.height, width=job.width) < 0.5
    masked = pipe.image_processor.preprocess(init, height=job.height, width=job.width) * keep
    images = pipe(
        prompt=positive.text, negative_prompt=negative or None,
        image=init if strength >= 1 else vae_mean_latents(pipe, init),
        mask_image=mask, masked_image_latents=vae_mean_latents(pipe, masked),
        strength=strength, num_inference_steps=job.steps, guidance_scale=job.cfg_scale,
        height=job.height, width=job.width,
        generator=[torch.Generator().manual_seed(noise.seed) for noise in job.noises],
    ).images  # fmt: skip
    return pixels(images)


def redrawn_difference(ours: np.ndarray, theirs: np.ndarray, job: Job) -> int:
    """The largest pixel difference between two batches of `job` where its mask redraws; where it
    keeps, ours must be the init image to the pixel."""
    if job.mask is None:
        return int(np.abs(ours - theirs).max())
    redrawn = np.asarray(job.mask) == 255
    init = np.asarray(job.init_image, dtype=np.int16)
    assert all(np.array_equal(image[~redrawn], init[~redrawn]) for image in ours)
    return int(np.abs(ours[:, redrawn] - theirs[:, redrawn]).max())


def roll_error(model: Any, job: Job, monkeypatch: Any, dx: int, dy: int) -> tuple[float, int]:
    """How far `job` is from a torus: make it from its starting noise, and from that noise rolled
    by (dx, dy) latent cells; return the largest difference between the second one's latents
    (before decoding) and the first one's rolled as much, and the same for the pictures (rolled
    by as many pixels).

    The latents' error is float rounding when every UNet convolution wraps around (--seamless);
    large with zero padding, where the edges differ from the middle. The pictures' error is small
    but not zero with --seamless: the decoder sees a circular margin, not a torus. The roll must
    be whole cells of the UNet's coarsest grid for the downsampling to commute with it.
    """
    import torch

    from invoke.backend import generate as generate_module

    original_noise, original_decode = generate_module.image_noise, model.decode
    latents: list[Any] = []

    def rolled(noise: Any, shape: tuple[int, ...]) -> Any:
        start, generator = original_noise(noise, shape)
        return torch.roll(start, (dy, dx), dims=(2, 3)), generator

    def decode(batch: Any) -> Any:
        latents.append(batch.clone())
        return original_decode(batch)

    with monkeypatch.context() as patch:
        patch.setattr(model, "decode", decode)
        picture = pixels(model.generate(job))[0]
        patch.setattr(generate_module, "image_noise", rolled)
        from_rolled = pixels(model.generate(job))[0]
    cell = model.size_multiple
    expected = torch.roll(latents[0], (dy, dx), dims=(2, 3))
    latent_error = float((latents[1] - expected).abs().max())
    expected_picture = np.roll(picture, (dy * cell, dx * cell), axis=(0, 1))
    return latent_error, int(np.abs(from_rolled - expected_picture).max())


# -- LoRA files for the tiny models ---------------------------------------------------------------


def layers(part: Any, where: tuple[str, ...]) -> dict[str, Any]:
    """The Linear/Conv2d layers whose names contain one of `where`."""
    from torch import nn

    return {
        n: m
        for n, m in part.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d) and any(w in n for w in where)
    }


def kohya_file(
    model: Any, path: Path, seed: int = 0, rank: int = 2, alpha: float = 1.0, ldm: bool = False
) -> Path:
    """A LoRA in kohya's layout for `model`: attention, feed-forward and resnet convolutions of
    the UNet (3x3 ones too: LoCon) and every Linear of the text encoders. `ldm`: UNet layers under
    the original SD names (as kohya writes SDXL files)."""
    import torch
    from safetensors.torch import save_file

    from tests.fixtures.tiny_families import unet_to_ldm

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    unet_layers = layers(model.unet, ("attentions", "resnets"))
    names = {n: n for n in unet_layers}
    if ldm:
        renamed = unet_to_ldm({f"{n}.weight": torch.zeros(1) for n in names}, model.unet.config)
        names = {
            old.removesuffix(".weight"): new.removeprefix("model.diffusion_model.").removesuffix(
                ".weight"
            )
            for old, new in zip((f"{n}.weight" for n in names), renamed, strict=True)
        }
    parts: list[tuple[str, dict[str, Any], dict[str, str]]] = [("lora_unet_", unet_layers, names)]
    encoders = [("text_encoder", "lora_te1_" if model.text_encoder_2 else "lora_te_")]
    encoders.append(("text_encoder_2", "lora_te2_"))
    for attr, prefix in encoders:
        part = getattr(model, attr)
        if part is not None:
            found = layers(part, ("layers",))
            parts.append((prefix, found, {n: n for n in found}))
    for prefix, found, renames in parts:
        for name, module in found.items():
            key = prefix + renames[name].replace(".", "_")
            weight = module.weight
            down_shape = (rank, *weight.shape[1:])
            up_shape = (weight.shape[0], rank) + ((1, 1) if weight.ndim == 4 else ())
            tensors[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=generator) / 4
            tensors[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=generator) / 4
            tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path))
    return path


# -- textual inversion embeddings -----------------------------------------------------------------


def embedding_vectors(count: int, width: int = 32, seed: int = 0) -> Any:
    """`count` random vectors for the tiny models' 32-wide text encoders, larger than their own
    token rows so that a picture shows them."""
    import torch

    return torch.randn(count, width, generator=torch.Generator().manual_seed(seed)) * 3


def embedding_file(path: Path, count: int = 2, width: int = 32, seed: int = 0) -> Path:
    """An AUTOMATIC1111 .safetensors embedding (`emb_params`) at `path`."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": embedding_vectors(count, width, seed)}, str(path))
    return path


def type_into_shell(session: Any, keys: str) -> list[str]:
    """Type `keys` into the real invoke> shell (no terminal); what it printed, line by line."""
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from invoke.shell.repl import banner, run_repl

    printed: list[str] = []
    opening = banner(session.active_model())
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        status = run_repl(
            session, input=pipe, output=DummyOutput(), out=printed.append, err=printed.append
        )
    assert status == 0
    assert printed[:1] == [opening]  # the shell opens with its banner; the rest is the test's
    return printed[1:]
