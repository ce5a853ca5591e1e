"""--offload: a model's parts wait in CPU memory and visit the GPU one at a time, while used.

Like diffusers' model CPU offload (without needing accelerate): a forward pre-hook on each part
(and on each child of the VAE, whose encode/decode bypass its forward) moves that part to the GPU
and the part used before it back to the CPU. Peak GPU memory is the biggest part plus activations,
at the price of a host<->GPU copy per part per image. On the CPU there is nothing to offload.
"""

from __future__ import annotations

from typing import Any

import torch


class Offloader:
    def __init__(self, parts: dict[str, Any], device: torch.device) -> None:
        self.device = device
        self.active: Any = None
        self.handles: list[Any] = []
        for part in parts.values():
            part.to("cpu")
            hooked = [part] if not hasattr(part, "decoder") else list(part.children())
            for module in hooked:
                self.handles.append(module.register_forward_pre_hook(self._hook(part)))

    def _hook(self, part: Any) -> Any:
        def hook(_module: Any, _args: Any) -> None:
            self.use(part)

        return hook

    def use(self, part: Any) -> None:
        """Put `part` on the GPU, sending the one there before it back to the CPU."""
        if self.active is part:
            return
        if self.active is not None:
            self.active.to("cpu")
        part.to(self.device)
        self.active = part

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def enable_offload(model: Any) -> Offloader | None:
    """Offload the model's torch parts; None (nothing done) when it runs on the CPU."""
    if model.device.type == "cpu":
        return None
    names = ("text_encoder", "text_encoder_2", "unet", "vae")
    parts = {n: getattr(model, n) for n in names if getattr(model, n, None) is not None}
    return Offloader(parts, model.device)
