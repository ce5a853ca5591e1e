"""Sampler names -> diffusers schedulers (invoke/line/samplers.py), configured from the model's own
schedule."""

from __future__ import annotations

import importlib.util
import inspect
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from invoke.errors import InvokeError
from invoke.line.samplers import SAMPLER_TABLE, listing


def make_scheduler(sampler: str, model_config: dict[str, Any], seed: int | None = None) -> Any:
    """A fresh scheduler (they keep per-run state) for `sampler` on the model's noise schedule:
    the diffusers class named by the sampler's row (invoke/line/samplers.py), built from the
    model's scheduler config with the row's options laid over it. `seed` seeds the noise of a
    sampler that draws its own (DPM++ SDE's Brownian tree) rather than taking generators."""
    import diffusers

    row = SAMPLER_TABLE.get(sampler)
    if row is None:
        shown = f"{sampler} " if sampler else ""  # worded as the parser words it
        raise InvokeError(f"-A/--sampler: {shown}is not one of {listing()}")
    if row.needs and importlib.util.find_spec(row.needs) is None:
        raise InvokeError(
            f"-A/--sampler: {sampler} needs the {row.needs} package, which is not installed "
            f"(pip install {row.needs}); dpmpp_2m_sde is an SDE sampler that runs without it"
        )
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    options = dict(row.options)
    if row.scheduler == "DPMSolverSDEScheduler" and seed is not None:
        options["noise_sampler_seed"] = seed
    is_lms = row.scheduler == "LMSDiscreteScheduler"
    cls = _lms_class() if is_lms else getattr(diffusers, row.scheduler)
    # What the class does not take it would ignore, with a warning on the terminal (LCM and TCD
    # take no skip_prk_steps): left out here instead.
    takes = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in config.items() if k in takes}
    with numpy_quiet(), _unusable_schedule(sampler):
        return cls.from_config({**config, **options})


def set_steps(scheduler: Any, sampler: str, steps: int, device: Any) -> None:
    """The scheduler's timesteps for `steps` steps (diffusers' set_timesteps)."""
    with numpy_quiet(), _unusable_schedule(sampler):
        scheduler.set_timesteps(steps, device=device)


@contextmanager
def _unusable_schedule(sampler: str) -> Iterator[None]:
    """A schedule the load-time check (schedule_problem) let through but a sampler cannot use
    is one line naming the sampler, not a library's error."""
    try:
        yield
    except (ValueError, NotImplementedError, TypeError, ZeroDivisionError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvokeError(
            f"-A/--sampler: {sampler} cannot use this model's scheduler_config.json ({first}); "
            f"try another sampler"
        ) from err


# What a model's scheduler_config.json may say, as every sampler here reads it: a damaged or
# hand-edited file is refused when the model loads, not in the middle of a line.
MAX_TRAIN_TIMESTEPS = 100_000
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def schedule_problem(
    config: dict[str, Any], predictions: tuple[str, ...] = PREDICTION_TYPES
) -> str | None:
    """What is wrong with a scheduler config for our samplers (or a pipeline's own scheduler,
    which may predict other things: `predictions`), in words; None when nothing."""
    steps = config.get("num_train_timesteps", 1000)
    if not _whole(steps) or not 2 <= steps <= MAX_TRAIN_TIMESTEPS:
        return f"num_train_timesteps {steps!r} is not a whole number in 2..{MAX_TRAIN_TIMESTEPS}"
    start, end = config.get("beta_start", 0.0001), config.get("beta_end", 0.02)
    if not (_real(start) and _real(end) and 0 < start <= end < 1):
        return f"beta_start {start!r} and beta_end {end!r} are not 0 < start <= end < 1"
    betas = config.get("trained_betas")
    if betas is not None and not (
        isinstance(betas, list)
        and len(betas) == steps
        and all(_real(b) and 0 < b < 1 for b in betas)
    ):
        return f"trained_betas is not {steps} numbers in (0, 1) (one per num_train_timesteps)"
    offset = config.get("steps_offset", 0)
    if not _whole(offset) or not 0 <= offset < steps:
        return f"steps_offset {offset!r} is not a whole number in 0..{steps - 1}"
    choices = [
        ("prediction_type", predictions, "epsilon"),
        ("timestep_spacing", TIMESTEP_SPACINGS, "leading"),
    ]
    if betas is None:  # trained betas replace the schedule
        choices.append(("beta_schedule", BETA_SCHEDULES, "linear"))
    for key, allowed, default in choices:
        value = config.get(key, default)
        if value not in allowed:
            return f"{key} {value!r} is not one of {', '.join(allowed)}"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@contextmanager
def numpy_quiet() -> Iterator[None]:
    """Silence numpy 2's `__array__` deprecation warnings from diffusers' schedulers.

    Their setup hands torch tensors to numpy, KDPM2 one scalar at a time; numpy 2 warns on each
    (thousands per run) about a protocol detail that does not change the numbers.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="__array", category=DeprecationWarning)
        yield


def _lms_class() -> type:
    """diffusers' LMS scheduler, with its coefficients integrated without scipy.

    diffusers integrates each coefficient with scipy.integrate.quad and hides the class without
    scipy. The integrand is a Lagrange basis polynomial of degree order-1 <= 3, which Gauss-Legendre
    quadrature with 4 nodes integrates exactly: same numbers, one dependency fewer.
    """
    import numpy as np
    from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler

    nodes, weights = np.polynomial.legendre.leggauss(4)

    class LMS(LMSDiscreteScheduler):
        def get_lms_coefficient(self, order: int, t: int, current_order: int) -> float:
            sigmas = [float(s) for s in self.sigmas]
            lo, hi = sigmas[t], sigmas[t + 1]
            taus = (hi - lo) / 2 * nodes + (hi + lo) / 2
            basis = np.ones_like(taus)
            for k in range(order):
                if k != current_order:
                    basis *= (taus - sigmas[t - k]) / (sigmas[t - current_order] - sigmas[t - k])
            return float((hi - lo) / 2 * np.dot(weights, basis))

    return LMS


def takes_generator(scheduler: Any) -> bool:
    """Whether the scheduler's step draws noise (ancestral/SDE samplers) and so wants generators."""
    return "generator" in inspect.signature(scheduler.step).parameters
