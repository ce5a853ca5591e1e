"""The procedural, captioned picture world the default model is trained on.

One flat-coloured shape on a flat background, e.g. ``a red circle on a blue background``.
Everything is drawn here from a seed (no downloaded data), and ``check`` reads the three labels
back from pixels, so the shipped model can be scored on what it draws.

Pure PIL + numpy: importing this module must not import torch (the shell imports it for prompt
completion and the eval script uses it on decoded images).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Chosen far apart in RGB (every pair ≥ ~95 apart) so that a small VAE's colour drift does
# not move a pixel to a neighbour's name, and so a nearest-colour checker is unambiguous.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 130, 20),
    "yellow": (250, 230, 40),
    "green": (40, 165, 60),
    "cyan": (40, 210, 230),
    "blue": (35, 65, 215),
    "purple": (135, 45, 190),
    "pink": (250, 145, 205),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}

# Shapes whose bounding-box-normalised silhouettes differ a lot (checked by `check`'s template
# matcher): round, full box, point-up triangle, tall rhombus, five-point star, plus sign.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross")

SIZE = 64  # the native size the default model is trained at
_SUPERSAMPLE = 4  # draw 4x larger and box-filter down: anti-aliased edges like a photo's


@dataclass(frozen=True)
class Labels:
    """What one picture shows."""

    fg_color: str
    bg_color: str
    shape: str


def caption(labels: Labels) -> str:
    """The training caption for a picture: ``a red circle on a blue background``."""
    return f"a {labels.fg_color} {labels.shape} on a {labels.bg_color} background"


_CAPTION_RE = re.compile(
    r"\ban?\s+(?P<fg>[a-z]+)\s+(?P<shape>[a-z]+)\s+on\s+an?\s+(?P<bg>[a-z]+)\s+background\b"
)


def parse_caption(text: str) -> Labels:
    """Labels named by a caption in this world's grammar; ValueError if it names none."""
    m = _CAPTION_RE.search(text.lower())
    if (
        m is None
        or m["fg"] not in COLORS
        or m["bg"] not in COLORS
        or m["shape"] not in SHAPES
        or m["fg"] == m["bg"]
    ):
        raise ValueError(
            f"caption {text!r} is not 'a <colour> <shape> on a <colour> background' with "
            f"colours from {sorted(COLORS)} and shapes from {list(SHAPES)}"
        )
    return Labels(m["fg"], m["bg"], m["shape"])


def vocabulary() -> list[str]:
    """Every word a caption can use (for the model's tokenizer)."""
    words = {"a", "an", "on", "background", *COLORS, *SHAPES}
    return sorted(words)


def _shape_points(shape: str) -> list[tuple[float, float]]:
    """Polygon outline in unit coordinates (centre 0, extent about 1; y grows downwards)."""
    if shape == "square":
        s = 0.82  # a little smaller than the circle so both cover a similar area
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "triangle":
        return [(0.0, -1.0), (1.0, 0.8), (-1.0, 0.8)]
    if shape == "diamond":
        return [(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = 1.0 if i % 2 == 0 else 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((r * math.cos(a), r * math.sin(a) + 0.1))  # +0.1: centre the star's bbox
        return pts
    if shape == "cross":
        w = 0.34
        return [
            (-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w),
        ]  # fmt: skip
    raise ValueError(f"shape {shape!r} is not one of {list(SHAPES)}")


def render(
    labels: Labels,
    center: tuple[float, float] = (SIZE / 2, SIZE / 2),
    radius: float = 18.0,
    size: int = SIZE,
) -> Image.Image:
    """Draw one picture: `radius` and `center` in output pixels."""
    k = _SUPERSAMPLE
    big = Image.new("RGB", (size * k, size * k), COLORS[labels.bg_color])
    draw = ImageDraw.Draw(big)
    cx, cy, r = center[0] * k, center[1] * k, radius * k
    fill = COLORS[labels.fg_color]
    if labels.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx + x * r, cy + y * r) for x, y in _shape_points(labels.shape)], fill=fill)
    return big.resize((size, size), Image.Resampling.BOX)


def sample_labels(rng: np.random.Generator) -> Labels:
    """Uniform over (fg colour, different bg colour, shape)."""
    names = list(COLORS)
    fg = names[rng.integers(len(names))]
    bg = names[rng.integers(len(names) - 1)]
    if bg == fg:  # draw from the other 9 uniformly
        bg = names[-1]
    return Labels(fg, bg, SHAPES[rng.integers(len(SHAPES))])


