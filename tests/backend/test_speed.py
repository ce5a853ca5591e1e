"""The speed path on the tiny model on CPU: every optimization keeps the pictures, OOM is one line.

CUDA itself is not available here; these tests run the same code with the CUDA-only switches
(fused QKV, channels_last, compile) turned on by hand on the CPU. Compile on the CPU means the
compile *path* (Dynamo's graph capture and our dispatch to the compiled UNet) with the eager
backend, plus one slow test with inductor; none of it runs CUDA graphs (reduce-overhead) or fp16:
only the tests marked `gpu` do, and they skip without CUDA.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch

from invoke.backend import generate as generate_module
from invoke.backend import speed
from invoke.backend.job import Job, Lora, Noise
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.errors import InvokeError
from tests import helpers
from tests.helpers import kohya_file, pixels


def make_job(**changes: object) -> Job:
    """The shared small job with k_lms, the sampler these tests were written against."""
    return helpers.make_job(**{"sampler": "k_lms", **changes})


@pytest.fixture(scope="module")
def plain(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def fast(tiny_model_dir: Path) -> Model:
    """The CUDA configuration on the CPU: fused QKV and channels_last on UNet and VAE."""
    model = load_model(tiny_model_dir, device="cpu")
    for module in (model.unet, model.vae):
        speed.fuse_qkv(module)
        module.to(memory_format=torch.channels_last)
    return model


def test_cpu_defaults_leave_the_plain_path(plain: Model) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    # Bit-exact remakes on CPU: no fusion, NCHW, SDPA, and the UNet runs eagerly.
    assert all(type(p) is AttnProcessor2_0 for p in plain.unet.attn_processors.values())
    assert not hasattr(plain.unet.down_blocks[0].attentions[0], "to_qkv")
    assert speed.unet_for(plain, make_job()) is plain.unet


def test_fused_qkv_shares_the_weights(fast: Model) -> None:
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    attentions = [m for m in fast.unet.modules() if isinstance(m, Attention)]
    assert attentions
    assert all(type(p) is FusedAttnProcessor2_0 for p in fast.unet.attn_processors.values())
    for attn in attentions:
        fused = attn.to_kv if attn.is_cross_attention else attn.to_qkv
        first = attn.to_k if attn.is_cross_attention else attn.to_q
        # The unfused weights are views into the fused ones: no second copy of them.
        assert first.weight.data_ptr() == fused.weight.data_ptr()
        assert attn.to_v.weight.untyped_storage().data_ptr() == fused.weight.data_ptr()


def test_fusing_leaves_custom_attention_alone(tiny_model_dir: Path) -> None:
    from diffusers.models.attention_processor import AttnProcessor

    model = load_model(tiny_model_dir, device="cpu")
    # A processor that is not plain SDPA (added-KV UNets, custom ones) keeps its own projections.
    model.unet.set_attn_processor(AttnProcessor())
    speed.fuse_qkv(model.unet)
    assert all(type(p) is AttnProcessor for p in model.unet.attn_processors.values())
    assert not hasattr(
        model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1, "to_qkv"
    )


@pytest.mark.parametrize("sampler", ["k_lms", "ddim", "k_euler_a"])
def test_fast_path_keeps_the_pictures(plain: Model, fast: Model, sampler: str) -> None:
    job = make_job(sampler=sampler, noises=(Noise(3), Noise(4)))
    seen: dict[str, torch.Tensor] = {}
    ours = fast.generate(job, lambda info: seen.__setitem__("fast", info.latents))
    theirs = plain.generate(job, lambda info: seen.__setitem__("plain", info.latents))
    torch.testing.assert_close(seen["fast"], seen["plain"], rtol=1e-4, atol=1e-4)
    assert np.abs(pixels(ours) - pixels(theirs)).max() <= 1


def test_batch_of_eight_equals_each_seed_alone_on_the_fast_path(fast: Model) -> None:
    # plan.CUDA_BATCH images in one UNet batch, as `-n 8` runs on CUDA.
    noises = tuple(Noise(100 + k) for k in range(8))
    batch = fast.generate(make_job(noises=noises, steps=3))
    alone = [fast.generate(make_job(noises=(n,), steps=3))[0] for n in noises]
    assert np.abs(pixels(batch) - pixels(alone)).max() <= 2


@pytest.mark.slow  # torch.compile in this process: 4-10 s; CI runs it
def test_compile_path_with_the_eager_backend_keeps_the_pictures(
    tiny_model_dir: Path, plain: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Dynamo traces the real UNet; the eager backend skips inductor's minutes of C++ on CPU.
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "eager"})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = load_model(tiny_model_dir, device="cpu", compile=True)
    job = make_job(sampler="ddim")
    assert speed.unet_for(model, job) is not model.unet
    compiled = model.generate(job)
    assert np.abs(pixels(compiled) - pixels(plain.generate(job))).max() <= 1
    # Another sampler feeds the UNet float32 timesteps too: the same graph serves it.
    again = model.generate(make_job(sampler="k_euler"))
    assert np.abs(pixels(again) - pixels(plain.generate(make_job(sampler="k_euler")))).max() <= 1


def test_compile_pays_per_shape_after_its_cost_in_eager_time(
    plain: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = replace(plain)  # a new Model on the same parts, with its own speed state
    speed.prepare(model, compile=None)
    assert not speed.should_compile(model, speed.unet_shape(model, make_job()))  # CPU: never
    model = replace(plain)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # an empty (cold) cache
    speed.prepare(model, compile=True)
    small, big = make_job(), make_job(width=128, noises=(Noise(1), Noise(2)))
    assert speed.should_compile(model, speed.unet_shape(model, small))
    model = replace(plain)
    speed.prepare(model, compile=False)
    speed.record(model, small, 1e6)
    assert not speed.should_compile(model, speed.unet_shape(model, small))

    # Where compiling is allowed but not forced (CUDA's default): rent until it would have paid.
    model = replace(plain)
    speed.prepare(model, compile=None)
    speed._state(model).compile = True
    shape = speed.unet_shape(model, small)
    assert shape == (2, 4, 8, 8, 77)  # CFG doubles the batch
    assert speed.unet_shape(model, big) == (4, 4, 8, 16, 77)
    # A conjunction's 154 tokens are another graph: it starts eager like a new size.
    both = make_job(prompt='("a red circle", "on blue").and() [green]')
    assert speed.unet_shape(model, both) == (2, 4, 8, 8, 154)
    speed.record(model, small, speed.COMPILE_COLD_S - 1)
    assert not speed.should_compile(model, shape)
    # A warm inductor cache makes compiling cheap: the same eager time now pays for it.
    (tmp_path / "fxgraph").mkdir()
    (tmp_path / "fxgraph" / "entry").write_bytes(b"x")
    assert speed.should_compile(model, shape)
    (tmp_path / "fxgraph" / "entry").unlink()
    speed.record(model, small, 1)
    assert speed.should_compile(model, shape)
    assert not speed.should_compile(model, speed.unet_shape(model, big))  # a new size starts eager
    assert not speed.should_compile(model, speed.unet_shape(model, both))


def test_failed_compile_falls_back_to_eager(
    tiny_model_dir: Path, plain: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch._dynamo.exc

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    model = load_model(tiny_model_dir, device="cpu", compile=True)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise torch._dynamo.exc.TorchDynamoException("inductor: no C compiler")

    monkeypatch.setattr(speed._CompiledUNet, "__call__", broken)
    images = model.generate(make_job())
    assert np.abs(pixels(images) - pixels(plain.generate(make_job()))).max() <= 1
    assert speed.unet_for(model, make_job()) is model.unet


def test_prompt_is_encoded_once_per_command(plain: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = pixels(plain.generate(make_job(noises=(Noise(0),))))
    calls: list[str] = []
    real = generate_module.encode_prompt

    def counting(model: Any, prompt: Any, *args: Any) -> Any:
        calls.append(prompt.text)
        return real(model, prompt, *args)

    monkeypatch.setattr(generate_module, "encode_prompt", counting)
    model = replace(plain)
    speed.prepare(model)
    # `-n 3` on CPU: three one-image passes of the same prompt.
    images = [model.generate(make_job(noises=(Noise(k),)))[0] for k in range(3)]
    assert calls == ["a red circle [blue]"]
    assert np.array_equal(pixels(images[:1]), reference)
    model.generate(make_job(prompt="a blue square"))
    model.generate(make_job(prompt="a blue square", log_tokenization=True))  # -t reports again
    assert calls == ["a red circle [blue]", "a blue square", "a blue square"]


def test_cuda_graph_outputs_survive_the_next_replay() -> None:
    # A CUDA-graph replay writes its output into the same static buffer every time; PLMS/LMS keep
    # past outputs, so the wrapper must hand out copies.
    static = torch.zeros(2)

    def replay(x: torch.Tensor) -> tuple[torch.Tensor]:
        static.copy_(x)
        return (static,)

    unet = speed._CompiledUNet(replay, cuda_graphs=True)
    first = unet(torch.ones(2))[0]
    unet(torch.full((2,), 2.0))
    assert first.tolist() == [1.0, 1.0]


OUT_OF_MEMORY = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
]


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["cuda", "mps"])
def test_out_of_memory_is_one_line_saying_what_to_try(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    freed: list[bool] = []
    real_free = speed.free_memory
    monkeypatch.setattr(speed, "free_memory", lambda: (freed.append(True), real_free()))

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise error

    with monkeypatch.context() as patch:
        patch.setattr(model.unet, "forward", out_of_memory)
        with pytest.raises(InvokeError) as err:
            model.generate(make_job(width=128, height=64, noises=(Noise(1), Noise(2))))
    message = str(err.value)
    assert "\n" not in message
    assert "128x64" in message and "2 images in one batch" in message
    assert "-W/-H" in message and "-n" in message and "--offload" in message
    assert err.value.__cause__ is None and err.value.__context__ is None  # no frames kept alive
    assert freed == [True]
    # The model goes on working afterwards, as the shell does.
    assert len(model.generate(make_job())) == 1


def test_other_runtime_errors_are_not_called_out_of_memory(
    plain: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(plain.unet, "forward", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        plain.generate(make_job())


# -- SDXL and Kandinsky: the same guard, and SDXL the same UNet choice and prompt cache -----------


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl_dir: Path) -> Model:
    return load_model(tiny_sdxl_dir, device="cpu")


@pytest.fixture(scope="module")
def kandinsky(tiny_kandinsky_dir: Path) -> Model:
    return load_model(tiny_kandinsky_dir, device="cpu")


def recorded_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[tuple]:
    """Patch owner.name to note each call's positional arguments, then run the real one."""
    real = getattr(owner, name)
    calls: list[tuple] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


