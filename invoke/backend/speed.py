"""The CUDA fast path: what runs faster where, and what happens when memory runs out.

What is on by default, where, and why:

- **SDPA attention** (torch.nn.functional.scaled_dot_product_attention): everywhere. diffusers'
  attention processors use it by default on torch 2; on CUDA it picks the flash or memory-efficient
  kernel, which never materializes the (tokens x tokens) attention matrix. `prepare` only checks
  that no model left it off.
- **channels_last** (NHWC) UNet and VAE: CUDA only. cuDNN's tensor-core convolutions work in NHWC;
  in NCHW every convolution pays a layout transpose. On CPU it changes little and would change the
  last bits of every picture made so far.
- **Fused QKV projections** (`fuse_qkv_projections` on UNet and VAE): CUDA only. One (3d x d)
  matmul instead of three (d x d) ones per self-attention (one (2d x d) for cross-attention's K
  and V) fills the GPU better and launches fewer kernels. The separate q/k/v weights are then
  re-pointed into the fused ones, so the weights cost no extra memory. Off on CPU for the same
  reason as channels_last: outputs move by float rounding only, but remakes should stay exact.
- **torch.compile of the UNet** with mode="reduce-overhead" (fused inductor kernels, replayed
  as CUDA graphs: one launch per UNet call instead of hundreds; BENCH.md measured one SD 1.5
  UNet call at 26 ms eager and 7.7 ms compiled on an H100): CUDA only, and only *where it
  pays*. Compiling SD 1.5's UNet took 82 s on a cold cache there, far longer than one image
  takes eagerly, so with `compile=None` (the default) each input shape (batch, guidance, latent
  size) runs eagerly until the eager time this process has spent on that shape reaches what its
  compile is expected to cost (the ski-rental rule: never worse than twice the better choice in
  hindsight, and it needs no guess of how much work is coming). A one-shot `invoke "..."` never
  compiles; a shell session or a batch file that keeps making images of one size compiles after
  a while and runs faster from then on. A new size or batch is its own shape and starts eager
  again, so trying sizes in the shell never stalls on compiles. `compile=True` (--compile)
  compiles every shape at its first use (the benchmark, long batches); `compile=False`
  (--no-compile) never compiles.
  On CPU and MPS compile is off unless forced: the UNet there is bound by arithmetic, not launches,
  and inductor's CPU compile on a small machine costs minutes. A forced compile on CPU uses the
  default mode (CUDA graphs need CUDA).
- **Inductor's on-disk caches** (FX graph cache and AOTAutograd cache) are switched on and kept
  under `$XDG_CACHE_HOME/invoke/torchinductor` (unless TORCHINDUCTOR_CACHE_DIR is set) instead
  of torch's /tmp default, so a second process, even after a reboot, loads compiled kernels
  instead of compiling them. With a warm cache the expected compile cost, and so the ski-rental
  threshold, is lower.

Elsewhere in the backend, for the same reasons: prompt embeddings are computed once per command
(cached here between the passes of one `-n` command), the step loop takes no host-device sync
(timesteps are read to the host once, schedulers get host timesteps), `-n` is batched on CUDA
(plan.CUDA_BATCH) and decoded by the VAE in one batch. One sync per step is kept on purpose:
ancestral/SDE samplers (k_euler_a, k_dpm_2_a, k_dpmpp_2_a) draw each step's noise from the
images' CPU generators and copy it over, which is what makes a seed the same image at any batch
size or position.

--hires_fix runs two UNet passes per image, at the first-pass size and at the full size: two
shapes, each with its own eager-time count and compiled graph (generate._run_pass asks `unet_for`
and times each pass on its own), and one prompt encoding for both.

Out of memory: `guard_memory` turns torch.OutOfMemoryError (and MPS's out-of-memory RuntimeError)
into one InvokeError naming the size and batch that were too big and what to try (smaller -W/-H,
-n, --offload), after freeing what the failed attempt held; the shell goes on.

--seamless jobs (seamless.py patches the convolutions for one job) always run the eager UNet and
their time does not count toward a compile: the compiled graph is the plain model's, and one
compiled per seamless shape would be bought for a setting that is rarely used for long.
--controlnet jobs too (control.py): the ControlNet's residuals are extra UNet inputs, another
graph, and the ControlNet itself runs eagerly.

Which models get what: SD 1.x/2.x and SDXL run the same loop (generate.py; families/sdxl.py only
adds its conditioning) and get all of the above. Kandinsky runs diffusers' pipeline: only
`guard_memory` (run.py guards every family). With --offload the parts move between devices, so QKV
stays unfused (a move would copy the shared weights apart) and compile is off unless forced.

None of the CUDA behaviour here has been measured by the code's author (no GPU in that session);
the CPU tests run the same code with the switches turned on by hand.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.backend.job import Job
    from invoke.backend.model import Model

log = logging.getLogger(__name__)

# Expected cost of compiling the UNet for one shape, the ski-rental threshold. Cold: BENCH.md
# measured 82 s for SD 1.5's UNet on an H100 (reduce-overhead). Warm: issue 6's target for a fresh
# process on a warm cache (<= 15 s beyond eager); an assumption, not a measurement.
COMPILE_COLD_S = 80.0
COMPILE_WARM_S = 15.0
# Distinct shapes one process may compile; dynamo's default limit (8) would silently fall back.
RECOMPILE_LIMIT = 32

# Extra torch.compile arguments; tests trace with {"backend": "eager"} (seconds, not minutes).
COMPILE_OPTIONS: dict[str, Any] = {}

# (batch of UNet inputs, channels, latent height, latent width, prompt tokens): what a compiled
# graph is for; a different one is another graph, compiled (and paid for) on its own.
Shape = tuple[int, ...]


@dataclass(eq=False)
class _State:
    """Per-model speed state: the compile choice, eager time per shape, the prompt cache."""

    compile: bool  # may compile at all (False on CPU/MPS unless forced, or --no-compile)
    force: bool  # compile every shape at first use
    compiled: Any = None  # the torch.compile wrapper of model.unet (shares its parameters)
    eager_seconds: dict[Shape, float] = field(default_factory=dict)
    bought: set[Shape] = field(default_factory=set)
    prompt_key: tuple[Any, ...] | None = None
    prompt_value: tuple[torch.Tensor, ...] | None = None


def _state(model: Model) -> _State:
    """The model's speed state (Model.speed), made by prepare()."""
    if model.speed is None:  # a Model built without prepare(): plain path, never compiled
        model.speed = _State(compile=False, force=False)
    state: _State = model.speed
    return state


