"""Models as a user points `invoke --model` at them: folders, single files, pickles, families."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from invoke.__main__ import cli
from tests.fixtures.tiny_families import write_ldm_checkpoint


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def made(outdir: Path) -> list[Path]:
    return sorted(outdir.glob("*.png"))


@pytest.fixture(scope="module")
def single_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ldm_checkpoint(
        tiny_model_dir, tmp_path_factory.mktemp("file") / "tiny.safetensors"
    )


@pytest.fixture(scope="module")
def pickle_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ldm_checkpoint(tiny_model_dir, tmp_path_factory.mktemp("pickle") / "tiny.ckpt")


def test_folder_and_single_file_each_draw_offline(
    isolated: Path, tiny_model_dir: Path, single_file: Path
) -> None:
    for n, model in enumerate((tiny_model_dir, single_file)):
        code, _, err = invoke("--model", str(model), "-o", f"o{n}", "a cat -s 2 -S 1")
        assert code == 0, err
        (image,) = made(isolated / f"o{n}")
        assert image.name == "000001.1.png"
    # the same weights, in two layouts, make the same picture
    with (
        Image.open(isolated / "o0" / "000001.1.png") as a,
        Image.open(made(isolated / "o1")[0]) as b,
    ):
        assert a.tobytes() == b.tobytes()


def test_pickle_checkpoints_need_the_flag(isolated: Path, pickle_file: Path) -> None:
    code, out, err = invoke("--model", str(pickle_file), "-o", "p", "a cat -s 2 -S 1")
    assert code != 0
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert any("--allow-pickle" in line for line in lines) and "Traceback" not in out + err
    assert not (isolated / "p").exists() or not made(isolated / "p")

    code, out, err = invoke(
        "--model", str(pickle_file), "--allow-pickle", "-o", "p", "a cat -s 2 -S 1"
    )
    assert code == 0, err
    assert len(made(isolated / "p")) == 1


def test_sdxl_takes_the_same_switches(isolated: Path, tiny_sdxl_dir: Path) -> None:
    sdxl = tiny_sdxl_dir
    code, _, err = invoke("--model", str(sdxl), "-o", "x", "a cat [blurry] -s 3 -S 5 -n 2 -C 6")
    assert code == 0, err
    first = made(isolated / "x")[0]
    code, _, err = invoke("--model", str(sdxl), "-o", "x", f"a dog -I {first} -f 0.7 -s 4 -S 6")
    assert code == 0, err
    assert "img2img: 2 of 4 steps" in err
    assert len(made(isolated / "x")) == 3


def test_kandinsky_runs_img2img(isolated: Path, tiny_kandinsky_dir: Path) -> None:
    kandinsky = tiny_kandinsky_dir
    init = isolated / "init.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(init)
    code, _, err = invoke("--model", str(kandinsky), "-o", "k", f"a cat -I {init} -f 0.5 -s 4 -S 2")
    assert code == 0, err
    (image,) = made(isolated / "k")
    with Image.open(image) as picture:
        assert picture.text["Dream"].startswith('"a cat" -s 4 -S 2')
    # what the family cannot honour is refused, not ignored
    code, _, err = invoke("--model", str(kandinsky), "-o", "k", f"a cat -I {init} -v 0.2 -s 4")
    assert code == 1
    assert "-v" in err and "Traceback" not in err
