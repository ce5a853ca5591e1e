"""What the example LoRA and ControlNet training scripts share: the frozen default model, and
their pictures and captions encoded once (VAE latents, text embeddings) before training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def frozen_default_model() -> Any:
    """The embedded default model on the CPU in float32, every part frozen."""
    from invoke.backend.models import load_model
    from invoke.session import embedded_model_dir

    model = load_model(embedded_model_dir(), device="cpu", precision="float32")
    for part in (model.unet, model.vae, model.text_encoder):
        part.requires_grad_(False)
    return model


@torch.no_grad()
def encode_pictures(
    model: Any, pictures: Sequence[np.ndarray], captions: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, text embeddings) of (H, W, 3) 0..255 pictures and their captions: the VAE
    posterior's mean, scaled as the UNet reads it; each distinct caption encoded once."""
    from invoke.backend.prompts import embed_text

    pixels = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2) / 127.5 - 1
    latents = torch.cat([model.vae.encode(chunk).latent_dist.mean for chunk in pixels.split(256)])
    texts = sorted(set(captions))
    table = {t: embed_text(model, t)[0] for t in texts}
    print(f"{len(pictures)} pictures, {len(texts)} captions encoded", flush=True)
    return latents * model.vae.config.scaling_factor, torch.stack([table[c] for c in captions])
