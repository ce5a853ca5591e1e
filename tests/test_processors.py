"""Control image processors (invoke/processors.py): what a ControlNet is given to read."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from invoke.processors import canny, process


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


@settings(max_examples=60, deadline=None)
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
