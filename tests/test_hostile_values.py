"""Issue 18's values, where a catalogue case (tests/hostile/values.py) cannot reach: what the
finite check counts, out of memory on the CPU, a model put back after a LoRA that overflows, a
VAE that gives NaN in every precision, a pipeline's NaN pictures, and an upscale that gives NaN
keeping the picture as drawn."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend import finite, speed
from invoke.backend.job import Lora
from invoke.backend.loading import load_model
from invoke.backend.lora import use_loras
from invoke.errors import InvokeError, ModelError
from tests.helpers import kohya_file, make_job
from tests.test_hardening import assert_no_traceback, run_cli

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


# -- what the check counts -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_nonfinite_value_is_counted_wherever_it_is(dtype: torch.dtype, bad: float) -> None:
    for size, where in ((1, 0), (33, 32), (100_003, 50_001)):  # tail and vectorised paths
        tensor = torch.randn(size).to(dtype)
        tensor[where] = bad
        tensor[0] = bad
        assert finite.nonfinite_count([tensor, torch.ones(3, dtype=dtype)]) == len({0, where})


def test_float8_weights_are_checked_too() -> None:
    """aminmax has no float8 kernel: such a tensor (a float8 LoRA) is read as float32."""
    tensor = torch.ones(8).to(torch.float8_e4m3fn)
    assert finite.nonfinite_count([tensor]) == 0
    tensor[3] = math.nan
    assert finite.nonfinite_count([tensor]) == 1


def test_integers_and_empty_tensors_are_not_weights() -> None:
    tensors = [torch.arange(5), torch.empty(0), torch.zeros(2, 3)]
    assert finite.nonfinite_count(tensors) == 0


def test_float16_infinities_say_float32_may_load_them() -> None:
    """A float32 file cast to float16 turns weights past 65504 into infinity: not damage."""
    with pytest.raises(ModelError, match=r"x: 1 weight is NaN or infinite in float16: too large"):
        finite.check_weights("x", [torch.tensor([70000.0]).half()], dtype=torch.float16)


# -- out of memory on the CPU --------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 40000000000000 bytes. Error code 12"
        ),
        MemoryError("Unable to allocate 72.8 TiB for an array with shape (10000000000000,)"),
    ],
    ids=["torch", "numpy"],
)
def test_running_out_of_memory_on_the_cpu_says_what_to_try(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Once `unexpected error: RuntimeError: ... DefaultCPUAllocator` (-W 4096 -H 4096 on a
    real model on the CPU); now the out-of-memory line CUDA always had."""
    model = load_model(tiny_model_dir, device="cpu")

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(model.unet, "forward", out_of_memory)
    job = make_job(steps=1)
    with pytest.raises(InvokeError) as raised:
        model.generate(job)
    assert str(raised.value) == speed.out_of_memory_message(model, job)
    assert "memory" in str(raised.value) and "-W/-H" in str(raised.value)


def test_other_runtime_errors_are_not_out_of_memory() -> None:
    assert not speed.is_out_of_memory(RuntimeError("expected scalar type Float but found Half"))
    assert speed.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))


# -- NaN made by arithmetic ----------------------------------------------------------------------