# -- at load time ---------------------------------------------------------------------------------


def prepare(model: Model, compile: bool | None = None) -> None:
    """Apply the defaults above to a freshly loaded model (called by load_model).

    compile: None = where it pays (CUDA, per shape, once eager time reaches the compile cost);
    True = compile every shape at first use, on any device; False = never.
    """
    if getattr(model, "pipeline", None) is not None:
        # Kandinsky runs through diffusers' own pipeline, not our loop: nothing here applies.
        model.speed = _State(compile=False, force=False)
        return
    cuda = model.device.type == "cuda"
    # --offload moves parts between devices with .to(), which turns the fused layers' shared
    # weights back into copies, and its per-part hooks break a full-graph compile.
    offloaded = getattr(model, "offloader", None) is not None
    _check_sdpa(model.unet)
    _check_sdpa(model.vae)
    if cuda:
        if not offloaded:
            fuse_qkv(model.unet)
            fuse_qkv(model.vae)
        # NHWC convolutions are the fast path for tensor cores.
        model.unet.to(memory_format=torch.channels_last)
        model.vae.to(memory_format=torch.channels_last)
    allowed = (cuda and not offloaded) if compile is None else compile
    model.speed = _State(compile=allowed, force=bool(compile))
    if allowed:
        use_disk_cache()


def _check_sdpa(module: Any) -> None:
    """Put back SDPA attention if a model's config left the slow O(n^2)-memory processor on."""
    from diffusers.models.attention_processor import AttnProcessor

    processors = getattr(module, "attn_processors", {})
    if any(type(p) is AttnProcessor for p in processors.values()):
        from diffusers.models.attention_processor import AttnProcessor2_0

        module.set_attn_processor(AttnProcessor2_0())


