"""What the example LoRA and ControlNet training scripts share: the frozen default model, their
pictures and captions encoded once (VAE latents, text embeddings), and the training loop."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def frozen_default_model() -> Any:
    """The embedded default model on the CPU in float32, every part frozen."""
    from invoke.backend.loading import load_model
    from invoke.model_cache import embedded_model_dir

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


def train(
    model: Any,
    latents: torch.Tensor,
    params: list[torch.nn.Parameter],
    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    args: argparse.Namespace,
) -> tuple[int, float]:
    """The epsilon objective on the model's noise schedule, AdamW on `params`, for
    args.minutes: each step noises a random batch (args.batch) of latents to random timesteps
    and `predict(noisy, t, index)` (index: the batch's rows) guesses the noise. Returns the
    steps taken and the smoothed loss."""
    from diffusers import DDPMScheduler

    schedule = DDPMScheduler.from_config(model.scheduler_config)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    end = time.monotonic() + args.minutes * 60
    step, smoothed = 0, float("nan")
    while time.monotonic() < end:
        index = torch.randint(len(latents), (args.batch,))
        clean = latents[index]
        noise = torch.randn_like(clean)
        t = torch.randint(0, schedule.config.num_train_timesteps, (args.batch,))
        loss = F.mse_loss(predict(schedule.add_noise(clean, noise, t), t, index), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        smoothed = loss.item() if step == 1 else 0.98 * smoothed + 0.02 * loss.item()
        if step % 50 == 0:
            print(f"step {step}  loss {smoothed:.4f}", flush=True)
    return step, smoothed
