"""Intermediates on the default model show the colours of the picture it draws.

No linear latent->RGB map shows its tiny VAE's colours (scripts/fit_preview_colors.py measures
it), so its training.json says "preview": "decode" and its previews are decodes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from invoke.backend.model import SD1_LATENT_RGB
from invoke.config.settings import EMBEDDED_MODEL_DIR
from invoke.line.prompt_syntax import parse_prompt
from tests.fixtures import world

torch = pytest.importorskip("torch")

# The audit's picture: its last preview was an orange star on grey.
CAPTION = "a yellow star on a purple background"


@pytest.fixture(scope="module")
def drawn():
    """The default model, the picture it draws of CAPTION, and the last step that
    `--save_intermediates 10` keeps of it (its latents and its preview)."""
    from invoke.backend.job import Job, Noise
    from invoke.backend.loading import load_model
    from invoke.backend.run import draw

    torch.set_num_threads(1)  # a 64 px model: more threads only spin (tests/conftest.py)
    model = load_model(EMBEDDED_MODEL_DIR, device="cpu")
    job = Job(parse_prompt(CAPTION), 20, 7.5, model.default_sampler, 64, 64, (Noise(11),),
              intermediate_every=10)  # fmt: skip
    steps = []
    image = draw(model, job, steps.append)[0]
    return model, image, steps[-1]


def levels(a, b) -> float:
    """Mean absolute difference of two pictures in 0-255 levels, over 4x4 cells (a latent's)."""
    a, b = (np.asarray(p.convert("RGB").reduce(4), dtype=np.float32) for p in (a, b))
    return float(np.abs(a - b).mean())


def test_the_last_preview_shows_the_picture_drawn(drawn) -> None:
    _, image, last = drawn
    assert world.check(image) == world.parse_caption(CAPTION)
    assert world.check(last.pictures[0]) == world.check(image)
    assert levels(last.pictures[0], image) < 1.0


def test_a_linear_preview_would_show_other_colours(drawn) -> None:
    # What the previews were: the folder's own linear fit (still in training.json), or SD 1.x's.
    model, image, last = drawn
    linear = replace(model, preview_decodes=False)
    sd1 = replace(linear, latent_rgb_factors=SD1_LATENT_RGB, latent_rgb_bias=(0.0, 0.0, 0.0))
    latents = torch.from_numpy(last.latents)
    ours, fitted = model.preview(latents)[0], linear.preview(latents)[0]
    assert levels(ours, image) + 20 < levels(fitted, image) < levels(sd1.preview(latents)[0], image)
