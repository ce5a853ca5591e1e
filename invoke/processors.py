"""Control image processors: turn a picture into what a ControlNet reads (numpy and PIL only).

`invert` turns a sketch drawn dark on light (pencil on paper) into the light-on-dark lines that
scribble and lineart ControlNets were trained on.

`canny` is the edge map canny ControlNets were trained on (white edges on black), computed as
OpenCV's cv2.Canny computes it with AUTOMATIC1111's default thresholds (100, 200): Sobel
gradients of the grey picture (after a light blur), thinned to one pixel by non-maximum
suppression along the gradient, then kept where strong or connected to strong.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from invoke.request import CONTROL_PROCESSORS

CANNY_LOW, CANNY_HIGH = 100.0, 200.0


def process(image: Image.Image, processor: str) -> Image.Image:
    """`image` (RGB) turned into the control image `processor` names, the same size."""
    if processor == "canny":
        return canny(image)
    if processor == "invert":
        return ImageOps.invert(image.convert("RGB"))
    raise ValueError(f"{processor!r} is not one of {CONTROL_PROCESSORS}")


def canny(image: Image.Image, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> Image.Image:
    """White one-pixel edges on black (RGB), where the grey picture's gradient magnitude (L1,
    of 3x3 Sobel filters, as cv2.Canny's default) is a local maximum across the edge and above
    `high`, or above `low` and connected to such a pixel."""
    grey = image.convert("L").filter(ImageFilter.GaussianBlur(0.8))
    pixels = np.pad(np.asarray(grey, dtype=np.float32), 1, mode="edge")

    def at(dy: int, dx: int) -> np.ndarray:
        h, w = pixels.shape
        return pixels[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    magnitude = np.abs(gx) + np.abs(gy)
    thin = magnitude * _local_maximum(magnitude, gx, gy)
    strong = thin >= high
    weak = thin >= low
    while True:  # hysteresis: grow the strong edges through touching weak ones
        grown = weak & _touches(strong)
        if (grown == strong).all():
            break
        strong = grown
    edges = np.where(strong, 255, 0).astype(np.uint8)
    return Image.fromarray(edges, "L").convert("RGB")


def _local_maximum(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Whether each pixel's magnitude is at least both neighbours' along its gradient,
    the direction rounded to 0, 45, 90 or 135 degrees."""
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape

    def neighbour(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]

    angle = (np.degrees(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = ((angle + 22.5) // 45).astype(int) % 4  # 0: horizontal gradient, 2: vertical
    keep = np.zeros(magnitude.shape, dtype=bool)
    for index, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        across = (magnitude >= neighbour(dy, dx)) & (magnitude > neighbour(-dy, -dx))
        keep |= (sector == index) & across
    return keep


def _touches(mask: np.ndarray) -> np.ndarray:
    """`mask` grown by one pixel in all eight directions."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
    return out
