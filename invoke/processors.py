"""Control image processors: turn a picture into what a ControlNet reads (numpy and PIL only).

`invert` turns a sketch drawn dark on light (pencil on paper) into the light-on-dark lines that
scribble and lineart ControlNets were trained on.

`canny` is the edge map canny ControlNets were trained on (white edges on black): what
cv2.Canny(picture, 100, 200) gives for the RGB picture, as ControlNet's own annotator, the
sd-webui-controlnet extension (AUTOMATIC1111's default thresholds) and diffusers' examples call
it. Sobel gradients of each colour channel, thinned to one pixel by non-maximum suppression
across the edge, then kept where strong or connected to strong. The tests hold it to OpenCV's
own, pixel for pixel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from invoke.line.switches import CONTROL_PROCESSORS

CANNY_LOW, CANNY_HIGH = 100.0, 200.0


def process(image: Image.Image, processor: str) -> Image.Image:
    """`image` (RGB) turned into the control image `processor` names, the same size."""
    if processor == "canny":
        return canny(image)
    if processor == "invert":
        return ImageOps.invert(image.convert("RGB"))
    raise ValueError(f"{processor!r} is not one of {CONTROL_PROCESSORS}")


def canny(image: Image.Image, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> Image.Image:
    """White one-pixel edges on black (RGB), as cv2.Canny(rgb, low, high) draws them: 3x3 Sobel
    gradients of each channel (edges replicated), at each pixel the channel whose L1 magnitude
    is largest, kept where that magnitude is a maximum across the edge and above `low`, and
    connected (8 ways) to one above `high`."""
    rgb = np.pad(np.asarray(image.convert("RGB"), dtype=np.int64), ((1, 1), (1, 1), (0, 0)), "edge")

    def at(dy: int, dx: int) -> np.ndarray:
        h, w = rgb.shape[:2]
        return rgb[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    norms = np.abs(gx) + np.abs(gy)
    channel = norms.argmax(axis=-1)[..., None]  # the first of equal ones, as OpenCV takes it
    gx, gy = (np.take_along_axis(g, channel, axis=-1)[..., 0] for g in (gx, gy))
    magnitude = np.abs(gx) + np.abs(gy)
    if low > high:
        low, high = high, low
    candidate = _local_maximum(magnitude, gx, gy) & (magnitude > np.floor(low))
    strong = candidate & (magnitude > np.floor(high))
    while True:  # hysteresis: grow the strong edges through touching candidates
        grown = candidate & _touches(strong)
        if (grown == strong).all():
            break
        strong = grown
    edges = np.where(strong, 255, 0).astype(np.uint8)
    return Image.fromarray(edges, "L").convert("RGB")


# tan(22.5 degrees) in OpenCV's 15-bit fixed point: its direction test, bit for bit.
_SHIFT = 15
_TAN22 = int(0.4142135623730950488 * (1 << _SHIFT) + 0.5)


def _local_maximum(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Whether each pixel's magnitude is a maximum across its edge, as OpenCV decides it: the
    gradient is horizontal, vertical or diagonal by a fixed-point tangent test, and the pixel
    must beat the neighbour before it (strictly) and match the one after it (strictly too on a
    diagonal). Outside the picture the magnitude is 0."""
    padded = np.pad(magnitude, 1)
    h, w = magnitude.shape

    def neighbour(dy: int, dx: int) -> np.ndarray:
        return padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]

    x, y = np.abs(gx), np.abs(gy) << _SHIFT
    tan22x = x * _TAN22
    horizontal = y < tan22x
    vertical = ~horizontal & (y > tan22x + (x << (_SHIFT + 1)))
    rising = np.bitwise_xor(gx, gy) >= 0  # same signs: the edge runs from top right to bottom left
    diagonal = np.where(
        rising,
        (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1)),
        (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1)),
    )
    across_rows = (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1))
    across_columns = (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0))
    return np.where(horizontal, across_rows, np.where(vertical, across_columns, diagonal))


def _touches(mask: np.ndarray) -> np.ndarray:
    """`mask` grown by one pixel in all eight directions."""
    padded = np.pad(mask, 1)
    h, w = mask.shape
    out = np.zeros_like(mask)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
    return out
