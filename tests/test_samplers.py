"""The sampler table: the names InvokeAI 2.3 and 5 use, every name's AUTOMATIC1111 pair written
out and read back, and Kandinsky's own list.

(The diffusers scheduler each name builds is tested in tests/backend/test_backend_schedulers.py.)
"""

from __future__ import annotations

import subprocess
import sys

from invoke.line.samplers import (
    SAMPLER_TABLE,
    SAMPLERS,
    a1111_label,
    from_a1111,
    from_invokeai,
    listing,
)

INVOKEAI_2 = (
    "ddim",
    "plms",
    "k_lms",
    "k_euler",
    "k_euler_a",
    "k_heun",
    "k_dpm_2",
    "k_dpm_2_a",
    "k_dpmpp_2",
    "k_dpmpp_2_a",
)
# InvokeAI 5's SCHEDULER_MAP (invokeai/backend/stable_diffusion/schedulers/schedulers.py), less
# er_sde, its FLUX-only rectified-flow sampler.
INVOKEAI_5 = (
    "ddim",
    "ddpm",
    "deis",
    "deis_k",
    "lms",
    "lms_k",
    "pndm",
    "heun",
    "heun_k",
    "euler",
    "euler_k",
    "euler_a",
    "kdpm_2",
    "kdpm_2_k",
    "kdpm_2_a",
    "kdpm_2_a_k",
    "dpmpp_2s",
    "dpmpp_2s_k",
    "dpmpp_2m",
    "dpmpp_2m_k",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_k",
    "dpmpp_3m",
    "dpmpp_3m_k",
    "dpmpp_sde",
    "dpmpp_sde_k",
    "unipc",
    "unipc_k",
    "lcm",
    "tcd",
)


def test_names_in_the_order_help_and_errors_list_them() -> None:
    """InvokeAI 2.3's names first (the ones our older pictures carry), then 5's, then ours."""
    assert SAMPLERS[:10] == INVOKEAI_2
    assert set(SAMPLERS) == set(INVOKEAI_2) | set(INVOKEAI_5) | {"dpmpp_2m_sde_exp"}
    assert listing().startswith("ddim, plms, k_lms, k_euler, k_euler_a, k_heun, k_dpm_2, ")
    assert "euler[_k], euler_a, " in listing() and ", euler_k" not in listing()


def test_every_invokeai_name_is_a_sampler_here() -> None:
    for name in INVOKEAI_2 + INVOKEAI_5:
        assert from_invokeai(name) == name
    assert from_invokeai(" Euler_K ") == "euler_k"
    assert from_invokeai("er_sde") is None  # FLUX's, not a Stable Diffusion sampler
    assert from_invokeai("k_bogus") is None


# AUTOMATIC1111's (Sampler, Schedule type) for what each of ours runs, written out.
A1111_PAIRS = {
    "ddim": ("DDIM", "Automatic"),
    "plms": ("PLMS", "Automatic"),
    "k_lms": ("LMS", "Automatic"),
    "k_euler": ("Euler", "Automatic"),
    "k_euler_a": ("Euler a", "Automatic"),
    "k_heun": ("Heun", "Automatic"),
    # A1111 1.9+'s Automatic for these is Karras: the model's own schedule is its "Uniform".
    "k_dpm_2": ("DPM2", "Uniform"),
    "k_dpm_2_a": ("DPM2 a", "Uniform"),
    "k_dpmpp_2": ("DPM++ 2M", "Uniform"),
    "k_dpmpp_2_a": ("DPM++ 2M SDE", "Uniform"),  # what runs (it was labelled "DPM++ 2S a")
    "lms_k": ("LMS", "Karras"),
    "euler_k": ("Euler", "Karras"),
    "heun_k": ("Heun", "Karras"),
    "kdpm_2_k": ("DPM2", "Automatic"),
    "kdpm_2_a_k": ("DPM2 a", "Automatic"),
    "dpmpp_2m_k": ("DPM++ 2M", "Automatic"),
    "dpmpp_2m_sde_k": ("DPM++ 2M SDE", "Karras"),
    "dpmpp_2m_sde_exp": ("DPM++ 2M SDE", "Automatic"),  # A1111 1.9+'s Automatic: Exponential
    "dpmpp_sde": ("DPM++ SDE", "Uniform"),
    "dpmpp_sde_k": ("DPM++ SDE", "Automatic"),
    "unipc": ("UniPC", "Automatic"),
    "lcm": ("LCM", "Automatic"),
}


