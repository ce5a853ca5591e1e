"""Image prompts (--ip_adapter NAME --ip_image FILE [--ip_weight W]) through the `invoke`
command: found in the ip_adapters/ folder, drawn, recorded, remade, and refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invoke.config.user_dir import user_config_dir
from tests.test_cli import each_chunk_alone_reads_back, invoke, png_text, seed_7_batch

LINE = "a red circle --ip_adapter ip-adapter_tiny --ip_image disc.png --ip_weight 0.7"


@pytest.fixture
def adapters(isolated: Path, tiny_model_dir: Path, tiny_ip_adapter_file: Path) -> Path:
    """The tiny adapter in the user's ip_adapters/ folder as h94/IP-Adapter's models/ folder is
    laid out (the file, image_encoder/ beside it), and the image prompt disc.png."""
    folder = user_config_dir() / "ip_adapters" / "sd15"
    (folder / "image_encoder").mkdir(parents=True)
    (folder / tiny_ip_adapter_file.name).write_bytes(tiny_ip_adapter_file.read_bytes())
    for part in (tiny_ip_adapter_file.parent / "image_encoder").iterdir():
        (folder / "image_encoder" / part.name).write_bytes(part.read_bytes())
    y, x = np.mgrid[0:40, 0:48]
    disc = np.hypot(x - 24, y - 20) < 12
    rgb = np.where(disc[..., None], [230, 210, 20], [90, 30, 120]).astype(np.uint8)
    Image.fromarray(rgb).save(isolated / "disc.png")
    return folder


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_an_image_prompt_line_is_remade_by_its_command_and_leaves_the_next_line_plain(
    adapters: Path, tiny_model_dir: Path
) -> None:
    """A batch: an image prompt, a plain line after it, the image prompt again (loaded once),
    the previous output as the image prompt; the plain line is the picture a fresh session
    draws, and the stored command remakes the image prompt's picture byte for byte."""
    args = ("--model", str(tiny_model_dir), "--outdir", "o")
    (prompted, plain_after, again, previous), err = seed_7_batch(
        args, LINE, "a red circle", LINE, "a red circle --ip_adapter ip-adapter_tiny --ip_image -1"
    )
    assert err.count(">> IP-Adapter ip-adapter_tiny loaded") == 1
    (fresh,), _ = seed_7_batch(
        ("--model", str(tiny_model_dir), "--outdir", "fresh"), "a red circle"
    )
    fresh = Path("fresh") / fresh.name
    assert np.array_equal(rgb(plain_after), rgb(fresh))
    assert np.array_equal(rgb(prompted), rgb(again))
    assert np.abs(rgb(prompted).astype(int) - rgb(fresh)).max() > 10
    chunks = png_text(prompted)
    assert chunks["Dream"] == (
        '"a red circle" -s 4 -S 7 -W 64 -H 64 -C 7.5 -A k_lms --ip_adapter ip-adapter_tiny '
        "--ip_image disc.png --ip_weight 0.7"
    )
    assert json.loads(chunks["sd-metadata"])["image"]["ip_adapter"] == {
        "model": "ip-adapter_tiny", "image": "disc.png", "weight": 0.7
    }  # fmt: skip
    assert "IP-Adapter" not in chunks["parameters"] and "ip_adapter" not in chunks["parameters"]
    each_chunk_alone_reads_back(prompted, Path.cwd())
    # -1: the previous output, named in the command as the file it was.
    assert f"--ip_image {Path('o') / '000003.7.png'}" in png_text(previous)["Dream"]
    code, _, err = invoke(*args, chunks["Dream"])
    assert code == 0, err
    assert (Path("o") / "000005.7.png").read_bytes() == prompted.read_bytes()


def test_the_weight_changes_the_picture_and_dry_run_shows_the_command(
    adapters: Path, tiny_model_dir: Path
) -> None:
    code, out, err = invoke("--dry-run", LINE + " -s 4 -S 7")
    assert code == 0, err
    assert "--ip_adapter ip-adapter_tiny --ip_image disc.png --ip_weight 0.7" in out
    args = ("--model", str(tiny_model_dir), "--outdir", "o")
    (strong, weak), _ = seed_7_batch(args, LINE, LINE.replace("0.7", "0.2"))
    assert np.abs(rgb(strong).astype(int) - rgb(weak)).max() > 10


def test_image_prompt_mistakes_are_one_line_each_and_the_batch_goes_on(
    adapters: Path, tiny_model_dir: Path
) -> None:
    said = {
        "--ip_image disc.png": "--ip_image: needs --ip_adapter NAME",
        "--ip_adapter ip-adapter_tiny": "--ip_adapter: needs --ip_image FILE",
        "--ip_weight 0.5": "--ip_weight: only means something with --ip_adapter",
        "--ip_adapter ip-adapter_tin --ip_image disc.png": (
            "--ip_adapter: ip-adapter_tin: not found in "
            f"{user_config_dir() / 'ip_adapters'}; did you mean ip-adapter_tiny? there: "
            "ip-adapter_tiny"
        ),
        "--ip_adapter ip-adapter_tiny --ip_image nowhere.png": "nowhere.png: no such image",
        "--ip_adapter ip-adapter_tiny --ip_image disc.png --ip_weight 3": (
            "--ip_weight: 3 is not in [0, 2]"
        ),
        "--ip_adapter ip-adapter_tiny --ip_image disc.png --refiner x": (
            "--ip_adapter: acts on one model's UNet, and --refiner hands the picture to another"
        ),
    }
    lines = "".join(f"a cat {switches} -s 3 -S 1\n" for switches in said)
    lines += "a cat --ip_adapter ip-adapter_tiny --ip_image disc.png -s 3 -S 1\n"
    for launch in (("--dry-run",), ("--model", str(tiny_model_dir))):
        code, out, err = invoke(*launch, stdin=lines)
        assert code == 1
        for number, message in enumerate(said.values(), start=1):
            (line,) = [x for x in err.splitlines() if f"line {number}" in x]
            assert message in line, (line, message)
        assert "ip-adapter_tiny --ip_image disc.png" in out  # the last line ran


def test_image_encoder_weights_are_no_adapter_and_a_missing_encoder_is_named(
    adapters: Path, tiny_model_dir: Path
) -> None:
    """!ip_adapters lists the adapter, not its image_encoder's model.safetensors; an adapter
    file with no image_encoder beside it is refused before anything loads."""
    code, out, err = invoke("--dry-run", stdin="!ip_adapters\n")
    assert code == 0, err
    assert "  ip-adapter_tiny" in out and "  model" not in out
    alone = Path("alone")
    alone.mkdir()
    (alone / "tiny.safetensors").write_bytes(
        (adapters / "ip-adapter_tiny.safetensors").read_bytes()
    )
    code, _, err = invoke(
        "--dry-run", "a cat --ip_adapter alone/tiny.safetensors --ip_image disc.png"
    )
    assert code == 1
    assert "--ip_adapter: alone/tiny.safetensors has no image_encoder folder beside it" in err


def test_ip_adapter_dir_is_where_names_are_found(adapters: Path, isolated: Path) -> None:
    """--ip_adapter_dir DIR replaces the default folder, as every library's launch option does."""
    moved = isolated / "elsewhere"
    adapters.parent.rename(moved)
    code, out, err = invoke("--dry-run", LINE + " -s 4 -S 7")
    assert code == 1 and "ip_adapters does not exist" in err
    code, out, err = invoke("--ip_adapter_dir", str(moved), "--dry-run", LINE + " -s 4 -S 7")
    assert code == 0, err
    assert "--ip_adapter ip-adapter_tiny" in out
