"""Where a model runs and in which precision: the --device and --precision choices."""

from __future__ import annotations

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
DEVICES = ("auto", "cuda", "mps", "cpu")


def pick_device(device: str = "auto") -> torch.device:
    """auto = cuda, then mps, then cpu; an explicit device must be present."""
    if device not in DEVICES:
        raise ModelError(f"--device: {device} is not one of {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    has_mps = torch.backends.mps.is_available()
    if device == "auto":
        device = "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if (device == "cuda" and not has_cuda) or (device == "mps" and not has_mps):
        raise ModelError(f"--device: {device} is not available on this machine; use auto or cpu")
    return torch.device(device)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto = float16 on GPUs (CUDA, MPS: half the memory, tensor cores), float32 on CPUs."""
    if precision == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if precision not in PRECISIONS:
        raise ModelError(f"--precision: {precision} is not one of auto, float32, float16, bfloat16")
    return PRECISIONS[precision]
