"""The samplers: one row each, the only place a sampler is defined.

A row holds the name typed after -A, the diffusers scheduler that runs it (its class name, and
the settings laid over the model's own scheduler config), the label AUTOMATIC1111 writes in a
picture's `parameters`, and the model families whose sampling loop can run it. The line parser,
the backend's schedulers, the metadata writers and readers and the families all read this table:
adding a sampler is adding a row here (and its test).

Pure data: nothing here imports torch or diffusers (the backend looks the class up by name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SAMPLERS",
    "SAMPLER_TABLE",
    "Sampler",
    "a1111_label",
    "from_a1111",
    "from_invokeai",
    "listing",
]

# Every model family that runs our own sampling loop (Stable Diffusion 1.x/2.x, SDXL) takes every
# sampler here; a family that runs another loop lists the ones it can take (Kandinsky 2.2, in
# backend/families/kandinsky.py).


@dataclass(frozen=True)
class Sampler:
    """One sampler: what it is called here and in AUTOMATIC1111, and what runs it."""

    name: str  # as typed after -A, and as stored in our metadata
    scheduler: str  # the diffusers scheduler class, by name
    a1111: str  # AUTOMATIC1111's "Sampler:" label, written and read back in `parameters`
    options: dict[str, Any] = field(default_factory=dict)  # over the model's scheduler config
    # AUTOMATIC1111's "Schedule type:" label for the sigmas that run ("Karras", "Exponential");
    # "" is the model's own schedule.
    schedule: str = ""
    needs: str = ""  # a Python package diffusers needs to run it, not installed with invoke


# The diffusers schedulers that take the sigma options: every row of theirs says which sigmas it
# runs, so a model whose scheduler_config.json asks for Karras sigmas does not change what a
# sampler's label says.
_SIGMA_OPTIONS = (
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "DEISMultistepScheduler",
    "UniPCMultistepScheduler",
)


def _row(
    name: str, scheduler: str, a1111: str, schedule: str = "", needs: str = "", **options: Any
) -> Sampler:
    if scheduler in _SIGMA_OPTIONS:
        options = {
            "use_karras_sigmas": schedule == "Karras",
            "use_exponential_sigmas": schedule == "Exponential",
            **options,
        }
    return Sampler(name, scheduler, a1111, options, schedule, needs)


_DPM = "DPMSolverMultistepScheduler"
_DPM1 = "DPMSolverSinglestepScheduler"
_SDE = "sde-dpmsolver++"

_ROWS: tuple[Sampler, ...] = (
    # InvokeAI 1.x-2.3's names.
    _row("ddim", "DDIMScheduler", "DDIM"),
    _row("plms", "PNDMScheduler", "PLMS", skip_prk_steps=True),
    _row("k_lms", "LMSDiscreteScheduler", "LMS"),
    _row("k_euler", "EulerDiscreteScheduler", "Euler"),
    _row("k_euler_a", "EulerAncestralDiscreteScheduler", "Euler a"),
    _row("k_heun", "HeunDiscreteScheduler", "Heun"),
    _row("k_dpm_2", "KDPM2DiscreteScheduler", "DPM2"),
    _row("k_dpm_2_a", "KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    _row("k_dpmpp_2", _DPM, "DPM++ 2M", algorithm_type="dpmsolver++", solver_order=2),
    # InvokeAI 2.3 called this one "k_dpmpp_2_a" and ran diffusers' multistep SDE solver.
    _row("k_dpmpp_2_a", _DPM, "DPM++ 2M SDE", algorithm_type=_SDE, solver_order=2),
    # InvokeAI 3.x-5.x's names (its SCHEDULER_MAP): "_k" is Karras sigmas.
    _row("ddpm", "DDPMScheduler", "DDPM"),
    _row("deis", "DEISMultistepScheduler", "DEIS"),
    _row("deis_k", "DEISMultistepScheduler", "DEIS", "Karras"),
    _row("lms", "LMSDiscreteScheduler", "LMS"),
    _row("lms_k", "LMSDiscreteScheduler", "LMS", "Karras"),
    _row("pndm", "PNDMScheduler", "PLMS", skip_prk_steps=True),
    _row("heun", "HeunDiscreteScheduler", "Heun"),
    _row("heun_k", "HeunDiscreteScheduler", "Heun", "Karras"),
    _row("euler", "EulerDiscreteScheduler", "Euler"),
    _row("euler_k", "EulerDiscreteScheduler", "Euler", "Karras"),
    _row("euler_a", "EulerAncestralDiscreteScheduler", "Euler a"),
    _row("kdpm_2", "KDPM2DiscreteScheduler", "DPM2"),
    _row("kdpm_2_k", "KDPM2DiscreteScheduler", "DPM2", "Karras"),
    _row("kdpm_2_a", "KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    _row("kdpm_2_a_k", "KDPM2AncestralDiscreteScheduler", "DPM2 a", "Karras"),
    # diffusers turns lower_order_final on for every schedule that ends at sigma 0 (all here),
    # with a warning on the terminal each time: on from the start, the same numbers.
    _row("dpmpp_2s", _DPM1, "DPM++ 2S", solver_order=2, lower_order_final=True),
    _row("dpmpp_2s_k", _DPM1, "DPM++ 2S", "Karras", solver_order=2, lower_order_final=True),
    _row("dpmpp_2m", _DPM, "DPM++ 2M", algorithm_type="dpmsolver++", solver_order=2),
    _row("dpmpp_2m_k", _DPM, "DPM++ 2M", "Karras", algorithm_type="dpmsolver++", solver_order=2),
    _row("dpmpp_2m_sde", _DPM, "DPM++ 2M SDE", algorithm_type=_SDE, solver_order=2),
    _row("dpmpp_2m_sde_k", _DPM, "DPM++ 2M SDE", "Karras", algorithm_type=_SDE, solver_order=2),
    _row("dpmpp_3m", _DPM, "DPM++ 3M", algorithm_type="dpmsolver++", solver_order=3),
    _row("dpmpp_3m_k", _DPM, "DPM++ 3M", "Karras", algorithm_type="dpmsolver++", solver_order=3),
    # DPM++ SDE draws its noise from a Brownian tree: diffusers needs the torchsde package.
    _row("dpmpp_sde", "DPMSolverSDEScheduler", "DPM++ SDE", needs="torchsde"),
    _row("dpmpp_sde_k", "DPMSolverSDEScheduler", "DPM++ SDE", "Karras", needs="torchsde"),
    _row("unipc", "UniPCMultistepScheduler", "UniPC"),
    _row("unipc_k", "UniPCMultistepScheduler", "UniPC", "Karras"),
    _row("lcm", "LCMScheduler", "LCM"),
    _row("tcd", "TCDScheduler", "TCD"),
    # Ours: AUTOMATIC1111 1.9+'s DPM++ 2M SDE on its default schedule (Exponential).
    _row(
        "dpmpp_2m_sde_exp", _DPM, "DPM++ 2M SDE", "Exponential", algorithm_type=_SDE, solver_order=2
    ),
)

# name -> row, in the order -A's help and error messages list them.
SAMPLER_TABLE: dict[str, Sampler] = {row.name: row for row in _ROWS}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_TABLE)


# AUTOMATIC1111 1.9+ writes "Schedule type: Automatic" for the sampler's own default: the
# model's own schedule ("Uniform" there), except for these samplers, whose default is another.
A1111_AUTOMATIC: dict[str, str] = {
    "DPM++ 2M": "Karras",
    "DPM++ SDE": "Karras",
    "DPM++ 2S a": "Karras",
    "DPM2": "Karras",
    "DPM2 a": "Karras",
    "DPM++ 2M SDE": "Exponential",
    "DPM++ 2M SDE Heun": "Exponential",
    "DPM++ 3M SDE": "Exponential",
}
A1111_OWN_SCHEDULE = "Uniform"  # A1111's name for the model's own schedule
# A1111's samplers that step the model's timesteps and take no Schedule type (it writes one).
_A1111_TIMESTEPS = ("ddim", "plms", "unipc")


def a1111_label(name: str) -> tuple[str, str]:
    """The (Sampler, Schedule type) pair written in `parameters` for our sampler `name`: the
    Schedule type is "Automatic" where AUTOMATIC1111 1.9+ would run that same schedule for it, so
    a picture made on the model's own schedule with DPM++ 2M says "Uniform" (A1111's Automatic
    there is Karras)."""
    row = SAMPLER_TABLE[name]
    automatic = A1111_AUTOMATIC.get(row.a1111, "")
    if row.schedule == automatic:
        return row.a1111, "Automatic"
    return row.a1111, row.schedule or A1111_OWN_SCHEDULE


def from_a1111(sampler: str, schedule: str | None) -> str | None:
    """Our sampler for AUTOMATIC1111's Sampler and Schedule type; None when no row here runs it.

    `schedule` None: the picture has no Schedule type (A1111 before 1.9), whose labels carried
    it ("DPM++ 2M Karras") and whose plain labels ran the model's own schedule."""
    label, sched = " ".join(sampler.split()).lower(), " ".join((schedule or "").split()).lower()
    if schedule is None:
        for suffix in ("karras", "exponential"):
            if label.endswith(" " + suffix):
                label, sched = label[: -len(suffix) - 1], suffix
    if label in _A1111_TIMESTEPS:  # A1111 runs these on their own schedule, whatever it says
        sched = ""
    elif sched == "automatic":
        automatic = {k.lower(): v for k, v in A1111_AUTOMATIC.items()}
        sched = automatic.get(label, "").lower()
    elif sched == A1111_OWN_SCHEDULE.lower():
        sched = ""
    for row in _ROWS:
        if row.a1111.lower() == label and row.schedule.lower() == sched:
            return row.name
    return None


def from_invokeai(name: str) -> str | None:
    """Our sampler for an InvokeAI scheduler name (2.x `k_lms`, 3.x-5.x `euler_k`): ours are
    theirs. None when unknown here (5.x's FLUX-only `er_sde`)."""
    key = name.strip().lower()
    return key if key in SAMPLER_TABLE else None


def listing() -> str:
    """The sampler names, short: a name and its Karras twin as one `name[_k]`."""
    shown: list[str] = []
    for name in SAMPLERS:
        if name.endswith("_k") and name[:-2] in SAMPLER_TABLE:
            continue
        shown.append(f"{name}[_k]" if f"{name}_k" in SAMPLER_TABLE else name)
    return ", ".join(shown)
