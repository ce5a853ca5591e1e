"""Sampler names -> diffusers schedulers (invoke/samplers.py), configured from the model's own
schedule."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from invoke.errors import InvokeError
from invoke.line.samplers import SAMPLER_TABLE, SAMPLERS


def make_scheduler(sampler: str, model_config: dict[str, Any]) -> Any:
    """A fresh scheduler (they keep per-run state) for `sampler` on the model's noise schedule:
    the diffusers class named by the sampler's row (invoke/samplers.py), built from the model's
    scheduler config with the row's options laid over it."""
    import diffusers

    row = SAMPLER_TABLE.get(sampler)
    if row is None:
        shown = f"{sampler} " if sampler else ""  # worded as the parser words it
        raise InvokeError(f"-A/--sampler: {shown}is not one of {', '.join(SAMPLERS)}")
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    is_lms = row.scheduler == "LMSDiscreteScheduler"
    cls = _lms_class() if is_lms else getattr(diffusers, row.scheduler)
    with numpy_quiet():
        return cls.from_config({**config, **row.options})


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
