"""Seeded starting noise: one CPU generator per image, so a seed means the same noise anywhere.

The same seed gives the same image whatever the batch size, batch position or device, because the
noise is drawn on the CPU in float32 from the image's own generator and only then moved.
"""

from __future__ import annotations

import torch

from invoke.backend.job import Noise

# Beyond this |cos| the two noises are nearly parallel and slerp's sin(theta) divides by ~0.
PARALLEL_DOT = 0.9995


def seed_generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def seed_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise of `shape` (without the batch dimension) for `seed`, on the CPU."""
    return torch.randn((1, *shape), generator=seed_generator(seed), dtype=torch.float32)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from v0 (t=0) to v1 (t=1); linear when they are nearly parallel."""
    a, b = v0.double().flatten(), v1.double().flatten()
    dot = torch.dot(a, b) / (a.norm() * b.norm())
    if abs(dot.item()) > PARALLEL_DOT:
        out = (1 - t) * a + t * b
    else:
        theta = torch.arccos(dot)
        out = (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
    return out.reshape(v0.shape).to(v0.dtype)


def image_noise(noise: Noise, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Generator]:
    """An image's starting noise (1, *shape) and the generator its sampler draws from afterwards.

    The base seed's generator, having drawn the noise, goes on to feed stochastic samplers, the
    way diffusers' pipelines use one generator per image: a seed alone matches the pipeline exactly.
    """
    generator = seed_generator(noise.seed)
    latents = torch.randn((1, *shape), generator=generator, dtype=torch.float32)
    for seed, weight in noise.variations:
        latents = slerp(weight, latents, seed_noise(seed, shape))
    return latents, generator
