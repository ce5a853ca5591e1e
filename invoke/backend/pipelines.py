"""What runs a diffusers pipeline of its own needs (Kandinsky, the -U upscalers): its weights
checked, and putting it on the device (loaded inside components.quiet_loading)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from invoke.backend.components import weights_name
from invoke.backend.finite import check_weights
from invoke.errors import ModelError


def check_pipeline(pipe: Any, kind: str, folder: Path, dtype: torch.dtype) -> None:
    """Each of the pipeline's networks finite (finite.check_weights), named by its weights file:
    `upscaler FOLDER/unet/diffusion_pytorch_model.safetensors: 3 weights are NaN ...`."""
    for name, part in pipe.components.items():
        if isinstance(part, torch.nn.Module):
            check_weights(f"{kind} {weights_name(folder / name)}", part, dtype=dtype)


def place(pipe: Any, device: torch.device, offload: bool, what: str) -> None:
    """The pipeline on `device`, or with --offload on a GPU each part there only while it runs
    (accelerate's model offload); its own step bars off."""
    pipe.set_progress_bar_config(disable=True)
    if offload and device.type != "cpu":
        try:
            pipe.enable_model_cpu_offload(device=device)
        except (ImportError, ValueError, RuntimeError) as err:
            raise ModelError(f"{what}: --offload needs the accelerate package ({err})") from err
    else:
        pipe.to(device)
