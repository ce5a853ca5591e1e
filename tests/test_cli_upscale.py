"""-U through the `invoke` command: pictures enlarged by an upscaler, their commands and metadata,
and the mistakes, on the tiny model and tiny upscalers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from invoke.errors import InvokeError
from invoke.outputs import read_command
from tests.test_cli import each_chunk_alone_reads_back, invoke, pixels, png_text


def batch(args: tuple[str, ...], *lines: str) -> str:
    code, _, err = invoke(*args, stdin="".join(f"{line}\n" for line in lines))
    assert code == 0, err
    return err


def test_upscaled_lines_remake_their_pictures_and_record_the_upscale(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path
) -> None:
    """A batch: a plain picture, the same line at -U 2 (twice: the upscaler loads once), and at
    -U 2 0: InvokeAI's strength 0 is the plain picture enlarged by Lanczos, so the upscale starts
    from the picture the line draws. The command and sd-metadata remake the picture."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o")
    line = "a red circle -s 4 -S 7"
    err = batch(args, line, f"{line} -U 2", f"{line} -U 2", f"{line} -U 2 0")
    plain, upscaled, again, strength_0 = (Path("o") / f"{n:06d}.7.png" for n in range(1, 5))
    assert err.count(">> upscaler sd-x2-latent-upscaler loaded (2x, 20 steps") == 1
    with Image.open(plain) as image:
        assert image.size == (64, 64)
        enlarged = image.convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
    with Image.open(upscaled) as image:
        assert image.size == (128, 128)
    assert pixels(upscaled) == pixels(again) != pixels(strength_0)
    assert pixels(strength_0) == enlarged.tobytes()

    chunks = png_text(upscaled)
    # -U 2 found the hub's 2x upscaler by its name in --upscaler_dir: the command says so.
    assert chunks["Dream"] == (
        '"a red circle" -s 4 -S 7 -W 64 -H 64 -C 7.5 -A k_lms -U 2 0.75 '
        "--upscaler sd-x2-latent-upscaler"
    )
    assert json.loads(chunks["sd-metadata"])["image"]["postprocessing"] == [
        {"type": "sd-upscale", "scale": 2, "strength": 0.75, "model": "sd-x2-latent-upscaler"},
    ]
    assert (
        "Postprocess upscale by: 2, Postprocess upscaler: sd-x2-latent-upscaler"
        in chunks["parameters"]
    )
    each_chunk_alone_reads_back(upscaled, isolated)
    code, _, err = invoke(*args, chunks["Dream"])
    assert code == 0, err
    assert pixels(Path("o") / "000005.7.png") == pixels(upscaled)


