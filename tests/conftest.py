"""Shared fixtures. Tests never touch the network: the hub is switched off before anything loads.

Every test runs with a temporary HOME, XDG_CONFIG_HOME and XDG_CACHE_HOME, so none reads or
writes the person's own ~/.config/invoke-dream or caches. The tiny models are built once a
session (their builders are seeded: every build of one is the same) and are read-only to tests.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
# The tiny models run on one thread (_torch_on_one_thread); so does any `invoke` a test starts,
# which leaves torch's threads as they are when OMP_NUM_THREADS is set (backend/device.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.hypothesis_budget  # noqa: F401  (registers and loads the hypothesis profile)


def _point_home_at(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder / ".cache"))


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A temporary home for the session-scoped fixtures (and the libraries they import, such as
    huggingface_hub, which reads its cache folder once, on import)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_home_at(tmp_path_factory.mktemp("session-home"), monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _temp_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A home of each test's own, outside its tmp_path (so tmp_path holds only what it makes)."""
    _point_home_at(tmp_path_factory.mktemp("home"), monkeypatch)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temp cwd with the user's config and cache dirs inside it: a run reads and writes nothing
    of the person's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def _torch_on_one_thread() -> None:
    """On the tiny models' tensors extra threads only spin: on a shared 2-core machine two threads
    made a 20-step run 80x slower (17 s against 0.2 s)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SD-architecture diffusers folder. Also runs torch on one thread."""
    from tests.fixtures.tiny_models import build_test_model

    _torch_on_one_thread()
    return build_test_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_inpainting_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's inpainting variant: a 9-channel UNet in a StableDiffusionInpaintPipeline
    folder."""
    from tests.fixtures.tiny_models import build_test_model

    _torch_on_one_thread()
    return build_test_model(tmp_path_factory.mktemp("models") / "inpainting", inpainting=True)


@pytest.fixture(scope="session")
def tiny_controlnet_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ControlNet for tiny_model_dir."""
    from tests.fixtures.tiny_models import build_test_controlnet

    _torch_on_one_thread()
    return build_test_controlnet(tmp_path_factory.mktemp("nets") / "edges", tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_ip_adapter_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain IP-Adapter for tiny_model_dir: its .safetensors file, its image_encoder/
    folder beside it."""
    from tests.fixtures.tiny_models import build_test_ip_adapter

    _torch_on_one_thread()
    return build_test_ip_adapter(tmp_path_factory.mktemp("ip_adapters") / "tiny", tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL base folder."""
    from tests.fixtures.tiny_families import build_test_sdxl

    _torch_on_one_thread()
    return build_test_sdxl(tmp_path_factory.mktemp("models") / "sdxl")


@pytest.fixture(scope="session")
def tiny_refiner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SDXL refiner folder (StableDiffusionXLImg2ImgPipeline, one text encoder)."""
    from tests.fixtures.tiny_families import build_test_sdxl

    _torch_on_one_thread()
    return build_test_sdxl(tmp_path_factory.mktemp("models") / "refiner", refiner=True)


@pytest.fixture(scope="session")
def tiny_kandinsky_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Kandinsky 2.2 folder (prior + decoder)."""
    from tests.fixtures.tiny_families import build_test_kandinsky

    _torch_on_one_thread()
    return build_test_kandinsky(tmp_path_factory.mktemp("models") / "kandinsky")


@pytest.fixture(scope="session")
def tiny_upscalers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upscalers folder with a tiny random 2x latent upscaler and 4x upscaler, named as the
    hub repos -U 2 and -U 4 use (sd-x2-latent-upscaler, stable-diffusion-x4-upscaler)."""
    from tests.fixtures.tiny_models import build_test_upscaler

    _torch_on_one_thread()
    folder = tmp_path_factory.mktemp("upscalers")
    build_test_upscaler(folder / "sd-x2-latent-upscaler", 2)
    build_test_upscaler(folder / "stable-diffusion-x4-upscaler", 4)
    return folder


@pytest.fixture(scope="session")
def tiny_shared_upscalers(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upscalers folder with a tiny random 2x latent upscaler whose VAE is tiny_model_dir's
    (as sd-x2-latent-upscaler's is SD's): -U 2 hands it the model's latents."""
    from tests.fixtures.tiny_models import build_test_upscaler

    _torch_on_one_thread()
    folder = tmp_path_factory.mktemp("shared-upscalers")
    build_test_upscaler(folder / "sd-x2-latent-upscaler", 2, vae_from=tiny_model_dir)
    return folder


@pytest.fixture
def quick_x4(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 4x upscaler at 3 steps instead of 75: the tiny one takes seconds a picture at 75."""
    from invoke.backend import upscale

    settings = {**upscale.SETTINGS[upscale.PIXEL_X4], "num_inference_steps": 3}
    monkeypatch.setitem(upscale.SETTINGS, upscale.PIXEL_X4, settings)