def fuse_qkv(module: Any) -> None:
    """diffusers' fused QKV projections, without keeping a second copy of the weights.

    fuse_projections copies q, k and v into a new to_qkv (to_kv for cross-attention) and leaves
    the originals in place, unused by the fused processor: for SD 1.5 that is tens of MB of dead
    weights. Re-pointing the originals into slices of the fused weight frees them and keeps
    unfuse_qkv_projections working.
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    processors = getattr(module, "attn_processors", {})
    if not hasattr(module, "fuse_qkv_projections") or not processors:
        return  # Kandinsky's VQ VAE, models without attention
    if any(type(p) is not AttnProcessor2_0 for p in processors.values()):
        return  # added-KV or custom processors: fusing would replace what they do
    module.fuse_qkv_projections()
    for attn in module.modules():
        if not isinstance(attn, Attention):
            continue
        fused = getattr(attn, "to_qkv", None)
        parts = (attn.to_q, attn.to_k, attn.to_v)
        if fused is None:
            fused, parts = getattr(attn, "to_kv", None), (attn.to_k, attn.to_v)
        if fused is None:
            continue
        start = 0
        for part in parts:
            rows = part.weight.shape[0]
            part.weight.data = fused.weight.data[start : start + rows]
            if part.bias is not None and fused.bias is not None:
                part.bias.data = fused.bias.data[start : start + rows]
            start += rows


def use_disk_cache() -> Path:
    """Keep inductor's compiled graphs on disk across processes (and reboots); return where."""
    import torch._dynamo.config
    import torch._functorch.config
    import torch._inductor.config

    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "invoke" / "torchinductor")
    # Respect a user who forced a cache off through torch's own variables.
    if "TORCHINDUCTOR_FX_GRAPH_CACHE" not in os.environ:
        torch._inductor.config.fx_graph_cache = True
    if "TORCHINDUCTOR_AUTOGRAD_CACHE" not in os.environ:
        torch._functorch.config.enable_autograd_cache = True
    limit = getattr(torch._dynamo.config, "recompile_limit", None)
    if limit is not None and limit < RECOMPILE_LIMIT:
        torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])


