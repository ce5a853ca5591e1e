"""InvokeAI's sampler names -> diffusers schedulers, configured from the model's own schedule."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from invoke.errors import ParseError
from invoke.request import SAMPLERS

# name -> (diffusers scheduler class, settings over the model's config). k_dpmpp_2_a is DPM++ 2M
# SDE: diffusers' DPMSolverSDEScheduler would need torchsde, the multistep SDE variant does not.
_SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "k_lms": ("LMSDiscreteScheduler", {}),
    "k_euler": ("EulerDiscreteScheduler", {}),
    "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "k_heun": ("HeunDiscreteScheduler", {}),
    "k_dpm_2": ("KDPM2DiscreteScheduler", {}),
    "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "k_dpmpp_2": ("DPMSolverMultistepScheduler", {}),
    "k_dpmpp_2_a": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
}
assert set(_SCHEDULERS) == set(SAMPLERS), "every sampler name needs a scheduler"


def make_scheduler(sampler: str, model_config: dict[str, Any]) -> Any:
    """A fresh scheduler (they keep per-run state) for `sampler` on the model's noise schedule."""
    import diffusers

    if sampler not in _SCHEDULERS:
        raise ParseError("-A/--sampler", sampler, f"is not one of {', '.join(SAMPLERS)}")
    class_name, overrides = _SCHEDULERS[sampler]
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    cls = _lms_class() if sampler == "k_lms" else getattr(diffusers, class_name)
    with numpy_quiet():
        return cls.from_config({**config, **overrides})


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
