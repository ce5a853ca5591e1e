"""Where a model runs, in which precision and on how many CPU threads: --device, --precision and
--threads."""

from __future__ import annotations

import functools
import os

import torch

from invoke.errors import ModelError

PRECISIONS = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DEVICES = ("auto", "cuda", "mps", "cpu")  # and cuda:N, the Nth CUDA GPU (from 0)
DEVICE_CHOICES = "auto, cpu, mps, cuda or cuda:N"


def pick_device(device: str = "auto") -> torch.device:
    """auto = cuda, then mps, then cpu; an explicit device must be present (cuda:N: GPU N of
    torch.cuda.device_count(), which becomes the current CUDA device)."""
    kind, colon, index = device.partition(":")
    if kind not in DEVICES or (colon and (kind != "cuda" or not index.isdecimal())):
        raise ModelError(f"--device: {device} is not one of {DEVICE_CHOICES}")
    has_cuda = torch.cuda.is_available()
    has_mps = torch.backends.mps.is_available()
    if kind == "auto":
        kind = "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if (kind == "cuda" and not has_cuda) or (kind == "mps" and not has_mps):
        raise ModelError(f"--device: {device} is not available on this machine; use auto or cpu")
    if not colon:
        return torch.device(kind)
    count = torch.cuda.device_count()
    if int(index) >= count:
        gpus = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise ModelError(
            f"--device: {device} is not on this machine, which has {count} CUDA "
            f"GPU{'s' if count != 1 else ''} ({gpus})"
        )
    torch.cuda.set_device(int(index))  # what runs on "the" GPU (compile, caches) runs there
    return torch.device("cuda", int(index))


def use_threads(threads: int | None) -> int:
    """Set torch's CPU threads: `threads` (--threads) when given, else what `default_threads`
    finds free, unless OMP_NUM_THREADS already chose; returns the count in use."""
    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    count = threads or _default_count()
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return count


@functools.cache
def _default_count() -> int:
    """Found once, at the first load: later the load average counts this process's own work."""
    return default_threads(_usable_cpus(), torch.get_num_threads(), _busy_cpus())


def default_threads(cpus: int, physical: int, busy: float) -> int:
    """The CPU threads that do not oversubscribe the machine: the cores that are free (`cpus`
    usable, `busy` of them taken by other work, the 1-minute load average), at most torch's own
    choice (`physical`: the physical cores), at least one. Measured (docs/gpu.md, 2 busy
    cores): two threads were at best as fast as one, and at worst 12-17x slower."""
    free = cpus - round(busy)
    return max(1, min(physical, free))


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _busy_cpus() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows: no load average
        return 0.0


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto = float16 on GPUs (CUDA, MPS: half the memory, tensor cores), float32 on CPUs."""
    if precision == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if precision not in PRECISIONS:
        raise ModelError(f"--precision: {precision} is not one of auto, float32, float16, bfloat16")
    return PRECISIONS[precision]
