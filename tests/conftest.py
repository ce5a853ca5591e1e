"""Shared fixtures. Tests never touch the network: the hub is switched off before anything loads."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD-architecture diffusers folder, built once per test session.

    Also runs torch on one thread: on the tiny model's tensors extra threads only spin, and on a
    shared 2-core machine two threads made a 20-step run 80x slower (17 s against 0.2 s).
    """
    import torch

    from tests.fixtures.tiny_models import build_test_model

    torch.set_num_threads(1)

    return build_test_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp cwd with the user's config and cache dirs inside it: a run reads and writes nothing
    of the person's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_upscalers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upscalers folder with a tiny random 2x latent upscaler and 4x upscaler, named as the
    hub repos -U 2 and -U 4 use (sd-x2-latent-upscaler, stable-diffusion-x4-upscaler)."""
    import torch

    from tests.fixtures.tiny_models import build_test_upscaler

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("upscalers")
    build_test_upscaler(folder / "sd-x2-latent-upscaler", 2)
    build_test_upscaler(folder / "stable-diffusion-x4-upscaler", 4)
    return folder


@pytest.fixture
def quick_x4(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4x upscaler at 3 steps instead of 75: the tiny one takes seconds a picture at 75."""
    from invoke.backend import upscale

    settings = {**upscale.SETTINGS[upscale.PIXEL_X4], "num_inference_steps": 3}
    monkeypatch.setitem(upscale.SETTINGS, upscale.PIXEL_X4, settings)