@pytest.mark.parametrize("error", OUT_OF_MEMORY, ids=["cuda", "mps"])
@pytest.mark.parametrize("family", ["sdxl", "kandinsky"])
def test_out_of_memory_in_other_families_is_the_same_one_line(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, family: str, error: Exception
) -> None:
    model: Model = request.getfixturevalue(family)
    side = 2 * model.size_multiple
    noises = (Noise(1), Noise(2))
    job = make_job(width=2 * side, height=side, noises=noises, steps=2, sampler="ddim")
    freed = recorded_calls(monkeypatch, speed, "free_memory")
    with monkeypatch.context() as patch:
        patch.setattr(model.unet, "forward", mock.Mock(side_effect=error))
        with pytest.raises(InvokeError) as err:
            model.generate(job)
    # SD's line word for word (what it says is checked above): size, batch, what to try.
    assert str(err.value) == speed.out_of_memory_message(model, job)
    assert "\n" not in str(err.value) and f"{2 * side}x{side}, 2 images" in str(err.value)
    assert err.value.__context__ is None and freed == [()]
    assert len(model.generate(replace(job, noises=noises[:1]))) == 1


def test_sdxl_prompt_is_encoded_once_per_command(
    sdxl: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from invoke.backend.families import sdxl as sdxl_module

    job = make_job(steps=2, noises=(Noise(0),))
    first = pixels(sdxl.generate(job))
    encoded = recorded_calls(monkeypatch, sdxl_module, "encode_prompt")
    model = replace(sdxl)  # the same parts with a fresh (empty) prompt cache
    speed.prepare(model)
    # `-n 3` on CPU: three one-image passes of one prompt; then a new prompt encodes again.
    passes = [model.generate(replace(job, noises=(Noise(k),)))[0] for k in range(3)]
    model.generate(make_job(steps=2, noises=(Noise(0),), prompt="a blue square"))
    assert [prompt.text for _, prompt, *_ in encoded] == ["a red circle [blue]", "a blue square"]
    assert np.array_equal(pixels(passes[:1]), first)


@pytest.mark.slow  # torch.compile in this process: 4-10 s; CI runs it
def test_sdxl_compile_path_with_the_eager_backend_keeps_the_pictures(
    sdxl: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(speed, "COMPILE_OPTIONS", {"backend": "eager"})
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    replays = recorded_calls(monkeypatch, speed._CompiledUNet, "__call__")
    model = replace(sdxl)
    speed.prepare(model, compile=True)
    job = make_job(steps=2, sampler="ddim")
    compiled = model.generate(job)
    assert len(replays) == 2  # both steps ran the compiled UNet...
    assert speed._state(model).compile  # ...and it traced: no fallback to eager
    assert np.abs(pixels(compiled) - pixels(sdxl.generate(job))).max() <= 1


TINY_BENCH = ("--arch", "tiny", "--device", "cpu", "--runs", "1", "--steps", "2", "--size", "32")


# Issue 6's first acceptance line, so CI runs it: three Python processes, about 16 s.
@pytest.mark.e2e  # three fresh Python processes, each importing torch and diffusers
def test_bench_smoke_run_prints_the_table_and_the_speedup() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
    done = subprocess.run(
        [sys.executable, str(script), *TINY_BENCH],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    table = "\n".join(lines)
    for row in ("txt2img batch 1, s/image", "img2img -f 0.75", "-n 16, s/image", "peak GPU MiB"):
        assert row in table
    assert "first image, fresh process" in table and "model load, s" in table
    # Same weights, seed and sampler: both sides draw the same picture on CPU.
    assert "largest pixel difference, ours vs diffusers (batch 1): 0" in table
    speedup = lines[-1].removeprefix("speedup_vs_diffusers=")
    assert lines[-1].startswith("speedup_vs_diffusers=") and float(speedup) > 0


@pytest.mark.slow  # inductor compiles C++ for the tiny UNet: about 40 s on one core
def test_real_inductor_compile_keeps_the_pictures(
    tiny_model_dir: Path, plain: Model, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The compile path with inductor itself (the other tests trace with the eager backend):
    the full-graph compile of our UNet call succeeds and draws the eager picture."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    compiled = load_model(tiny_model_dir, device="cpu", compile=True)
    job = make_job(noises=(Noise(1), Noise(2)))
    assert np.abs(pixels(compiled.generate(job)) - pixels(plain.generate(job))).max() <= 2
    assert speed._state(compiled).compile and speed._state(compiled).bought  # no fallback
    # A LoRA changes the weights in place: the compiled graph must read them, not a stale copy.
    lora = (Lora("style", str(kohya_file(plain, tmp_path / "style.safetensors")), 1.0),)
    styled = pixels(plain.generate(replace(job, loras=lora)))
    assert np.abs(pixels(compiled.generate(replace(job, loras=lora))) - styled).max() <= 2
    assert np.abs(pixels(compiled.generate(job)) - pixels(plain.generate(job))).max() <= 2


@pytest.mark.gpu
def test_cuda_fast_path_matches_the_plain_cpu_path(tiny_model_dir: Path, plain: Model) -> None:
    """On a GPU: fp16, fused QKV, channels_last and a batch of 8 stay within fp16 tolerance."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = load_model(tiny_model_dir, device="cuda", compile=False)
    assert model.dtype == torch.float16
    assert hasattr(model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1, "to_qkv")
    noises = tuple(Noise(100 + k) for k in range(8))
    batch = model.generate(make_job(noises=noises, steps=3))
    alone = [model.generate(make_job(noises=(n,), steps=3))[0] for n in noises]
    assert np.abs(pixels(batch) - pixels(alone)).max() <= 2
    reference = plain.generate(make_job(noises=noises[:1], steps=3))
    assert np.abs(pixels(alone[:1]) - pixels(reference)).max() <= 4


@pytest.mark.gpu
def test_cuda_compiled_unet_matches_eager(tiny_model_dir: Path) -> None:
    """On a GPU: reduce-overhead (CUDA graphs) keeps the pictures, guided and unguided (PLMS keeps
    past UNet outputs, which a graph replay would overwrite if they were not copied out)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    eager = load_model(tiny_model_dir, device="cuda", compile=False)
    compiled = load_model(tiny_model_dir, device="cuda", compile=True)
    for cfg_scale in (7.5, 1.0):
        job = make_job(sampler="plms", cfg_scale=cfg_scale, steps=6, noises=(Noise(1), Noise(2)))
        assert speed.unet_for(compiled, job) is not compiled.unet
        ours, plain = compiled.generate(job), eager.generate(job)
        assert np.abs(pixels(ours) - pixels(plain)).max() <= 3


@pytest.mark.gpu
def test_cuda_graphs_see_a_lora_merged_after_capture(tiny_model_dir: Path, tmp_path: Path) -> None:
    """On a GPU: a LoRA merged into the fused fp16 weights after the CUDA graph was recorded
    draws what eager draws with it, and leaving it out draws the plain picture again."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    eager = load_model(tiny_model_dir, device="cuda", compile=False)
    compiled = load_model(tiny_model_dir, device="cuda", compile=True)
    job = make_job(steps=6, noises=(Noise(1), Noise(2)))
    plain = pixels(compiled.generate(job))
    lora = (Lora("style", str(kohya_file(eager, tmp_path / "style.safetensors")), 1.0),)
    styled = pixels(eager.generate(replace(job, loras=lora)))
    assert np.abs(pixels(compiled.generate(replace(job, loras=lora))) - styled).max() <= 3
    assert (pixels(compiled.generate(job)) == plain).all()