def test_automatic1111_labels_name_what_runs() -> None:
    for name, pair in A1111_PAIRS.items():
        assert a1111_label(name) == pair, name
    # Where A1111 has no such sampler, a label of our own that it does not mistake for another.
    a1111_samplers = {pair[0] for pair in A1111_PAIRS.values()}
    for name in ("ddpm", "deis", "dpmpp_2s", "dpmpp_3m", "tcd"):
        assert a1111_label(name)[0] not in a1111_samplers


def test_automatic1111_pairs_read_back_as_the_sampler_written() -> None:
    """Every pair we write reads back as ours, or as a twin that runs the same thing (euler and
    k_euler: InvokeAI 5's and 2.3's names for one sampler)."""
    for name in (n for n in SAMPLERS if n != "unipc_k"):
        back = from_a1111(*a1111_label(name))
        assert back is not None, name
        same = ("scheduler", "options", "schedule", "a1111")
        assert [getattr(SAMPLER_TABLE[back], k) for k in same] == [
            getattr(SAMPLER_TABLE[name], k) for k in same
        ], name
    for name in A1111_PAIRS:
        assert from_a1111(*a1111_label(name)) == name
    # unipc_k's pair is one A1111 has no such sampler for: it runs UniPC on its own schedule.
    assert a1111_label("unipc_k") == ("UniPC", "Karras")
    assert from_a1111("UniPC", "Karras") == "unipc"
    assert from_a1111("DDIM", "Exponential") == "ddim"


def test_automatic1111_before_1_9_carried_the_schedule_in_the_label() -> None:
    assert from_a1111("DPM++ 2M Karras", None) == "dpmpp_2m_k"
    assert from_a1111("DPM++ 2M", None) == "k_dpmpp_2"  # then: the model's own schedule
    assert from_a1111("DPM2 a Karras", None) == "kdpm_2_a_k"
    assert from_a1111("LMS Karras", None) == "lms_k"
    assert from_a1111("DPM++ 2M SDE Karras", None) == "dpmpp_2m_sde_k"
    assert from_a1111("DPM++ 2M SDE Exponential", None) == "dpmpp_2m_sde_exp"
    assert from_a1111("Euler a", None) == "k_euler_a"
    # 1.9+: Automatic is the sampler's own default, Karras for DPM++ 2M
    assert from_a1111("DPM++ 2M", "Automatic") == "dpmpp_2m_k"
    assert from_a1111("dpm++ 2m", "karras") == "dpmpp_2m_k"
    assert from_a1111("Euler", "Automatic") == "k_euler"


def test_automatic1111_pairs_nothing_here_runs_are_none() -> None:
    assert from_a1111("DPM++ 2S a", "Automatic") is None  # no ancestral singlestep in diffusers
    assert from_a1111("DPM++ 2M SDE Heun", None) is None
    assert from_a1111("Euler", "Polyexponential") is None
    assert from_a1111("DPM adaptive", None) is None
    assert from_a1111("Restart", "Automatic") is None


def test_kandinsky_takes_the_samplers_its_loop_can_run() -> None:
    from invoke.backend.families import kandinsky

    assert kandinsky.SAMPLERS == ("ddim", "k_dpmpp_2", "k_dpmpp_2_a")
    assert set(kandinsky.SAMPLERS) <= set(SAMPLERS)


def test_the_table_imports_no_torch() -> None:
    code = (
        "import sys, invoke.line.samplers; "
        "print('torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
