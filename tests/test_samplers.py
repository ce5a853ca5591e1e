"""The sampler table: every name's AUTOMATIC1111 label, written out, and Kandinsky's own list.

(The diffusers scheduler each name builds is tested in tests/backend/test_backend_schedulers.py.)
"""

from __future__ import annotations

import subprocess
import sys

from invoke.line.samplers import SAMPLER_TABLE, SAMPLERS


def test_names_in_the_order_help_and_errors_list_them() -> None:
    assert SAMPLERS == (
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


def test_automatic1111_labels() -> None:
    assert {name: row.a1111 for name, row in SAMPLER_TABLE.items()} == {
        "ddim": "DDIM",
        "plms": "PLMS",
        "k_lms": "LMS",
        "k_euler": "Euler",
        "k_euler_a": "Euler a",
        "k_heun": "Heun",
        "k_dpm_2": "DPM2",
        "k_dpm_2_a": "DPM2 a",
        "k_dpmpp_2": "DPM++ 2M",
        "k_dpmpp_2_a": "DPM++ 2M SDE",  # what runs (it was labelled "DPM++ 2S a")
    }
    labels = [row.a1111.lower() for row in SAMPLER_TABLE.values()]
    assert len(set(labels)) == len(labels), "a label must read back as one sampler"


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
