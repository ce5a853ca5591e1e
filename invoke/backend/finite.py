"""NaN and infinity never become a picture.

One NaN weight (a damaged download, a bad conversion, a LoRA trained into NaN) spreads through
every layer after it, and the VAE's output, clamped to [0, 1] and cast to bytes, is a solid black
picture that looks like a success. So non-finite numbers are stopped at the two places they can
come from:

- files: a model's parts, a replacement VAE, a LoRA, an embedding, a ControlNet and an upscaler
  are checked once, when loaded (`check_weights`): one line naming the file;
- arithmetic: finite weights can still overflow (float16's largest number is 65504), so a job's
  final latents and its decoded pixels are checked before they become pictures
  (`check_latents`, `check_pixels`): one line naming the likely cause; nothing is saved.

The load check is one min/max pass per tensor (`aminmax` propagates NaN, and an infinity is its
own min or max): 0.4 ns a weight on one CPU thread, against 6 ns for `isfinite().all()`, so
about 0.4 s for SD 1.5's 1.07 billion weights on the CPU, a few ms on a GPU. Only a tensor that
has any non-finite value is counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from invoke.errors import InvokeError, ModelError

if TYPE_CHECKING:
    from invoke.backend.job import Job

HALF = (torch.float16, torch.bfloat16)
MINMAX_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
AGAIN = "download or convert it again"


def nonfinite_count(tensors: Iterable[torch.Tensor]) -> int:
    """How many values of the floating-point tensors are NaN or infinite."""
    bad = 0
    for tensor in tensors:
        if not tensor.is_floating_point() or tensor.numel() == 0 or tensor.is_meta:
            continue
        if tensor.dtype not in MINMAX_TYPES:  # float8 and the like: small, read as float32
            tensor = tensor.float()
        lo, hi = tensor.detach().aminmax()
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            bad += int((~torch.isfinite(tensor.detach())).sum())
    return bad


def module_tensors(module: Any) -> Iterator[torch.Tensor]:
    """A torch module's parameters and buffers (each once)."""
    return chain(module.parameters(), module.buffers())


def check_weights(
    what: str,
    tensors: Iterable[torch.Tensor] | torch.nn.Module,
    *,
    again: str = AGAIN,
    noun: str = "weight",
    dtype: torch.dtype | None = None,
) -> None:
    """ModelError "WHAT: 12 weights are NaN or infinite; the file is damaged: AGAIN" when any
    value of the tensors (or of a module's parameters and buffers) is not finite.

    `dtype`: what the weights were cast to on loading; a float16 cast makes numbers above 65504
    infinite, so in half precision the message also says to try float32."""
    if isinstance(tensors, torch.nn.Module):
        tensors = module_tensors(tensors)
    bad = nonfinite_count(tensors)
    if not bad:
        return
    are = f"{noun} is" if bad == 1 else f"{noun}s are"
    if dtype in HALF:
        name = str(dtype).removeprefix("torch.")
        raise ModelError(
            f"{what}: {bad} {are} NaN or infinite in {name}: too large for it (try --precision "
            f"float32) or the file is damaged: {again}"
        )
    raise ModelError(f"{what}: {bad} {are} NaN or infinite; the file is damaged: {again}")


def check_latents(latents: torch.Tensor, dtype: torch.dtype, job: Job | None = None) -> None:
    """InvokeError naming the likely cause when a job's final latents are not all finite."""
    if not bool(torch.isfinite(latents).all()):
        raise InvokeError(f"denoising {went_wrong(dtype, job)}")


def check_pixels(pixels: torch.Tensor, dtype: torch.dtype) -> None:
    """InvokeError naming the likely cause when the VAE's pixels are not all finite."""
    if not bool(torch.isfinite(pixels).all()):
        raise InvokeError(f"the VAE {went_wrong(dtype, None)}")


MODEL = "the model itself (its weights or settings)"


def pictures(
    array: np.ndarray, what: str, dtype: torch.dtype, own: str = MODEL
) -> list[Image.Image]:
    """8-bit pictures of a pipeline's (batch, h, w, 3) values in [0, 1], made as diffusers makes
    them; InvokeError "WHAT gave NaN ..." when any value is NaN (`own`: what else to blame)."""
    if not np.isfinite(array).all():
        raise InvokeError(f"{what} {went_wrong(dtype, None, own)}")
    return [Image.fromarray(a) for a in (array * 255).round().astype("uint8")]


def went_wrong(dtype: torch.dtype, job: Job | None, own: str = MODEL) -> str:
    """ "gave NaN or infinite numbers; nothing was saved; likely cause: ...": what is worth
    trying, most likely first."""
    causes = []
    if dtype in HALF:
        name = str(dtype).removeprefix("torch.")
        causes.append(f"{name} overflowing (try --precision float32)")
    if job is not None and job.loras:
        causes.append("a LoRA (try a lower weight, or the line without it)")
    if job is not None and job.cfg_scale > 30:
        causes.append(f"-C {job.cfg_scale:g} (try 7.5)")
    if job is not None and job.embeddings:
        names = ", ".join(f"<{e.name}>" for e in job.embeddings)
        causes.append(f"the embedding {names} (try the line without it)")
    if job is not None and job.control is not None:
        causes.append("the ControlNet (try a lower --control_weight)")
    if job is not None and job.image_prompt is not None:
        causes.append("the IP-Adapter (try a lower --ip_weight)")
    causes.append(own)
    return f"gave NaN or infinite numbers; nothing was saved; likely cause: {', or '.join(causes)}"
