"""Seeded noise and variations: the same inputs always give the same noise; slerp is slerp."""

from __future__ import annotations

import math

import torch

from invoke.backend.job import Noise
from invoke.backend.noise import image_noise, seed_noise, slerp

SHAPE = (4, 8, 8)


def _angle(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return math.acos(float(torch.dot(a, b) / (a.norm() * b.norm())))


def test_seed_noise_is_the_seeds_own_cpu_draw() -> None:
    expected = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(3))
    assert torch.equal(seed_noise(3, SHAPE), expected)
    assert not torch.equal(seed_noise(3, SHAPE), seed_noise(4, SHAPE))


def test_slerp_ends_and_middle() -> None:
    v0, v1 = seed_noise(1, SHAPE), seed_noise(2, SHAPE)
    assert torch.allclose(slerp(0.0, v0, v1), v0, atol=1e-6)
    assert torch.allclose(slerp(1.0, v0, v1), v1, atol=1e-6)
    u0, u1 = v0 / v0.norm(), v1 / v1.norm()
    theta = _angle(u0, u1)
    for t in (0.1, 0.5, 0.8):
        mid = slerp(t, u0, u1)
        # Between unit vectors: along the great circle, the angle split t : 1-t, still unit length
        # (a lerp would shorten it, which is what makes lerped noise too weak).
        assert math.isclose(_angle(u0, mid), t * theta, rel_tol=1e-4)
        assert math.isclose(_angle(mid, u1), (1 - t) * theta, rel_tol=1e-4)
        assert math.isclose(float(mid.norm()), 1.0, rel_tol=1e-5)


def test_slerp_of_nearly_parallel_noise_is_linear() -> None:
    v0 = seed_noise(1, SHAPE)
    v1 = v0 * 2.0  # parallel: sin(theta) = 0 would divide by zero
    out = slerp(0.25, v0, v1)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, 0.75 * v0 + 0.25 * v1, atol=1e-6)


def test_slerp_of_anti_parallel_noise_is_finite_and_linear() -> None:
    v0 = seed_noise(1, SHAPE)
    v1 = -v0  # anti-parallel: theta = pi, sin(theta) = 0 as well
    out = slerp(0.25, v0, v1)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, 0.75 * v0 + 0.25 * v1, atol=1e-6)


def test_variation_chain_applies_each_link_in_turn() -> None:
    noise, _ = image_noise(Noise(5, ((6, 0.2), (7, 0.4))), SHAPE)
    step1 = slerp(0.2, seed_noise(5, SHAPE), seed_noise(6, SHAPE))
    assert torch.allclose(noise, slerp(0.4, step1, seed_noise(7, SHAPE)), atol=1e-6)
    again, _ = image_noise(Noise(5, ((6, 0.2), (7, 0.4))), SHAPE)
    assert torch.equal(noise, again)


def test_sampler_generator_continues_from_the_base_seed() -> None:
    """Like a diffusers pipeline given this seed's generator: noise first, sampler draws next."""
    _, generator = image_noise(Noise(5, ((6, 0.2),)), SHAPE)
    reference = torch.Generator().manual_seed(5)
    torch.randn((1, *SHAPE), generator=reference)
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=reference))
