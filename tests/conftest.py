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

    from invoke.backend.testmodel import build_test_model

    torch.set_num_threads(1)

    return build_test_model(tmp_path_factory.mktemp("models") / "tiny")
