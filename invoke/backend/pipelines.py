"""What runs a diffusers pipeline of its own needs (Kandinsky, the -U upscalers): loading it
without the libraries' bars, and putting it on the device."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from invoke.errors import ModelError


@contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' loading bars off for the block (the front ends draw their
    own), and transformers' warnings about what a pipeline imports but does not use here (the
    x4 upscaler's image processor wants torchvision). Each is put back as it was."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    bars = (
        diffusers_logging.is_progress_bar_enabled(),
        transformers_logging.is_progress_bar_enabled(),
    )
    verbosity = transformers_logging.get_verbosity()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


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
