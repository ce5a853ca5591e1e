"""--seamless: convolutions that wrap around the picture's edges, so the picture tiles.

A convolution near an edge normally sees zeros past it (zero padding), and the model learns to
draw a border there. With circular padding the pixels past the right edge are those of the left
edge (and bottom: top), so every layer treats the picture as a torus and its two sides continue
each other. InvokeAI did this to every Conv2d of the model, per axis since 2.3
(`--seamless_axes`): only x wraps left-right, only y top-bottom. Here the UNet's convolutions wrap.

The VAE is treated differently: its convolutions keep their zero padding, and `wrapped_decoder`
instead extends the latents circularly by a margin before decoding and crops the margin off the
pixels. A decoder only ever saw zero-padded borders in training; some (the shipped 64x64 model's)
draw wrong colours all over once no border is left, while a margin shows each edge the real
continuation across the seam and keeps the decoder in its trained regime. The VAE's encoder (the
init picture of img2img) is left alone: the wrapping UNet redraws its edges anyway.

It is a setting of one job, not of the model: `wrapped_convolutions` patches the convolutions for
the length of a `with` block and puts them back on the way out, exception or Ctrl-C included, so
the next plain command gets the plain model. Each patch is an instance attribute shadowing a
method (`Conv2d._conv_forward`, the VAE's `decode`); removing it leaves the module as loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from invoke.errors import InvokeError

AXES = ("x", "y")
# Latent cells of real neighbourhood each edge sees when decoding: SD's VAE decoder reaches about
# this far in practice (512x512 decodes at 80x80 latents instead of 64x64, 1.6x the work).
DECODE_MARGIN = 8


def _wrapping_forward(conv: nn.Conv2d, axes: tuple[str, ...]) -> Any:
    """A `_conv_forward` for `conv` that pads the wrapped axes circularly, the others with zeros.

    The circular part is one F.pad; the zero part stays in the convolution's own `padding`
    argument (free, no copy) where it is symmetric, as it is for every SD convolution.
    """
    left, right, top, bottom = conv._reversed_padding_repeated_twice
    wrap_x, wrap_y = "x" in axes, "y" in axes
    # F.pad's order: (left, right, top, bottom); each side goes to one of the two paddings.
    circular = (left * wrap_x, right * wrap_x, top * wrap_y, bottom * wrap_y)
    zeros = (left * (not wrap_x), right * (not wrap_x), top * (not wrap_y), bottom * (not wrap_y))
    symmetric = zeros[0] == zeros[1] and zeros[2] == zeros[3]
    conv_padding = (zeros[2], zeros[0]) if symmetric else (0, 0)

    def forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> Any:
        padded = F.pad(input, circular, mode="circular")
        if not symmetric:
            padded = F.pad(padded, zeros)
        return F.conv2d(padded, weight, bias, conv.stride, conv_padding, conv.dilation, conv.groups)

    return forward


def _padded_convolutions(modules: Iterable[Any]) -> list[nn.Conv2d]:
    """The Conv2d layers whose padding reaches past the edge (1x1 convolutions have none).

    A layer with another padding mode than zeros (none in SD models) is left as its maker meant.
    """
    found: dict[int, nn.Conv2d] = {}
    for module in modules:
        if module is None:
            continue
        for layer in module.modules():
            if (
                isinstance(layer, nn.Conv2d)
                and layer.padding_mode == "zeros"
                and any(layer._reversed_padding_repeated_twice)
            ):
                found[id(layer)] = layer  # a part shared by two models is patched once
    return list(found.values())


@contextmanager
def wrapped_convolutions(modules: Iterable[Any], axes: tuple[str, ...]) -> Iterator[None]:
    """Within the block, `modules`' convolutions wrap around along `axes` ("x", "y").

    No axes: nothing is changed (the plain path costs nothing).
    """
    unknown = [axis for axis in axes if axis not in AXES]
    if unknown:
        raise InvokeError(f"--seamless_axes: {','.join(unknown)} is not an axis; use x, y or x,y")
    if not axes:
        yield
        return
    layers = _padded_convolutions(modules)
    patched: list[nn.Conv2d] = []
    try:
        for layer in layers:
            if "_conv_forward" in vars(layer):
                # Someone else's patch (or ours, nested): leave it; we would not restore it right.
                continue
            layer._conv_forward = _wrapping_forward(layer, axes)  # type: ignore[method-assign]
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            # The class's method shows through again: the layer is as it was loaded.
            del layer._conv_forward


@contextmanager
def wrapped_decoder(vae: Any, axes: tuple[str, ...]) -> Iterator[None]:
    """Within the block, `vae.decode` draws pictures whose wrapped edges continue each other.

    The latents are extended circularly by DECODE_MARGIN cells along `axes` (at most their own
    size, all torch's circular padding allows), decoded, and the margin is cropped off the
    pixels. Works for any decode whose first output is the picture (AutoencoderKL, VQModel).
    """
    if not axes or vae is None or "decode" in vars(vae):
        yield
        return
    original = vae.decode

    def decode(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        height, width = latents.shape[-2:]
        mx = min(DECODE_MARGIN, width) if "x" in axes else 0
        my = min(DECODE_MARGIN, height) if "y" in axes else 0
        out = original(F.pad(latents, (mx, mx, my, my), mode="circular"), *args, **kwargs)
        picture = out[0] if isinstance(out, tuple) else out.sample
        cell = picture.shape[-1] // (width + 2 * mx)
        top, left = my * cell, mx * cell
        cropped = picture[..., top : top + height * cell, left : left + width * cell]
        if isinstance(out, tuple):
            return (cropped, *out[1:])
        out.sample = cropped
        return out

    vae.decode = decode
    try:
        yield
    finally:
        del vae.decode