def cache_is_warm() -> bool:
    """Whether inductor's FX graph cache holds anything yet (then compiles mostly load kernels)."""
    folder = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")) / "fxgraph"
    return (
        bool(os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        and folder.is_dir()
        and any(folder.iterdir())
    )


# -- per job --------------------------------------------------------------------------------------


class _CompiledUNet:
    """Calls the compiled UNet as one CUDA-graph step whose output the caller may keep.

    With reduce-overhead the outputs live in the graph's static memory and the next replay
    overwrites them. Multistep schedulers (PLMS, LMS, DPM++) keep past model outputs, and without
    guidance the UNet's output is exactly what they keep, so it is copied out (one latent-sized
    copy per step); marking the step tells torch the previous replay's memory may be reused.
    """

    def __init__(self, compiled: Any, cuda_graphs: bool) -> None:
        self.compiled = compiled
        self.cuda_graphs = cuda_graphs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.cuda_graphs:
            return self.compiled(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(*args, **kwargs)
        return tuple(t.clone() for t in out)


def unet_shape(model: Model, job: Job) -> Shape:
    """The UNet's input shape for a job, and the prompt's token count (77 per chunk of a long
    prompt, per `.and()` part): what one compiled graph is specialized to."""
    from invoke.backend.prompts import text_length

    guided = 2 if job.cfg_scale > 1 else 1
    channels = int(model.unet.config.in_channels)
    cell = model.size_multiple
    tokens = text_length(job.prompt, model.tokenizer or model.tokenizer_2)  # 77 per CLIP chunk
    return (guided * len(job.noises), channels, job.height // cell, job.width // cell, tokens)


def should_compile(model: Model, shape: Shape) -> bool:
    """Whether this shape runs compiled: forced, or its eager time has paid for a compile."""
    state = _state(model)
    if not state.compile:
        return False
    if state.force or shape in state.bought:
        return True
    threshold = COMPILE_WARM_S if cache_is_warm() else COMPILE_COLD_S
    return state.eager_seconds.get(shape, 0.0) >= threshold


def unet_for(model: Model, job: Job) -> Any:
    """The UNet to run this job with: the eager module, or the compiled one where it pays.

    A --seamless job always runs eagerly: its convolutions are patched for the job, a different
    graph from the one compiled, and a CUDA-graph replay of the plain graph would draw the plain
    picture whatever dynamo's guards make of the patch. So does a --controlnet job: the UNet
    takes the ControlNet's residuals as extra inputs, another graph again; and an --ip_adapter
    job, whose attention processors are the adapter's.
    """
    if job.seamless_axes or job.control is not None or job.image_prompt is not None:
        return model.unet
    shape = unet_shape(model, job)
    if not should_compile(model, shape):
        return model.unet
    state = _state(model)
    cuda = model.device.type == "cuda"
    if state.compiled is None:
        # fullgraph: SD UNets trace without breaks; a break would silently cost the CUDA graph.
        # dynamic=False: one specialized graph per shape, the fastest kernels for each.
        options: dict[str, Any] = {"mode": "reduce-overhead"} if cuda else {}
        options.update(COMPILE_OPTIONS)
        state.compiled = torch.compile(model.unet, fullgraph=True, dynamic=False, **options)
    if shape not in state.bought:
        state.bought.add(shape)
        log.warning(
            "compiling the UNet for %dx%d, batch %d (once per size; kept in inductor's cache)",
            job.width,
            job.height,
            len(job.noises),
        )
    return _CompiledUNet(state.compiled, cuda_graphs=cuda)


def record(model: Model, job: Job, seconds: float) -> None:
    """Count an eager job's time toward compiling its shape.

    A --seamless, --controlnet or --ip_adapter job does not count: it never runs compiled, so
    its time buys no compile.
    """
    if job.seamless_axes or job.control is not None or job.image_prompt is not None:
        return
    state = _state(model)
    shape = unet_shape(model, job)
    state.eager_seconds[shape] = state.eager_seconds.get(shape, 0.0) + seconds


@contextmanager
def timed(model: Model, job: Job) -> Iterator[None]:
    """Time one eager UNet pass of a job (a --hires_fix image is two, of two shapes).

    The pass ends with latents still on the device, so the clock stops only once the device has
    finished them: otherwise queued GPU work would be counted toward the next pass's shape. The
    VAE's encode and decode run outside: compiling the UNet does nothing for them.
    A pass that fails or is interrupted does not count.
    """
    started = time.perf_counter()
    yield
    _synchronize(model.device)
    record(model, job, time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def prompt_embeddings(
    model: Model,
    job: Job,
    encode: Callable[[], tuple[torch.Tensor, ...]],
) -> tuple[torch.Tensor, ...]:
    """The job's embeddings (cond, uncond; SDXL adds its pooled pair), computed once while the
    prompt stays the same.

    A `-n 16` command is 2 passes on CUDA and 16 on CPU, each a job with the same prompt; the
    text encoder runs once. -t (log_tokenization) always encodes, so the tokens are printed.
    """
    state = _state(model)
    # A LoRA may change the text encoder; an embedding's file (its stamp) what `<name>` means.
    key = (job.prompt, job.loras, job.embeddings)
    if job.log_tokenization or state.prompt_key != key or state.prompt_value is None:
        state.prompt_value = encode()
        state.prompt_key = key
    return state.prompt_value


# -- out of memory --------------------------------------------------------------------------------


def free_memory() -> None:
    """Give back what a failed attempt held: Python's cycles first, then CUDA's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory_message(model: Model, job: Job) -> str:
    count = len(job.noises)
    batch = "1 image" if count == 1 else f"{count} images in one batch"
    where = f"{model.device.type} memory" if model.device.type != "cpu" else "memory"
    fixes = ["a smaller -W/-H"]
    if count > 1 or model.device.type == "cuda":
        fixes.append("a smaller -n (CUDA batches up to 8 images at once)")
    fixes.append("--offload (parts on the GPU only while used)")
    return (
        f"out of {where} generating {job.width}x{job.height}, {batch} "
        f"({str(model.dtype).removeprefix('torch.')}); try {', '.join(fixes[:-1])} or {fixes[-1]}"
    )


def guard_memory(model: Model, job: Job, run: Callable[[], Any]) -> Any:
    """run(), with an out-of-memory error turned into a one-line InvokeError after freeing memory.

    The error's traceback holds the failed call's frames and their tensors; the memory is freed
    only after leaving the except clause (which drops it), so the error is raised from there.
    """
    try:
        return run()
    except (RuntimeError, MemoryError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(err):
            raise
    free_memory()
    raise InvokeError(out_of_memory_message(model, job))


# How each allocator says it when the error is not torch.OutOfMemoryError: MPS and older CUDA
# paths ("out of memory"), the CPU's ("DefaultCPUAllocator: can't allocate memory"; Windows:
# "not enough memory").
OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(err: BaseException) -> bool:
    """torch's or numpy's out-of-memory error, on any device."""
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(words in text for words in OUT_OF_MEMORY)


def give_up_compiling(model: Model, err: Exception) -> None:
    """Run this model eagerly from now on, saying why (the first line of torch's long message)."""
    state = _state(model)
    state.compile = False
    state.force = False
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    log.warning("torch.compile failed, going on without it: %s", first)


def is_compile_error(err: BaseException) -> bool:
    """torch.compile's own failures (dynamo and inductor errors derive from one class)."""
    import torch._dynamo.exc

    return isinstance(err, torch._dynamo.exc.TorchDynamoException)
