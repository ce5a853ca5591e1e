"""img2img as the InvokeAI guide describes it, end to end through the `invoke` command."""

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


@pytest.fixture
def run(tiny_model_dir: Path):
    def run(line: str, *launch: str) -> tuple[str, str]:
        args = ["--model", str(tiny_model_dir), "--outdir", "out", *launch, line]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        return result.stdout, result.stderr

    return run


def picture(path: Path, size: tuple[int, int] = (64, 64), mode: str = "RGB") -> Path:
    """A simple init picture: a warm square on a cool background."""
    image = Image.new("RGB", size, (30, 60, 200))
    w, h = size
    image.paste((230, 90, 20), (w // 4, h // 4, 3 * w // 4, 3 * h // 4))
    image.convert(mode).save(path)
    return path


def dream(path: Path) -> str:
    with Image.open(path) as image:
        image.load()
        return image.text["Dream"]


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize(
    ("steps", "strength", "taken"),
    # (10, 0.75, 7): int() truncates 7.5 where round() would take 8 steps
    [(10, 0.7, 7), (10, 0.4, 4), (50, 0.4, 20), (29, 0.7, 20), (30, 0.7, 21), (10, 0.75, 7)],
)
def test_strength_sets_the_steps_taken(workdir: Path, run, steps, strength, taken) -> None:
    init = picture(workdir / "init.png")
    _, err = run(f"a house -I {init} -s {steps} -f {strength} -S 3 --save_intermediates 1")
    assert f"img2img: {taken} of {steps} steps at strength {strength:.2f}" in err
    dumps = workdir / "out" / "intermediates" / "000001.3"
    tensors = sorted(p.name for p in dumps.glob("step-*.safetensors"))
    # step-0000 is the noised init image ("what SD sees"), then one file per step taken
    assert tensors == [f"step-{k:04d}.safetensors" for k in range(taken + 1)]
    assert (dumps / "steps.png").is_file()


def test_intermediates_every_nth_and_the_last_for_txt2img(workdir: Path, run) -> None:
    run("a house -s 7 -S 4 --save_intermediates 3")
    dumps = workdir / "out" / "intermediates" / "000001.4"
    names = sorted(p.stem for p in dumps.glob("step-*.png"))
    assert names == ["step-0000", "step-0003", "step-0006", "step-0007"]
    with Image.open(dumps / "steps.png") as strip:
        assert strip.size == (4 * 64, 64)


def test_too_low_strength_is_an_error_naming_what_works(workdir: Path, tiny_model_dir) -> None:
    init = picture(workdir / "init.png")
    args = ["--model", str(tiny_model_dir), "--outdir", "out", f"a house -I {init} -s 5 -f 0.1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "0 steps" in message and "-f" in message and "Traceback" not in result.output
    assert not list((workdir / "out").glob("*.png"))


def test_transparent_region_is_redrawn_and_the_rest_kept_exactly(workdir: Path, run) -> None:
    init = Image.open(picture(workdir / "base.png")).convert("RGBA")
    hole = np.asarray(init).copy()
    hole[8:24, 36:60, 3] = 0  # a fully transparent rectangle, colour kept underneath
    Image.fromarray(hole).save(workdir / "holey.png")
    run(f"a house -I {workdir / 'holey.png'} -s 8 -f 0.9 -S 11")
    (made,) = (workdir / "out").glob("000001.*.png")
    result = rgb(made)
    opaque = hole[..., 3] == 255
    assert np.array_equal(result[opaque], hole[..., :3][opaque])
    assert np.abs(result[~opaque].astype(int) - hole[..., :3][~opaque]).mean() > 5


def test_invert_mask_redraws_the_other_region(workdir: Path, run) -> None:
    init = picture(workdir / "base.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[8:24, 36:60] = 255  # white: redraw this rectangle, keep the rest
    Image.fromarray(mask, "L").save(workdir / "mask.png")
    base = rgb(init)
    inside = mask == 255
    run(f"a house -I {init} -M {workdir / 'mask.png'} -s 8 -f 0.9 -S 11")
    run(f"a house -I {init} -M {workdir / 'mask.png'} --invert_mask -s 8 -f 0.9 -S 11")
    plain, inverted = (rgb(p) for p in sorted((workdir / "out").glob("00000*.png")))
    # plain mask: the rectangle is redrawn and the rest kept exactly
    assert np.array_equal(plain[~inside], base[~inside])
    assert np.abs(plain[inside].astype(int) - base[inside]).mean() > 5
    # inverted: the rectangle is kept exactly and the rest redrawn
    assert np.array_equal(inverted[inside], base[inside])
    assert np.abs(inverted[~inside].astype(int) - base[~inside]).mean() > 5


def test_img2img_variation_loop_feeds_each_output_forward(workdir: Path, run, tiny_model_dir):
    init = picture(workdir / "init.png")
    run(f"a house -I {init} -v 0.2 -n 3 -S 5 -s 6 -f 0.6")
    files = sorted((workdir / "out").glob("000001.*.png"), key=lambda p: p.stat().st_mtime_ns)
    assert len(files) == 3
    commands = [dream(p) for p in files]
    assert f"-I {init}" in commands[0]
    assert f"-I {files[0]}" in commands[1] or f"-I out/{files[0].name}" in commands[1]
    assert all("-S 5 -" in c and "-V " in c for c in commands)
    # the third image's stored command remakes it exactly
    run(commands[2])
    (again,) = (workdir / "out").glob("000002.*.png")
    assert np.array_equal(rgb(again), rgb(files[2]))


def test_txt2img_variations_remake_exactly(workdir: Path, run) -> None:
    run("a house -v 0.3 -n 2 -S 42 -s 5")
    files = sorted((workdir / "out").glob("000001.*.png"))
    assert len(files) == 2
    for prefix, path in enumerate(files, start=2):
        command = dream(path)
        assert "-S 42" in command and ":0.3" in command
        run(command)
        (again,) = (workdir / "out").glob(f"{prefix:06d}.*.png")
        assert np.array_equal(rgb(again), rgb(path))
        assert again.name.split(".")[1] == path.name.split(".")[1]  # named by the variation seed


def test_n_without_v_gives_independent_images_of_one_init(workdir: Path, run) -> None:
    init = picture(workdir / "init.png")
    run(f"a house -I {init} -n 3 -S 9 -s 6 -f 0.7")
    files = sorted((workdir / "out").glob("000001.*.png"))
    assert len(files) == 3
    seeds = [p.name.split(".")[1] for p in files]
    assert len(set(seeds)) == 3
    assert all(f"-I {init}" in dream(p) for p in files)
    pixels = [rgb(p) for p in files]
    assert not any(np.array_equal(a, b) for i, a in enumerate(pixels) for b in pixels[i + 1 :])
    # independent: each one is the plain img2img of the init with its own seed, nothing carried
    # over from the images before it
    run(f"a house -I {init} -S {seeds[2]} -s 6 -f 0.7")
    (alone,) = (workdir / "out").glob(f"000002.{seeds[2]}.png")
    assert np.array_equal(rgb(alone), pixels[2])


def test_fit_scales_into_the_box_keeping_aspect(workdir: Path, run) -> None:
    init = picture(workdir / "wide.png", size=(900, 600))
    run(f"a house -I {init} -W 128 -H 128 --fit -s 4 -f 0.5 -S 1")
    (made,) = (workdir / "out").glob("000001.*.png")
    with Image.open(made) as image:
        assert image.size == (128, 80)  # 128 x 85.3, rounded down to the multiple of 8


def test_no_prompt_takes_the_prompt_from_the_init_image(workdir: Path, run) -> None:
    run('"a tiny house" -s 3 -S 2')
    run("-I 000001.2.png -f 0.5 -s 4 -S 3")  # a bare name is looked up in the outdir
    (made,) = (workdir / "out").glob("000002.*.png")
    assert dream(made).startswith('"a tiny house"')


def test_a_larger_init_image_stores_the_pictures_real_size_and_remakes_it(workdir, run) -> None:
    # The tiny model's size is 64x64; without --fit the picture is the init image's own size
    # (rounded down to 8): the command, sd-metadata and `parameters` say 96x72, not 64x64.
    init = picture(workdir / "wide.png", size=(100, 75))
    run(f"a house -I {init} -s 4 -f 0.6 -S 7")
    (first,) = (workdir / "out").glob("000001.*.png")
    with Image.open(first) as image:
        image.load()
        assert image.size == (96, 72)
        assert " -W 96 -H 72 " in image.text["Dream"]
        assert "Size: 96x72" in image.text["parameters"]
        assert '"width": 96, "height": 72' in image.text["sd-metadata"]
    # the stored command remakes the same picture, byte for byte
    run(dream(first))
    (again,) = (workdir / "out").glob("000002.*.png")
    assert np.array_equal(rgb(again), rgb(first))
    # and -W/-H as the line gave them still make that picture (they size it only with --fit)
    run(f"a house -I {init} -s 4 -f 0.6 -S 7 -W 64 -H 64")
    (third,) = (workdir / "out").glob("000003.*.png")
    assert np.array_equal(rgb(third), rgb(first)) and dream(third) == dream(first)