def test_each_image_of_a_line_is_upscaled_at_its_own_seed(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path, quick_x4: None
) -> None:
    """-n 2 -U 4 --upscaler NAME: two 4x pictures, each remade alone by its own command, which
    names the upscaler; sd-metadata names it too."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o")
    batch(args, "a blue square -s 3 -S 5 -n 2 -U 4 1 --upscaler stable-diffusion-x4-upscaler")
    made = sorted(Path("o").glob("000001.*.png"))
    assert len(made) == 2
    commands = [png_text(path)["Dream"] for path in made]
    for path, command in zip(made, commands, strict=True):
        with Image.open(path) as image:
            assert image.size == (256, 256)
        assert command.endswith("-U 4 1.0 --upscaler stable-diffusion-x4-upscaler")
        entry = json.loads(png_text(path)["sd-metadata"])["image"]["postprocessing"][0]
        assert entry["model"] == "stable-diffusion-x4-upscaler"
    batch(args, *commands)
    for n, path in enumerate(made, start=2):
        assert pixels(Path("o") / f"{n:06d}.{path.name.split('.')[1]}.png") == pixels(path)


@pytest.mark.parametrize("launch", ["--dry-run", "--model"])
def test_upscale_mistakes_are_one_line_each_and_use_no_prefix(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path, launch: str
) -> None:
    """Each is refused before anything is drawn (also by --dry-run), and the batch goes on."""
    empty = isolated / "nothing"
    empty.mkdir()
    x2 = tiny_upscalers / "sd-x2-latent-upscaler"
    said = {
        "-U 3": "-U/--upscale: 3 is not an upscale factor; use 2, 4",
        "-U 2 2": "-U/--upscale: 2 is not a strength in [0, 1]; e.g. -U 2 0.75",
        "--upscaler x": "--upscaler: only means something with -U FACTOR",
        "-U 2 --upscaler sd-x2-latent-upscaler": (
            f"--upscaler: sd-x2-latent-upscaler: not found: {empty} has no upscaler files; put "
            "upscaler folders there, launch with --upscaler_dir DIR, or give a path or a hub id"
        ),
        "-U 4": (
            "-U 4: stabilityai/stable-diffusion-x4-upscaler is not in the local Hugging Face cache"
        ),
        f"-U 4 --upscaler {x2}": f"--upscaler: {x2} enlarges 2x, not 4x; use -U 2",
        f"-U 2 --upscaler {tiny_model_dir}": (
            f"upscaler {tiny_model_dir}: is a StableDiffusionPipeline, not an upscaler"
        ),
    }
    lines = "".join(f"a cat {switches} -s 2 -S 1\n" for switches in said)
    lines += f"a cat -s 2 -S 1 -U 2 --upscaler {x2}\n"
    model = ("--dry-run",) if launch == "--dry-run" else ("--model", str(tiny_model_dir))
    code, out, err = invoke(*model, "--upscaler_dir", str(empty), stdin=lines)
    assert code == 1
    for number, message in enumerate(said.values(), start=1):
        found = [line for line in (out + err).splitlines() if message in line]
        assert len(found) == 1 and f"line {number}" in found[0], (message, out + err)
    made = sorted(p.name for p in (isolated / "outputs" / "img-samples").glob("*.png"))
    assert made == ([] if launch == "--dry-run" else ["000001.1.png"])


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), InvokeError("-U 2: out of memory")])
def test_a_picture_whose_upscale_stops_is_kept_as_drawn(
    isolated: Path,
    tiny_model_dir: Path,
    tiny_upscalers: Path,
    monkeypatch: pytest.MonkeyPatch,
    stop: BaseException,
) -> None:
    """A second Ctrl-C or an out-of-memory error while upscaling: the picture was finished
    before, so it is saved, under the command that draws it (without -U), and the interrupt or
    the error goes on (to stop the batch, or be said as the line's error)."""
    from invoke.backend import upscale
    from invoke.config.settings import Settings
    from invoke.session import Session
    from invoke.shell.report import TerminalReporter

    def stopped(*args: object, **kwargs: object) -> None:
        raise stop

    monkeypatch.setattr(upscale.Upscaler, "upscale", stopped)
    settings = Settings(
        outdir=isolated / "o", model=str(tiny_model_dir), upscaler_dir=tiny_upscalers
    )
    session = Session(settings, reporter=TerminalReporter(progress=False))
    from invoke.line.parse import parse_request

    with pytest.raises(type(stop)):
        session.generate(parse_request("a red circle -s 3 -S 9 -U 2"))
    [kept] = list((isolated / "o").glob("*.png"))
    with Image.open(kept) as image:
        assert image.size == (64, 64)
    assert png_text(kept)["Dream"] == '"a red circle" -s 3 -S 9 -W 64 -H 64 -C 7.5 -A k_lms'


def test_a_models_own_upscaler_comes_first_and_the_command_names_it(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path
) -> None:
    """A model folder's upscalers/ (the default model ships one) holds the upscaler made for it:
    -U 2 takes it before the hub's, and the command names it; -U 4, which it lacks, still looks
    for the hub's; --upscaler picks the hub's one by name."""
    import shutil

    model = isolated / "with-upscaler"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(tiny_upscalers / "sd-x2-latent-upscaler", model / "upscalers" / "mine-x2")
    code, out, err = invoke(
        "--dry-run", "--model", str(model), "--upscaler_dir", str(tiny_upscalers),
        stdin="a cat -s 2 -S 1 -U 2\na cat -s 2 -S 1 -U 4 0.5\n"
        "a cat -s 2 -S 1 -U 2 --upscaler sd-x2-latent-upscaler\n",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        '"a cat" -s 2 -S 1 -W 64 -H 64 -C 7.5 -A k_lms -U 2 0.75 --upscaler mine-x2',
        '"a cat" -s 2 -S 1 -W 64 -H 64 -C 7.5 -A k_lms -U 4 0.5 '
        "--upscaler stable-diffusion-x4-upscaler",
        '"a cat" -s 2 -S 1 -W 64 -H 64 -C 7.5 -A k_lms -U 2 0.75 --upscaler sd-x2-latent-upscaler',
    ]


def test_fix_enlarges_a_file_as_the_line_with_u_would_and_its_command_remakes_it(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path
) -> None:
    """`!fix FILE -U 2` upscales FILE's own pixels at FILE's prompt and seed: the same picture
    as the line with -U 2 drew (that one upscales the picture it drew, before saving it). Its
    command is the !fix line, which makes it again; at strength 0 it is FILE enlarged by
    Lanczos."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o")
    plain = Path("o") / "000001.7.png"
    batch(args, "a red circle -s 4 -S 7", "a red circle -s 4 -S 7 -U 2", f"!fix {plain} -U 2")
    drawn_large, fixed = Path("o") / "000002.7.png", Path("o") / "000003.7.png"
    assert pixels(fixed) == pixels(drawn_large)
    command = png_text(fixed)["Dream"]
    assert command == (
        f'!fix {plain} "a red circle" -S 7 -U 2 0.75 --upscaler sd-x2-latent-upscaler'
    )
    each_chunk_alone_reads_back(fixed, isolated)
    assert read_command(fixed) == command
    code, out, _ = invoke(*args, "--dry-run", stdin=f"!fix {plain} -U 2\n")
    assert (code, out.strip()) == (0, command)
    batch(args, command, f"!fix {plain} -U 2 0 -S 1")
    assert pixels(Path("o") / "000004.7.png") == pixels(fixed)
    with Image.open(plain) as image:
        enlarged = image.convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
    assert pixels(Path("o") / "000005.1.png") == enlarged.tobytes()


def test_fix_enlarges_a_photo_without_metadata_cropped_to_the_upscalers_sides(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path
) -> None:
    Image.new("RGB", (70, 50), (30, 160, 60)).save(isolated / "photo.png")
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o")
    err = batch(args, '!fix photo.png "a green field" -S 3 -U 2')
    assert ">> photo.png has no metadata: upscaling with the line's prompt and seed 3" in err
    assert "photo.png: 70×50 rounded down to 64×48 (a multiple of 8)" in err
    [made] = Path("o").glob("*.png")
    with Image.open(made) as image:
        assert image.size == (128, 96)
    assert png_text(made)["Dream"] == (
        '!fix photo.png "a green field" -S 3 -U 2 0.75 --upscaler sd-x2-latent-upscaler'
    )


def test_fix_enlarges_a_picture_fix_enlarged_at_the_same_prompt_and_seed(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path
) -> None:
    """A picture made by `!fix FILE -U` carries a !fix line, not a prompt line: a second !fix
    reads its prompt and seed from it."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o")
    first, once = Path("o") / "000001.7.png", Path("o") / "000002.7.png"
    err = batch(args, "a red circle -s 4 -S 7", f"!fix {first} -U 2", f"!fix {once} -U 2")
    assert "has no metadata" not in err
    [twice] = Path("o").glob("000003.*.png")
    with Image.open(twice) as image:
        assert image.size == (256, 256)
    assert png_text(twice)["Dream"] == (
        f'!fix {once} "a red circle" -S 7 -U 2 0.75 --upscaler sd-x2-latent-upscaler'
    )
