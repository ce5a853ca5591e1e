"""A chain in latent space on the command line: --save_latents keeps a picture's final latents
beside it, and `-I -1 --latents -1` continues from them; each stored command remakes its picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from invoke.__main__ import cli


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def invoke(model: Path, *args: str):
    result = CliRunner().invoke(cli, ["--model", str(model), "--outdir", "out", *args])
    return result


def dream(path: Path) -> str:
    with Image.open(path) as image:
        image.load()
        return image.text["Dream"]


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_latent_chain_continues_from_latents_and_remakes(
    workdir: Path, tiny_model_dir, which: str
) -> None:
    from invoke.config.settings import EMBEDDED_MODEL_DIR

    model = tiny_model_dir if which == "tiny" else EMBEDDED_MODEL_DIR  # acceptance 2 names it
    lines = workdir / "lines.txt"
    lines.write_text(
        "a red circle -S 42 -s 4 -A ddim --save_latents\n"
        "a red circle -S 42 -s 5 -A ddim -I -1 --latents -1 -f 0.6\n"
    )
    result = invoke(model, "--from_file", str(lines))
    assert result.exit_code == 0, result.stderr
    out = workdir / "out"
    first, second = sorted(out.glob("00000*.png"))
    assert (out / f"{first.stem}.latents.safetensors").exists()
    command = dream(second)
    assert f"--latents {out / first.stem}.latents.safetensors" in command or (
        f"{first.stem}.latents.safetensors" in command
    )
    # The same line from the PNG instead of its latents makes another picture.
    plain = command.split(" --latents ")[0]
    assert " -f 0.6" in plain
    assert invoke(model, plain).exit_code == 0
    # The stored command remakes the second picture byte for byte.
    assert invoke(model, command).exit_code == 0
    made = sorted(out.glob("00000*.png"))
    assert len(made) == 4
    assert made[3].read_bytes() == second.read_bytes()
    assert not np.array_equal(np.asarray(Image.open(made[2])), np.asarray(Image.open(second)))


def test_latents_from_a_picture_saved_without_them_is_one_line(workdir: Path, tiny_model_dir):
    lines = workdir / "lines.txt"
    lines.write_text("a red circle -S 1 -s 2\na red circle -s 2 -I -1 --latents -1 -f 0.5\n")
    result = invoke(tiny_model_dir, "--from_file", str(lines))
    assert "--latents: -1 means 000001.1.latents.safetensors, which was not saved" in result.stderr
