"""Sampler names -> diffusers schedulers on the model's own noise schedule."""

from __future__ import annotations

import numpy as np
import pytest

from invoke.backend.schedulers import make_scheduler, numpy_quiet
from invoke.errors import ParseError
from invoke.request import SAMPLERS
from tests.fixtures.tiny_models import SD15_SCHEDULER


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_keeps_the_models_schedule(sampler: str) -> None:
    scheduler = make_scheduler(sampler, SD15_SCHEDULER)
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == 0.00085
    assert scheduler.config.beta_end == 0.012
    with numpy_quiet():
        scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10


def test_names_map_to_the_reference_schedulers() -> None:
    names = {s: type(make_scheduler(s, SD15_SCHEDULER)).__name__ for s in SAMPLERS}
    assert names["ddim"] == "DDIMScheduler"
    assert names["plms"] == "PNDMScheduler"
    assert make_scheduler("plms", SD15_SCHEDULER).config.skip_prk_steps
    assert names["k_euler_a"] == "EulerAncestralDiscreteScheduler"
    assert names["k_heun"] == "HeunDiscreteScheduler"
    assert names["k_dpm_2_a"] == "KDPM2AncestralDiscreteScheduler"
    sde = make_scheduler("k_dpmpp_2_a", SD15_SCHEDULER)
    assert sde.config.algorithm_type == "sde-dpmsolver++"
    assert make_scheduler("k_dpmpp_2", SD15_SCHEDULER).config.algorithm_type == "dpmsolver++"


def test_lms_coefficients_are_the_exact_integrals() -> None:
    """Our scipy-free LMS integrates its Lagrange polynomials exactly (checked by fine sampling)."""
    lms = make_scheduler("k_lms", SD15_SCHEDULER)
    with numpy_quiet():
        lms.set_timesteps(20)
    sigmas = [float(s) for s in lms.sigmas]
    order, t = 4, 10
    for current in range(order):
        taus = np.linspace(sigmas[t], sigmas[t + 1], 200_001)
        basis = np.ones_like(taus)
        for k in range(order):
            if k != current:
                basis *= (taus - sigmas[t - k]) / (sigmas[t - current] - sigmas[t - k])
        expected = np.trapezoid(basis, taus)
        assert lms.get_lms_coefficient(order, t, current) == pytest.approx(expected, rel=1e-6)


def test_unknown_sampler_names_the_choices() -> None:
    with pytest.raises(ParseError, match="-A/--sampler: k_foo is not one of ddim, plms, k_lms"):
        make_scheduler("k_foo", SD15_SCHEDULER)