def sample(rng: np.random.Generator, size: int = SIZE) -> tuple[Image.Image, str, Labels]:
    """One random picture, its caption and its labels; deterministic for a seeded `rng`.

    Size and position vary a little (so seeds give different pictures) but the shape stays well
    inside the frame: the border then shows only background, which `check` relies on.
    """
    labels = sample_labels(rng)
    center, radius = sample_place(rng, size)
    return render(labels, center, radius, size), caption(labels), labels


def sample_place(
    rng: np.random.Generator,
    size: int = SIZE,
    radii: tuple[float, float] = (0.22, 0.34),
    gap: float = 0.09,
) -> tuple[tuple[float, float], float]:
    """A shape's centre and radius (pixels): the radius a uniform share `radii` of the picture,
    the centre anywhere that leaves a `gap` (share of the picture) between shape and edge."""
    radius = float(rng.uniform(*radii)) * size
    margin = size / 2 - radius - gap * size
    cx = size / 2 + float(rng.uniform(-margin, margin))
    cy = size / 2 + float(rng.uniform(-margin, margin))
    return (cx, cy), radius


# ---------------------------------------------------------------------------------------------
# The checker: labels from pixels.

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[n] for n in _PALETTE_NAMES], dtype=np.float32)
_GRID = 24  # silhouettes are compared on a 24x24 grid fitted to their bounding box


def _nearest_color(pixels: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each RGB row."""
    d = ((pixels[:, None, :] - _PALETTE[None, :, :]) ** 2).sum(-1)
    return d.argmin(1)


def _silhouette(mask: np.ndarray) -> np.ndarray | None:
    """The mask cropped to its robust bounding box and resampled to _GRID x _GRID (floats)."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 12:
        return None
    # Percentile bounds: a few stray pixels (noise in a generated image) must not stretch the box.
    x0, x1 = np.percentile(xs, [0.5, 99.5])
    y0, y1 = np.percentile(ys, [0.5, 99.5])
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    crop = Image.fromarray((mask * 255).astype(np.uint8)).crop(
        (int(x0), int(y0), math.ceil(x1) + 1, math.ceil(y1) + 1)
    )
    grid = crop.resize((_GRID, _GRID), Image.Resampling.BILINEAR)
    return np.asarray(grid, dtype=np.float32) / 255.0


def _templates() -> dict[str, np.ndarray]:
    out = {}
    for shape in SHAPES:
        img = render(Labels("white", "black", shape), radius=27.0)
        sil = _silhouette(np.asarray(img)[..., 0] > 128)
        assert sil is not None
        out[shape] = sil
    return out


_TEMPLATES = _templates()


def check(image: Image.Image) -> Labels:
    """Read (foreground colour, background colour, shape) back from a picture's pixels.

    Background: the nearest palette colour to the median border pixel. Foreground: the palette
    colour most interior pixels are nearest to, among those clearly not background. Shape: the
    foreground silhouette, normalised to its bounding box, matched to each shape's template.
    """
    px = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32)
    border = np.concatenate([px[:2].reshape(-1, 3), px[-2:].reshape(-1, 3),
                             px[:, :2].reshape(-1, 3), px[:, -2:].reshape(-1, 3)])  # fmt: skip
    bg_idx = int(_nearest_color(np.median(border, 0, keepdims=True))[0])
    bg_rgb = _PALETTE[bg_idx]
    flat = px.reshape(-1, 3)
    far = ((flat - bg_rgb) ** 2).sum(-1) > 60.0**2
    if far.sum() < 12:
        # Nothing drawn: report the background's nearest other colour so fg is scored as wrong
        # rather than crashing, and a shape that no caption would be matched by "circle" chance.
        return Labels(_PALETTE_NAMES[(bg_idx + 1) % len(_PALETTE_NAMES)],
                      _PALETTE_NAMES[bg_idx], "none")  # fmt: skip
    idx = _nearest_color(flat[far])
    idx = idx[idx != bg_idx] if (idx != bg_idx).any() else idx
    fg_idx = int(np.bincount(idx, minlength=len(_PALETTE)).argmax())
    fg_rgb = _PALETTE[fg_idx]
    # Silhouette: pixels nearer the foreground colour than the background colour.
    mask = (((px - fg_rgb) ** 2).sum(-1) < ((px - bg_rgb) ** 2).sum(-1)).astype(np.float32)
    sil = _silhouette(mask)
    shape = "none"
    if sil is not None:
        shape = min(SHAPES, key=lambda s: float(np.abs(sil - _TEMPLATES[s]).mean()))
    return Labels(_PALETTE_NAMES[fg_idx], _PALETTE_NAMES[bg_idx], shape)
