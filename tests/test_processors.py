"""Control image processors (invoke/processors.py): what a ControlNet is given to read."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from invoke.processors import canny, process
from tests.hypothesis_budget import examples


def test_canny_outlines_a_shape_with_one_closed_thin_line() -> None:
    picture = Image.new("RGB", (48, 48), (20, 40, 160))
    ImageDraw.Draw(picture).ellipse([8, 10, 39, 37], fill=(230, 200, 30))
    edges = np.asarray(canny(picture))
    assert edges.shape == (48, 48, 3) and set(np.unique(edges)) == {0, 255}
    on = edges[..., 0] == 255
    # On the boundary (within a pixel of it), nowhere else: not inside, not in the background.
    y, x = np.mgrid[0:48, 0:48]
    radius = np.hypot((x - 23.5) / 15.5, (y - 23.5) / 13.5)
    assert on[np.abs(radius - 1) > 0.15].sum() == 0
    # Closed: every direction from the centre crosses it; thin: about one pixel per crossing.
    angles = np.arctan2(y - 23.5, x - 23.5)[on]
    assert np.histogram(angles, bins=24, range=(-np.pi, np.pi))[0].min() >= 1
    assert on.sum() < 2 * np.pi * 15 * 1.6


def test_canny_finds_no_edges_in_a_smooth_ramp_or_a_flat_picture() -> None:
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (64, 1)).astype(np.uint8)
    for picture in (Image.fromarray(ramp).convert("RGB"), Image.new("RGB", (64, 64), "gray")):
        assert not np.asarray(canny(picture)).any()


def test_invert_turns_a_pencil_sketch_into_light_lines_on_dark() -> None:
    sketch = Image.new("RGB", (32, 32), (250, 248, 240))
    ImageDraw.Draw(sketch).line([(4, 4), (28, 28)], fill=(20, 20, 20), width=2)
    lines = np.asarray(process(sketch, "invert"))
    assert lines[0, 0].tolist() == [5, 7, 15]  # the paper goes dark
    assert lines[16, 16].tolist() == [235, 235, 235]  # the pencil line goes light


@settings(max_examples=examples(60), deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
)
def test_canny_takes_any_picture_and_gives_a_black_and_white_one_of_its_size(
    width: int, height: int, seed: int
) -> None:
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    edges = np.asarray(canny(Image.fromarray(noise)))
    assert edges.shape == (height, width, 3)
    assert set(np.unique(edges)) <= {0, 255}


def _cv2_canny(picture: Image.Image) -> np.ndarray:
    """OpenCV's own edge map, as ControlNet's annotator and AUTOMATIC1111's extension make it:
    cv2.Canny on the RGB picture at thresholds 100 and 200."""
    import cv2

    return cv2.Canny(np.asarray(picture.convert("RGB")), 100, 200)


@settings(max_examples=examples(150), deadline=None)
@given(
    st.integers(1, 48),
    st.integers(1, 48),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["noise", "two-level", "shapes", "waves"]),
)
def test_canny_is_opencvs_pixel_for_pixel(width: int, height: int, seed: int, kind: str) -> None:
    """Noise, hard black-and-white edges (ties between channels and neighbours), filled shapes
    on a background, and noisy waves (weak edges joined to strong ones)."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        pixels = rng.integers(0, 256, (height, width, 3))
    elif kind == "two-level":
        pixels = rng.integers(0, 2, (height, width, 3)) * 255
    elif kind == "waves":
        x = np.arange(width)[None, :, None] / rng.uniform(1, 8)
        pixels = np.sin(x + np.arange(3)) * 100 + 128 + rng.normal(0, 20, (height, width, 3))
    else:
        picture = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(picture)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            size = int(rng.integers(2, 30))
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.ellipse([x0, y0, x0 + size, y0 + size], fill=fill)
        pixels = np.asarray(picture)
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    assert np.array_equal(np.asarray(canny(picture))[..., 0], _cv2_canny(picture))


def test_canny_is_opencvs_on_the_projects_pictures() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted((root / "test-pictures").glob("*.png")) + sorted((root / "docs").glob("*.png"))
    assert files
    for path in files:
        with Image.open(path) as picture:
            picture.load()
            assert np.array_equal(np.asarray(canny(picture))[..., 0], _cv2_canny(picture)), path
