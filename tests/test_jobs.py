"""A Job is plain data: pickled and run by a fresh process, it draws the same pixels as here.

This is the seam a pool of workers (one per GPU or host) plugs into: the driver plans and builds
Jobs, a worker with the model loaded runs them.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invoke.backend.job import Noise
from tests.helpers import make_job, smooth_picture

WORKER = textwrap.dedent(
    """
    import pickle, sys
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    from invoke.backend.loading import load_model

    job_file, model_dir, out = map(Path, sys.argv[1:])
    job = pickle.loads(job_file.read_bytes())
    model = load_model(model_dir, device="cpu", precision="float32")
    for i, image in enumerate(model.generate(job)):
        image.save(out / f"{i}.png")
    """
)


def a_job_with_everything_that_pickles():
    """Two pictures in one batch, a variation chain, an init image with a mask (inpainting)."""
    init = smooth_picture()
    mask = Image.new("L", init.size, 0)
    mask.paste(255, (16, 16, 48, 48))
    return replace(
        make_job(steps=3),
        noises=(Noise(7, ((11, 0.25),)), Noise(8)),
        init_image=init,
        mask=mask,
        strength=0.8,
    )


@pytest.mark.e2e
def test_a_pickled_job_run_in_a_fresh_process_draws_the_same_pixels(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from invoke.backend.loading import load_model

    job = a_job_with_everything_that_pickles()
    here = load_model(tiny_model_dir, device="cpu", precision="float32").generate(job)

    job_file = tmp_path / "job.pickle"
    job_file.write_bytes(pickle.dumps(job))
    subprocess.run(
        [sys.executable, "-c", WORKER, str(job_file), str(tiny_model_dir), str(tmp_path)],
        check=True,
    )
    there = [Image.open(tmp_path / f"{i}.png") for i in range(len(job.noises))]
    assert len(here) == len(there) == 2
    for ours, theirs in zip(here, there, strict=True):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs))
    # and the two pictures differ: the comparison is not of two blank images
    assert not np.array_equal(np.asarray(here[0]), np.asarray(here[1]))


def test_a_job_survives_pickling_field_for_field() -> None:
    job = a_job_with_everything_that_pickles()
    again = pickle.loads(pickle.dumps(job))
    assert replace(again, init_image=None, mask=None) == replace(job, init_image=None, mask=None)
    assert np.array_equal(np.asarray(again.init_image), np.asarray(job.init_image))
    assert np.array_equal(np.asarray(again.mask), np.asarray(job.mask))
