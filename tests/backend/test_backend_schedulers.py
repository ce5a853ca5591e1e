"""Sampler names -> diffusers schedulers on the model's own noise schedule."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from invoke.backend.schedulers import make_scheduler, numpy_quiet, set_steps
from invoke.errors import InvokeError, ParseError
from invoke.line.samplers import SAMPLERS
from tests.fixtures.tiny_models import SD15_SCHEDULER

# Every sampler name -> the diffusers scheduler class it must build and the settings it must lay
# over the model's config, written out here rather than read from invoke/samplers.py.
OWN = {"use_karras_sigmas": False, "use_exponential_sigmas": False}  # the model's own sigmas
KARRAS = {"use_karras_sigmas": True, "use_exponential_sigmas": False}
DPM = "DPMSolverMultistepScheduler"
ODE2 = {"algorithm_type": "dpmsolver++", "solver_order": 2}
SDE2 = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}
ODE3 = {"algorithm_type": "dpmsolver++", "solver_order": 3}
LAST1 = {"lower_order_final": True}  # what diffusers turns on anyway, with a warning
EXPECTED: dict[str, tuple[str, dict[str, object]]] = {
    # InvokeAI 2.3's names
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "k_lms": ("LMSDiscreteScheduler", OWN),
    "k_euler": ("EulerDiscreteScheduler", OWN),
    "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "k_heun": ("HeunDiscreteScheduler", OWN),
    "k_dpm_2": ("KDPM2DiscreteScheduler", OWN),
    "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", OWN),
    "k_dpmpp_2": (DPM, {**OWN, **ODE2}),
    "k_dpmpp_2_a": (DPM, {**OWN, **SDE2}),
    # InvokeAI 3.x-5.x's SCHEDULER_MAP, as read in its source
    "ddpm": ("DDPMScheduler", {}),
    "deis": ("DEISMultistepScheduler", OWN),
    "deis_k": ("DEISMultistepScheduler", KARRAS),
    "lms": ("LMSDiscreteScheduler", OWN),
    "lms_k": ("LMSDiscreteScheduler", KARRAS),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "heun": ("HeunDiscreteScheduler", OWN),
    "heun_k": ("HeunDiscreteScheduler", KARRAS),
    "euler": ("EulerDiscreteScheduler", OWN),
    "euler_k": ("EulerDiscreteScheduler", KARRAS),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "kdpm_2": ("KDPM2DiscreteScheduler", OWN),
    "kdpm_2_k": ("KDPM2DiscreteScheduler", KARRAS),
    "kdpm_2_a": ("KDPM2AncestralDiscreteScheduler", OWN),
    "kdpm_2_a_k": ("KDPM2AncestralDiscreteScheduler", KARRAS),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", {**OWN, "solver_order": 2, **LAST1}),
    "dpmpp_2s_k": ("DPMSolverSinglestepScheduler", {**KARRAS, "solver_order": 2, **LAST1}),
    "dpmpp_2m": (DPM, {**OWN, **ODE2}),
    "dpmpp_2m_k": (DPM, {**KARRAS, **ODE2}),
    "dpmpp_2m_sde": (DPM, {**OWN, **SDE2}),
    "dpmpp_2m_sde_k": (DPM, {**KARRAS, **SDE2}),
    "dpmpp_3m": (DPM, {**OWN, **ODE3}),
    "dpmpp_3m_k": (DPM, {**KARRAS, **ODE3}),
    "dpmpp_sde": ("DPMSolverSDEScheduler", OWN),
    "dpmpp_sde_k": ("DPMSolverSDEScheduler", KARRAS),
    "unipc": ("UniPCMultistepScheduler", OWN),
    "unipc_k": ("UniPCMultistepScheduler", KARRAS),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
    # ours: A1111's DPM++ 2M SDE on its default (Exponential) schedule
    "dpmpp_2m_sde_exp": (DPM, {"use_karras_sigmas": False, "use_exponential_sigmas": True, **SDE2}),
}
# DPM++ SDE needs torchsde, not installed with invoke: refused in one line where it is absent.
NEEDS_TORCHSDE = ("dpmpp_sde", "dpmpp_sde_k")
HAS_TORCHSDE = importlib.util.find_spec("torchsde") is not None
# The samplers that run here (every one, where torchsde is installed).
RUNNABLE = tuple(s for s in EXPECTED if HAS_TORCHSDE or s not in NEEDS_TORCHSDE)
# One name for each scheduler and settings (euler and k_euler build the same one, as checked by
# test_each_sampler_builds_its_scheduler_on_the_models_config): the pipeline parity tests'.
DISTINCT = tuple({repr(EXPECTED[s]): s for s in reversed(RUNNABLE)}.values())[::-1]
# A model schedule whose own settings differ from what the samplers lay over it.
MODEL_CONFIG = {**SD15_SCHEDULER, "skip_prk_steps": False, "timestep_spacing": "trailing"}


def test_every_sampler_has_its_expected_scheduler() -> None:
    assert tuple(EXPECTED) == SAMPLERS


@pytest.mark.parametrize("sampler", RUNNABLE)
def test_each_sampler_builds_its_scheduler_on_the_models_config(sampler: str) -> None:
    import diffusers

    class_name, options = EXPECTED[sampler]
    scheduler = make_scheduler(sampler, MODEL_CONFIG)
    if (
        class_name == "LMSDiscreteScheduler"
    ):  # our scipy-free subclass (see test_lms_coefficients_are_...)
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


@pytest.mark.parametrize("sampler", RUNNABLE)
def test_every_sampler_keeps_the_models_schedule(sampler: str) -> None:
    scheduler = make_scheduler(sampler, SD15_SCHEDULER)
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert scheduler.config.beta_start == 0.00085
    assert scheduler.config.beta_end == 0.012
    with numpy_quiet():
        scheduler.set_timesteps(10)
    assert len(scheduler.timesteps) >= 10


def test_names_map_to_the_reference_schedulers() -> None:
    names = {s: type(make_scheduler(s, SD15_SCHEDULER)).__name__ for s in RUNNABLE}
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
        "ddim, plms, k_lms, k_euler, k_euler_a, k_heun, k_dpm_2, k_dpm_2_a, k_dpmpp_2, "
        "k_dpmpp_2_a, ddpm, deis[_k], lms[_k], pndm, heun[_k], euler[_k], euler_a, kdpm_2[_k], "
        "kdpm_2_a[_k], dpmpp_2s[_k], dpmpp_2m[_k], dpmpp_2m_sde[_k], dpmpp_3m[_k], "
        "dpmpp_sde[_k], unipc[_k], lcm, tcd, dpmpp_2m_sde_exp"
    )
    assert str(caught.value) == f"-A/--sampler: k_foo is not one of {choices}"
    with pytest.raises(InvokeError) as caught:
        make_scheduler("", SD15_SCHEDULER)
    assert str(caught.value) == str(ParseError("-A/--sampler", "", f"is not one of {choices}"))


@pytest.mark.skipif(HAS_TORCHSDE, reason="torchsde is installed: DPM++ SDE runs")
@pytest.mark.parametrize("sampler", NEEDS_TORCHSDE)
def test_dpm_sde_without_torchsde_says_what_to_install(sampler: str) -> None:
    with pytest.raises(InvokeError) as caught:
        make_scheduler(sampler, SD15_SCHEDULER)
    assert str(caught.value) == (
        f"-A/--sampler: {sampler} needs the torchsde package, which is not installed "
        "(pip install torchsde); dpmpp_2m_sde is an SDE sampler that runs without it"
    )


def test_karras_rows_run_karras_sigmas_and_the_others_the_models_own() -> None:
    """What a user notices of `_k`: other sigmas for the same steps, the Karras ones, whatever
    the model's config asks for."""
    asks_karras = {**SD15_SCHEDULER, "use_karras_sigmas": True}
    sigmas = {}
    for sampler in ("euler", "euler_k", "dpmpp_2m_sde_exp"):
        scheduler = make_scheduler(sampler, asks_karras)
        with numpy_quiet():
            scheduler.set_timesteps(10)
        sigmas[sampler] = [float(s) for s in scheduler.sigmas]
    own = make_scheduler("k_euler", SD15_SCHEDULER)
    with numpy_quiet():
        own.set_timesteps(10)
    assert sigmas["euler"] == pytest.approx([float(s) for s in own.sigmas])
    sigma_max, sigma_min = sigmas["euler"][0], sigmas["euler"][-2]
    rho = 7.0  # Karras et al.'s spacing: even steps in sigma ** (1 / rho)
    ramp = np.linspace(0, 1, 10)
    karras = (
        sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    ) ** rho
    assert sigmas["euler_k"][:-1] == pytest.approx(list(karras), rel=1e-4)
    assert sigmas["dpmpp_2m_sde_exp"][0] == pytest.approx(sigma_max, rel=1e-4)
    assert sigmas["dpmpp_2m_sde_exp"] != pytest.approx(sigmas["euler_k"])


@pytest.mark.parametrize("sampler", ["dpmpp_2s", "lcm", "tcd"])
def test_building_and_stepping_say_nothing_on_the_terminal(
    sampler: str, capfd: pytest.CaptureFixture[str]
) -> None:
    for steps in (3, 30):
        scheduler = make_scheduler(sampler, SD15_SCHEDULER)
        set_steps(scheduler, sampler, steps, "cpu")
    assert capfd.readouterr() == ("", "")
