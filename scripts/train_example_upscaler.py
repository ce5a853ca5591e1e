"""Train the example 2x upscaler that ships with the default model: -U 2 on a fresh install.

stabilityai/sd-x2-latent-upscaler redraws Stable Diffusion's latents at twice their size; this is
the same kind of model (diffusers' StableDiffusionLatentUpscalePipeline: a UNet of k-diffusion
blocks that denoises the large latents beside the small ones, nearest-upscaled) made for the
default model, whose VAE and text encoder it shares. It learns Karras et al.'s (2022)
preconditioned objective, the one the pipeline's loop undoes at each step: at a noise level
sigma (log-uniform over the sampler's range), the denoised latents are
`x / (sigma^2 + 1) + sigma / sqrt(sigma^2 + 1) * F(x / sqrt(sigma^2 + 1), log(sigma) / 4, ...)`,
and F learns to make them the clean ones. The pairs are the default model's world
(invoke/world.py) rendered at 128x128 and at 64x64 (the small one encoded by the VAE as the
pipeline encodes a picture, a posterior sample); shapes anywhere and of any size, since the
model's ControlNet and LoRA draw those too. It is saved as a diffusers pipeline folder, as the
hub's upscalers are, so it goes through the same loading code:

    python scripts/train_example_upscaler.py --minutes 40 \\
        --out invoke/default_model/upscalers/shapes-x2

The shipped one is that command's result; its training.json says how it went.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from invoke import world

SEED = 20261202
BIG = 2 * world.SIZE
# The range of noise levels the pipeline's Euler sampler visits (SD's scaled-linear betas).
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "num_train_timesteps": 1000,
    "prediction_type": "sample",  # the loop hands the scheduler denoised latents
}


def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """One world picture at 128 and at 64 pixels (the same shape, place and colours), and its
    caption."""
    labels = world.sample_labels(rng)
    center, radius = world.sample_place(rng, radii=(0.12, 0.4), gap=0.04)
    small = world.render(labels, center, radius)
    big = world.render(labels, (center[0] * 2, center[1] * 2), radius * 2, size=BIG)
    return np.asarray(big), np.asarray(small), world.caption(labels)


@torch.no_grad()
def encode(model, big, small, captions):
    """The big pictures' latents (posterior means), the small ones' posterior (mean, std), and
    each caption's text as the pipeline encodes it: the last hidden states before the final
    layer norm, and the pooled output."""

    def pixels(pictures):
        return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1

    scale = model.vae.config.scaling_factor
    targets = torch.cat([model.vae.encode(c).latent_dist.mean for c in pixels(big).split(128)])
    posteriors = [model.vae.encode(c).latent_dist for c in pixels(small).split(256)]
    means = torch.cat([p.mean for p in posteriors]) * scale
    stds = torch.cat([p.std for p in posteriors]) * scale
    texts = sorted(set(captions))
    tokens = model.tokenizer(
        texts, padding="max_length", max_length=model.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids  # fmt: skip
    out = model.text_encoder(tokens, output_hidden_states=True)
    row = {text: i for i, text in enumerate(texts)}
    index = torch.tensor([row[c] for c in captions])
    hidden, pooled = out.hidden_states[-1][index], out.pooler_output[index]
    print(f"{len(big)} pairs, {len(texts)} captions encoded", flush=True)
    return targets * scale, means, stds, hidden, pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--pictures", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path("invoke/default_model/upscalers/shapes-x2")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import EulerDiscreteScheduler
    from example_training import frozen_default_model, train_loop

    from invoke.backend.testmodel import latent_upscaler_unet

    torch.manual_seed(SEED)
    model = frozen_default_model()
    rng = np.random.default_rng(SEED)
    big, small, captions = zip(*(pair(rng) for _ in range(args.pictures)), strict=True)
    targets, means, stds, hidden, pooled = encode(model, big, small, captions)
    sigmas = EulerDiscreteScheduler.from_config(SCHEDULER).sigmas
    low, high = math.log(float(sigmas[sigmas > 0].min())), math.log(float(sigmas.max()))
    # The pipeline's noise-level features for its (fixed, zero) augmentation of the small latents.
    level = torch.cat([torch.ones(1, 64), torch.zeros(1, 64)], dim=1)

    unet = latent_upscaler_unet(model.text_encoder.config.hidden_size, (64, 128, 128), 32)
    unet.train()

    def loss(index: torch.Tensor) -> torch.Tensor:
        clean = targets[index]
        small_latents = means[index] + stds[index] * torch.randn_like(means[index])
        cond = torch.nn.functional.interpolate(small_latents, scale_factor=2, mode="nearest")
        sigma = torch.exp(torch.empty(len(index)).uniform_(low, high))[:, None, None, None]
        noisy = clean + sigma * torch.randn_like(clean)
        c_in, c_skip = (sigma**2 + 1) ** -0.5, 1 / (sigma**2 + 1)
        c_out = sigma * c_in
        out = unet(
            torch.cat([noisy * c_in, cond], dim=1),
            torch.log(sigma.flatten()) * 0.25,
            encoder_hidden_states=hidden[index],
            timestep_cond=torch.cat([level.expand(len(index), -1), pooled[index]], dim=1),
        ).sample[:, :-1]
        # F's own target, so every noise level weighs alike (EDM's weighting, sigma_data 1)
        return torch.nn.functional.mse_loss(out, (clean - c_skip * noisy) / c_out)

    step, smoothed = train_loop(len(targets), list(unet.parameters()), loss, args)
    unet.eval()
    save(args.out, model, unet)
    (args.out / "training.json").write_text(
        json.dumps(
            {"steps": step, "minutes": args.minutes, "loss": round(smoothed, 4),
             "pictures": args.pictures, "batch": args.batch, "lr": args.lr, "seed": SEED},
            indent=2,
        ) + "\n"
    )  # fmt: skip
    print(f"wrote {args.out}: {step} steps, loss {smoothed:.4f}")


def save(out: Path, model, unet) -> None:
    """A StableDiffusionLatentUpscalePipeline folder: the trained UNet in float16, and the default
    model's own VAE, text encoder and tokenizer files (the pipeline loads its own parts)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline

    from invoke.session import embedded_model_dir

    if out.exists():
        shutil.rmtree(out)
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=unet.to(torch.float16),
        scheduler=EulerDiscreteScheduler.from_config(SCHEDULER),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    for part in ("vae", "text_encoder", "tokenizer"):
        shutil.rmtree(out / part)
        shutil.copytree(embedded_model_dir() / part, out / part)


if __name__ == "__main__":
    main()