def test_a_lora_that_overflows_float16_leaves_the_model_as_it_was(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = load_model(tiny_model_dir, device="cpu", precision="float16")
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    file = kohya_file(model, tmp_path / "loud.safetensors")
    from safetensors.torch import load_file, save_file

    save_file({k: (v * 1200 if "lora_" in k else v) for k, v in load_file(file).items()}, file)
    with pytest.raises(InvokeError, match=r"LoRA loud: merged at 1 it makes \d+ of model"):
        use_loras(model, (Lora("loud", str(file)),))
    after = model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit for bit
    assert model.generate(make_job(steps=1))  # and it still draws


def test_a_vae_that_gives_nan_even_in_float32_saves_nothing(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bfloat16 NaN is decoded again in float32 (model.vae_run); NaN there too is refused, and
    float32 is no longer offered as the cure."""
    model = load_model(tiny_model_dir, device="cpu", precision="bfloat16")
    real_decode = model.vae.decode

    def always_nan(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = real_decode(z, *args, **kwargs)
        out.sample = torch.full_like(out.sample, math.nan)
        return out

    monkeypatch.setattr(model.vae, "decode", always_nan)
    with pytest.raises(InvokeError) as raised:
        model.generate(make_job(steps=1))
    assert str(raised.value) == (
        "the VAE gave NaN or infinite numbers; nothing was saved; likely cause: the model "
        "itself (its weights or settings)"
    )


def test_a_pipelines_nan_pictures_are_refused(
    tiny_kandinsky_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kandinsky runs diffusers' pipeline: its pictures come back as numbers, checked here,
    not as diffusers' PIL images (black, after numpy's cast warning)."""
    from invoke.line.prompt_syntax import parse_prompt

    model = load_model(tiny_kandinsky_dir, device="cpu")
    real_decode = model.vae.decode

    def nan_pixels(*args: Any, **kwargs: Any) -> Any:
        out = real_decode(*args, **kwargs)
        out["sample"] = torch.full_like(out["sample"], math.nan)
        return out

    monkeypatch.setattr(model.vae, "decode", nan_pixels)
    job = make_job(steps=2, sampler="ddim", prompt=parse_prompt("a red circle"))
    with pytest.raises(InvokeError, match=r"^the pipeline gave NaN or infinite numbers; nothing"):
        model.generate(job)


def test_an_upscale_that_gives_nan_keeps_the_picture_as_drawn(
    isolated: Path,
    tiny_model_dir: Path,
    tiny_upscalers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from invoke.backend import upscale

    real_load = upscale._load

    def nan_decoder(*args: Any, **kwargs: Any) -> Any:
        pipe = real_load(*args, **kwargs)
        decode = pipe.vae.decode

        def nan_pixels(*a: Any, **k: Any) -> Any:
            out = decode(*a, **k)  # return_dict=False: a tuple
            return (torch.full_like(out[0], math.nan), *out[1:])

        pipe.vae.decode = nan_pixels
        return pipe

    monkeypatch.setattr(upscale, "_load", nan_decoder)
    ran = run_cli(
        ["--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o"],
        "a red circle -s 2 -S 9 -U 2\n",
    )
    assert_no_traceback(ran)
    assert "Warning" not in ran.err
    assert ran.status == 1
    assert ">> not upscaled; the picture as drawn is o/000001.9.png: " in ran.err_lines[-3]
    assert ran.err_lines[-2] == (
        "line 1: -U 2: the upscaler sd-x2-latent-upscaler gave NaN or infinite numbers; nothing "
        "was saved; likely cause: the upscaler itself"
    )
    [kept] = list((isolated / "o").glob("*.png"))
    assert kept.name == "000001.9.png"
    with Image.open(kept) as picture:
        assert picture.size == (64, 64) and np.asarray(picture).std() > 0  # a picture, as drawn


def test_decoding_again_in_float32_says_nothing_of_diffusers(
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The float32 retry of a half-precision VAE moves the VAE back and forth on every picture;
    diffusers' own .to(dtype) printed a warning about float32 modules each time."""
    model = load_model(tiny_model_dir, device="cpu", precision="bfloat16")
    real_decode = model.vae.decode

    def nan_unless_float32(z: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        out = real_decode(z, *args, **kwargs)
        if z.dtype != torch.float32:
            out.sample = torch.full_like(out.sample, math.nan)
        return out

    monkeypatch.setattr(model.vae, "decode", nan_unless_float32)
    capfd.readouterr()
    model.generate(make_job(steps=1))
    model.generate(make_job(steps=1))
    said = capfd.readouterr().err + caplog.text
    assert said.count("decoding in float32 from now on") == 1  # our one note
    assert "should be kept in float32" not in said
