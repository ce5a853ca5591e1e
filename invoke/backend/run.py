"""One job on a loaded model: what its family refuses, the LoRAs and ControlNet it names, VAE
tiling, --seamless, the out-of-memory guard, then the family's own generate."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from invoke.backend.control import use_controlnet
from invoke.backend.families import FAMILIES
from invoke.backend.families.sdxl import check_refiner, generate_refined, refuse_refiner
from invoke.backend.finite import check_latents
from invoke.backend.image_prompt import attached, use_adapter
from invoke.backend.lora import use_loras
from invoke.backend.seamless import wrapped_convolutions, wrapped_decoder
from invoke.backend.speed import guard_memory
from invoke.errors import InvokeError
from invoke.events import Step

if TYPE_CHECKING:
    from PIL import Image

    from invoke.backend.job import Job, StepInfo
    from invoke.backend.model import Model, OnEvent, OnStep

# Images with more pixels than this many native-size squares are VAE-coded in tiles: a large
# --fit image would otherwise need the whole picture's activations at once (GBs at 2048 px).
TILING_AREA = 2


class JobRunner:
    """Model.generate and Model.prepare (every Model loading.py makes is given RUNNER)."""

    def generate(
        self,
        model: Model,
        job: Job,
        on_step: OnStep | None = None,
        on_event: OnEvent | None = None,
        refiner: Model | None = None,
    ) -> list[Image.Image]:
        """One image per `Noise` of the job, all in one UNet batch. -t's tokens go to on_event;
        `refiner`: job.refiner's model (families/sdxl.py hands the latents over to it).

        Out of memory, in any family, is one InvokeError saying what to try (speed.guard_memory).
        """
        family = FAMILIES[model.family]
        self.prepare(model, job)
        if hasattr(model.vae, "use_tiling"):  # AutoencoderKL; Kandinsky's VQModel cannot tile
            big = job.width * job.height > TILING_AREA * model.native_size**2
            # A seamless picture decodes whole: tiles sit at fixed places and blend where they
            # overlap, so the picture would stop being the same across the wrapped edges (and
            # it is decoded with a circular margin, seamless.py, which tiles do not know about).
            tile = big and not job.seamless_axes
            model.vae.enable_tiling() if tile else model.vae.disable_tiling()
        # --seamless holds for this job only: the convolutions are put back when it ends, however
        # it ends. Intermediates decoded in on_step are inside the block, so they tile too.
        axes = job.seamless_axes
        # So does --ip_adapter: its attention processors are the UNet's for this job only.
        with (
            wrapped_convolutions((model.unet,), axes),
            wrapped_decoder(model.vae, axes),
            attached(model, job),
        ):
            if refiner is not None:
                check_refiner(model, refiner, job)
                return guard_memory(
                    model, job, lambda: generate_refined(model, refiner, job, on_step, on_event)
                )
            return guard_memory(model, job, lambda: family.generate(model, job, on_step, on_event))

    def prepare(self, model: Model, job: Job) -> list[str]:
        """What can fail before a step is taken: switches this family cannot honour, and the
        LoRAs the prompt names (merged now, kept for the next job that names the same) and its
        ControlNet (loaded now, kept likewise). Returns what was done worth telling the user
        (a line per LoRA merged now, one for a ControlNet loaded now)."""
        FAMILIES[model.family].refuse(model, job)
        refuse_refiner(model, job)
        notes = use_loras(model, job.loras)
        for slot, control in enumerate(job.controls):
            if use_controlnet(model, control, slot)[1]:
                notes.append(f"ControlNet {control.name} loaded")
        if job.image_prompt is not None and job.refiner is not None:
            raise InvokeError(
                "--ip_adapter: acts on one model's UNet, and --refiner hands the picture to "
                "another; drop --refiner or --ip_adapter"
            )
        if job.image_prompt is not None and use_adapter(model, job.image_prompt)[1]:
            notes.append(f"IP-Adapter {job.image_prompt.name} loaded")
        return notes


RUNNER = JobRunner()


def draw(
    model: Model,
    job: Job,
    on_step: Callable[[Step], None] | None = None,
    on_event: OnEvent | None = None,
    refiner: Model | None = None,
) -> list[Image.Image]:
    """The job's pictures (`refiner`: job.refiner's model), with an events.Step after each step:
    plain values a caller in another process could be sent. The steps the job keeps
    (intermediate_every) carry their latents as a float32 array and each picture's preview, or
    its VAE decode (job.intermediates)."""
    every = job.intermediate_every

    def step(info: StepInfo) -> None:
        if on_step is None:
            return
        if not every or (info.step % every and info.step != info.total):
            # The last step always carries the final latents (--save_latents keeps them).
            last = info.latents.float().cpu().numpy() if info.step == info.total else None
            on_step(Step(info.step, info.total, float(info.timestep), last))
            return
        # A kept step becomes a picture too: latents gone NaN stop the line here, blamed on
        # the denoising (not on the VAE that would decode them).
        check_latents(info.latents, model.dtype, job)
        show = model.decode if job.intermediates == "decode" else model.preview
        pictures = tuple(show(info.latents))
        latents = info.latents.float().cpu().numpy()
        on_step(Step(info.step, info.total, float(info.timestep), latents, pictures))

    return model.generate(job, on_step=step, on_event=on_event, refiner=refiner)
