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

__all__ = ["SAMPLERS", "SAMPLER_TABLE", "Sampler", "a1111_label", "from_a1111", "from_invokeai"]

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


_ROWS: tuple[Sampler, ...] = (
    Sampler("ddim", "DDIMScheduler", "DDIM"),
    Sampler("plms", "PNDMScheduler", "PLMS", {"skip_prk_steps": True}),
    Sampler("k_lms", "LMSDiscreteScheduler", "LMS"),
    Sampler("k_euler", "EulerDiscreteScheduler", "Euler"),
    Sampler("k_euler_a", "EulerAncestralDiscreteScheduler", "Euler a"),
    Sampler("k_heun", "HeunDiscreteScheduler", "Heun"),
    Sampler("k_dpm_2", "KDPM2DiscreteScheduler", "DPM2"),
    Sampler("k_dpm_2_a", "KDPM2AncestralDiscreteScheduler", "DPM2 a"),
    Sampler("k_dpmpp_2", "DPMSolverMultistepScheduler", "DPM++ 2M"),
    # DPM++ 2M SDE: diffusers' DPMSolverSDEScheduler would need torchsde, the multistep SDE
    # variant does not.
    Sampler(
        "k_dpmpp_2_a",
        "DPMSolverMultistepScheduler",
        "DPM++ 2M SDE",
        {"algorithm_type": "sde-dpmsolver++"},
    ),
)

# name -> row, in the order -A's help and error messages list them.
SAMPLER_TABLE: dict[str, Sampler] = {row.name: row for row in _ROWS}
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_TABLE)


# The model's own schedule, as AUTOMATIC1111 1.9+ names it in "Schedule type:".
A1111_OWN_SCHEDULE = "Automatic"


def a1111_label(name: str) -> tuple[str, str]:
    """The (Sampler, Schedule type) pair written in `parameters` for our sampler `name`."""
    row = SAMPLER_TABLE[name]
    return row.a1111, row.schedule or A1111_OWN_SCHEDULE


def from_a1111(sampler: str, schedule: str | None) -> str | None:
    """Our sampler for AUTOMATIC1111's Sampler and Schedule type (None: the picture has no
    Schedule type, as before A1111 1.9, whose labels could carry it: "DPM++ 2M Karras").
    None when no row here runs it."""
    label, sched = sampler.strip(), (schedule or "").strip()
    if schedule is None:
        for suffix in ("Karras", "Exponential"):
            if label.endswith(" " + suffix):
                label, sched = label[: -len(suffix) - 1].strip(), suffix
    if sched.lower() == A1111_OWN_SCHEDULE.lower():
        sched = ""
    for row in _ROWS:
        if row.a1111.lower() == label.lower() and row.schedule.lower() == sched.lower():
            return row.name
    return None


# InvokeAI 2.x names are ours; 3.x-5.x names map onto rows (filled in with the table).
_INVOKEAI: dict[str, str] = {}


def from_invokeai(name: str) -> str | None:
    """Our sampler for an InvokeAI scheduler name (2.x `k_lms`, 3.x-5.x `euler_k`); None when
    unknown."""
    key = name.strip().lower()
    if key in SAMPLER_TABLE:
        return key
    return _INVOKEAI.get(key)
