"""Loading: what a user's model folder gives, and one-line errors for folders that are wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from invoke.backend.loading import load_model
from invoke.errors import ModelError
from tests.fixtures.tiny_models import build_test_model


def test_loads_the_test_model_with_its_native_size(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu")
    assert model.native_size == 64
    assert model.size_multiple == 8
    assert model.device == torch.device("cpu")
    assert model.dtype == torch.float32  # auto on the CPU
    assert model.name == tiny_model_dir.name
    assert load_model(tiny_model_dir, name="tiny-test").name == "tiny-test"


def test_bfloat16_on_request(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir, device="cpu", precision="bfloat16")
    assert model.dtype == torch.bfloat16
    assert next(model.unet.parameters()).dtype == torch.bfloat16


def test_test_model_is_deterministic_per_seed(tmp_path: Path) -> None:
    weights = "unet/diffusion_pytorch_model.safetensors"
    a = build_test_model(tmp_path / "a", seed=0)
    b = build_test_model(tmp_path / "b", seed=0)
    c = build_test_model(tmp_path / "c", seed=1)
    assert (a / weights).read_bytes() == (b / weights).read_bytes()
    assert (a / weights).read_bytes() != (c / weights).read_bytes()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nowhere: no such folder"):
        load_model(tmp_path / "nowhere")


def test_folder_that_is_not_a_diffusers_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match=r"not a diffusers model folder \(no model_index.json\)"):
        load_model(tmp_path)


def test_other_pipeline_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "flux")
    index = json.loads((copy / "model_index.json").read_text())
    (copy / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError, match="FluxPipeline is not supported"):
        load_model(copy)


def test_missing_component(tmp_path: Path, tiny_model_dir: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "novae")
    shutil.rmtree(copy / "vae")
    with pytest.raises(ModelError, match=r"missing vae/"):
        load_model(copy)


def test_corrupt_safetensors_names_the_part(tmp_path: Path, tiny_model_dir: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "corrupt")
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(
        ModelError, match=r"unet/diffusion_pytorch_model.safetensors is damaged \(.*\); download"
    ) as err:
        load_model(copy)
    assert "\n" not in str(err.value)


def test_bad_device_and_precision(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="--precision: float8"):
        load_model(tiny_model_dir, precision="float8")
    with pytest.raises(ModelError, match="--device: tpu"):
        load_model(tiny_model_dir, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="--device: cuda is not available"):
            load_model(tiny_model_dir, device="cuda")


def test_preview_uses_the_folders_own_latent_rgb_fit(tmp_path: Path, tiny_model_dir: Path) -> None:
    latents = torch.zeros((1, 4, 8, 8))
    latents[0, 0] = 0.5  # channel 0 only
    sd1 = load_model(tiny_model_dir).preview(latents)[0]
    # SD 1.x's table: channel 0 -> (0.3444, 0.1385, 0.0670) * 0.5, mapped from [-1, 1] to 0..255.
    assert sd1.size == (64, 64)
    assert sd1.getpixel((32, 32)) == tuple(
        round((0.5 * f + 1) / 2 * 255) for f in (0.3444, 0.1385, 0.0670)
    )

    copy = shutil.copytree(tiny_model_dir, tmp_path / "fitted")
    factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    meta = {"latent_rgb_factors": factors, "latent_rgb_bias": [0.0, -1.0, 0.0]}
    (copy / "training.json").write_text(json.dumps(meta))
    own = load_model(copy).preview(latents)[0]
    assert own.getpixel((32, 32)) == (191, 0, 128)
