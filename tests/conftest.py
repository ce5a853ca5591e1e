"""Shared fixtures. Tests never touch the network: the hub is switched off before anything loads."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD-architecture diffusers folder, built once per test session."""
    from invoke.backend.testmodel import build_test_model

    return build_test_model(tmp_path_factory.mktemp("models") / "tiny")
