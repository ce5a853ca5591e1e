"""Untrusted model files: pickle only with --allow-pickle and then weights only; the model hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from invoke.backend import hashing
from invoke.backend.loading import load_model
from invoke.errors import ModelError
from tests.fixtures.tiny_families import write_ldm_checkpoint

NEEDS_FLAG = "pickle files need --allow-pickle"


def copy_checkpoint(ckpt: Path, to: Path) -> Path:
    """The checkpoint under another name, with its config folder (<stem>.config/) beside it."""
    shutil.copytree(ckpt.with_name(ckpt.stem + ".config"), to.with_name(to.stem + ".config"))
    return Path(shutil.copy(ckpt, to))


@pytest.fixture(scope="module")
def ckpt(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ldm_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("pickle") / "tiny.ckpt")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_files_are_refused_without_the_flag(ckpt: Path, tmp_path: Path, suffix: str) -> None:
    file = copy_checkpoint(ckpt, tmp_path / f"model{suffix}")
    with pytest.raises(ModelError, match=NEEDS_FLAG) as err:
        load_model(file, device="cpu")
    assert "\n" not in str(err.value) and f"model{suffix}" in str(err.value)


def test_pickle_file_loads_with_the_flag(ckpt: Path, tiny_model_dir: Path) -> None:
    model = load_model(ckpt, device="cpu", allow_pickle=True)
    assert model.family == "sd-1"
    folder = load_model(tiny_model_dir, device="cpu")
    weights = folder.unet.state_dict()
    assert all(torch.equal(model.unet.state_dict()[k], v) for k, v in weights.items())


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint does instead of weights."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.target, "pwned"))


def test_pickle_code_never_runs_even_with_the_flag(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "hook": _Payload(target)}, evil)
    with pytest.raises(ModelError, match=r"evil.ckpt: cannot read the pickle file") as err:
        load_model(evil, device="cpu", allow_pickle=True)
    assert not target.exists()
    assert "\n" not in str(err.value)


def test_diffusers_folder_with_only_pickle_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    copy = shutil.copytree(tiny_model_dir, tmp_path / "bin")
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), weights.with_suffix(".bin"))
    weights.unlink()
    with pytest.raises(ModelError, match=r"unet/ has only pickle weights \(.bin\).*" + NEEDS_FLAG):
        load_model(copy, device="cpu")
    assert load_model(copy, device="cpu", allow_pickle=True).unet.config.in_channels == 4


# -- the model hash -------------------------------------------------------------------------------


def test_hash_of_a_file_is_its_sha256_cached_beside_it(ckpt: Path, tmp_path: Path) -> None:
    file = copy_checkpoint(ckpt, tmp_path / "m.ckpt")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert load_model(file, device="cpu", allow_pickle=True).model_hash == digest
    sidecar = tmp_path / "m.ckpt.sha256"
    assert json.loads(sidecar.read_text())["sha256"] == digest
    # The cache is used while size and mtime hold: a planted digest comes back...
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "sha256": "f" * 64}))
    assert hashing.model_hash(file) == "f" * 64
    # ...and a touched file is hashed again.
    os.utime(file, ns=(record["mtime_ns"] + 10**9, record["mtime_ns"] + 10**9))
    assert hashing.model_hash(file) == digest


def test_hash_of_a_folder_is_its_unet_weights(tiny_model_dir: Path) -> None:
    unet = tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    expected = hashlib.sha256(unet.read_bytes()).hexdigest()
    assert load_model(tiny_model_dir, device="cpu").model_hash == expected


def test_read_only_model_folder_caches_in_the_user_cache(
    tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = Path(shutil.copy(ckpt, tmp_path / "ro.ckpt"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_mkstemp = tempfile.mkstemp

    def read_only(*args: Any, **kwargs: Any) -> tuple[int, str]:
        # the folder refuses new files (as root, chmod would not stop a write)
        if Path(kwargs.get("dir") or args[2]) == tmp_path:
            raise PermissionError(13, "Read-only file system", str(tmp_path))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    digest = hashing.model_hash(file)
    assert digest == hashlib.sha256(file.read_bytes()).hexdigest()
    assert not (tmp_path / "ro.ckpt.sha256").exists()
    assert len(list((tmp_path / "cache" / "invoke" / "hashes").iterdir())) == 1
