"""Sampler names -> diffusers schedulers on the model's own noise schedule."""

from __future__ import annotations

import numpy as np
import pytest

from invoke.backend.schedulers import make_scheduler, numpy_quiet
from invoke.errors import InvokeError, ParseError
from invoke.line.samplers import SAMPLERS
from tests.fixtures.tiny_models import SD15_SCHEDULER

# Every sampler name -> the diffusers scheduler class it must build and the settings it must lay
# over the model's config, written out here rather than read from invoke/samplers.py.
EXPECTED: dict[str, tuple[str, dict[str, object]]] = {
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "k_lms": ("LMSDiscreteScheduler", {}),
    "k_euler": ("EulerDiscreteScheduler", {}),
    "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "k_heun": ("HeunDiscreteScheduler", {}),
    "k_dpm_2": ("KDPM2DiscreteScheduler", {}),
    "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "k_dpmpp_2": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "k_dpmpp_2_a": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
}
# A model schedule whose own settings differ from what the samplers lay over it.
MODEL_CONFIG = {**SD15_SCHEDULER, "skip_prk_steps": False, "timestep_spacing": "trailing"}


def test_every_sampler_has_its_expected_scheduler() -> None:
    assert tuple(EXPECTED) == SAMPLERS


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_builds_its_scheduler_on_the_models_config(sampler: str) -> None:
    import diffusers

    class_name, options = EXPECTED[sampler]
    scheduler = make_scheduler(sampler, MODEL_CONFIG)
    if sampler == "k_lms":  # our scipy-free subclass (see test_lms_coefficients_are_...)
        from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler

        assert class_name == LMSDiscreteScheduler.__name__
        assert type(scheduler).__bases__ == (LMSDiscreteScheduler,)
    else:
        assert type(scheduler) is getattr(diffusers, class_name)
    config = dict(scheduler.config)
    for key, value in options.items():
        assert config[key] == value
    for key, value in MODEL_CONFIG.items():
        if not key.startswith("_") and key in config and key not in options:
            assert config[key] == value, key
    assert make_scheduler(sampler, MODEL_CONFIG) is not scheduler  # fresh: they keep state


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
    """The backend's error, worded as the parser's."""
    with pytest.raises(InvokeError) as caught:
        make_scheduler("k_foo", SD15_SCHEDULER)
    assert not isinstance(caught.value, ParseError)
    choices = (
        "ddim, plms, k_lms, k_euler, k_euler_a, k_heun, k_dpm_2, k_dpm_2_a, k_dpmpp_2, k_dpmpp_2_a"
    )
    assert str(caught.value) == f"-A/--sampler: k_foo is not one of {choices}"
    with pytest.raises(InvokeError) as caught:
        make_scheduler("", SD15_SCHEDULER)
    assert str(caught.value) == str(ParseError("-A/--sampler", "", f"is not one of {choices}"))
