"""-U 2 from latents: the x2 latent upscaler takes the drawn picture's final latents (no
decode-encode) when the model's VAE reads the same latents as its own, as the diffusers guide
chains StableDiffusionPipeline(output_type="latent") into StableDiffusionLatentUpscalePipeline;
`!fix FILE -U 2` takes the latents saved beside FILE. Each stored command remakes its picture."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invoke.backend.loading import load_model
from tests.helpers import sd_pipeline
from tests.test_cli import each_chunk_alone_reads_back, invoke, pixels, png_text

LINE = "a red circle -s 4 -S 42 -A ddim"


def run(args: tuple[str, ...], *lines: str) -> str:
    code, _, err = invoke(*args, stdin="".join(f"{line}\n" for line in lines))
    assert code == 0, err
    return err


def array(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def diffusers_chain(model_dir: Path, upscaler: Path) -> np.ndarray:
    """The guide's chain: txt2img to latents, the latents to the x2 latent upscaler."""
    from diffusers import StableDiffusionLatentUpscalePipeline

    model = load_model(model_dir, device="cpu")
    latents = sd_pipeline(model, "ddim")(
        prompt="a red circle", num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
        generator=[torch.Generator().manual_seed(42)], eta=0.0, output_type="latent",
    ).images  # fmt: skip
    pipe = StableDiffusionLatentUpscalePipeline.from_pretrained(upscaler)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        prompt="a red circle", image=latents, num_inference_steps=20, guidance_scale=0.0,
        generator=torch.Generator("cpu").manual_seed(42),
    ).images[0]  # fmt: skip
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_u2_on_a_line_upscales_its_latents_as_diffusers_chain_does(
    isolated: Path, tiny_model_dir: Path, tiny_shared_upscalers: Path
) -> None:
    """The line's -U 2 picture equals diffusers' latent chain; its stored command (the line
    itself: it draws the same latents again) remakes it byte for byte; `!fix` on its PNG, with
    no latents beside it, upscales the 8-bit pixels instead: another picture."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_shared_upscalers))
    args += ("-o", "o")
    plain, large = Path("o") / "000001.42.png", Path("o") / "000002.42.png"
    err = run(args, LINE, f"{LINE} -U 2 1")
    assert "enlarges the pixels, not the latents" not in err
    assert array(large).shape == (128, 128, 3)
    theirs = diffusers_chain(tiny_model_dir, tiny_shared_upscalers / "sd-x2-latent-upscaler")
    assert np.abs(array(large) - theirs).max() <= 1

    command = png_text(large)["Dream"]
    assert command == (
        '"a red circle" -s 4 -S 42 -W 64 -H 64 -C 7.5 -A ddim -U 2 1.0 '
        "--upscaler sd-x2-latent-upscaler"
    )
    run(args, command, f"!fix {plain} -U 2 1")
    again, from_pixels = Path("o") / "000003.42.png", Path("o") / "000004.42.png"
    assert pixels(again) == pixels(large)
    assert "--latents" not in png_text(from_pixels)["Dream"]
    assert np.abs(array(from_pixels) - array(large)).max() > 8


def test_fix_u2_takes_the_latents_saved_beside_the_picture_and_names_them(
    isolated: Path, tiny_model_dir: Path, tiny_shared_upscalers: Path
) -> None:
    """A picture made with --save_latents: `!fix FILE -U 2` upscales its latents (the same
    picture as the line with -U 2 draws), its command names the file, --dry-run prints that
    command, and it remakes the picture byte for byte."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_shared_upscalers))
    args += ("-o", "o")
    plain = Path("o") / "000001.42.png"
    kept = Path("o") / "000001.42.latents.safetensors"
    run(args, f"{LINE} --save_latents", f"{LINE} -U 2", f"!fix {plain} -U 2")
    drawn_large, fixed = Path("o") / "000002.42.png", Path("o") / "000003.42.png"
    assert pixels(fixed) == pixels(drawn_large)
    command = png_text(fixed)["Dream"]
    assert command == (
        f'!fix {plain} "a red circle" -S 42 --latents {kept} -U 2 0.75 '
        "--upscaler sd-x2-latent-upscaler"
    )
    code, out, _ = invoke(*args, "--dry-run", stdin=f"!fix {plain} -U 2\n")
    assert (code, out.strip()) == (0, command)
    run(args, command)
    assert pixels(Path("o") / "000004.42.png") == pixels(fixed)
    each_chunk_alone_reads_back(fixed, isolated)


def test_fix_u2_upscales_the_pixels_of_a_picture_changed_since_its_latents(
    isolated: Path, tiny_model_dir: Path, tiny_shared_upscalers: Path
) -> None:
    """Latents beside a picture edited after it was drawn are not its latents any more: a note
    says so and its pixels are upscaled; --latents naming them is refused in one line."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_shared_upscalers))
    args += ("-o", "o")
    run(args, f"{LINE} --save_latents")
    edited = isolated / "edited.png"
    with Image.open(Path("o") / "000001.42.png") as image:
        image.load()
        image.paste((0, 0, 0), (0, 0, 8, 8))
        image.save(edited)
    shutil.copy(Path("o") / "000001.42.latents.safetensors", "edited.latents.safetensors")
    err = run(args, '!fix edited.png "a red circle" -S 42 -U 2')
    assert (
        ">> edited.latents.safetensors was not decoded into this picture (it was "
        "changed since, or they were saved without saying which): upscaling edited.png's "
        "pixels instead" in err
    )
    assert "--latents" not in png_text(Path("o") / "000002.42.png")["Dream"]
    code, out, err = invoke(
        *args,
        stdin='!fix edited.png "a red circle" -S 42 --latents edited.latents.safetensors -U 2\n',
    )
    assert code == 1
    assert "--latents: edited.latents.safetensors was not decoded into this picture" in out + err
    assert not (Path("o") / "000003.42.png").exists()


def test_fix_u2_refuses_latents_it_cannot_take_in_one_line(
    isolated: Path, tiny_model_dir: Path, tiny_shared_upscalers: Path, tiny_upscalers: Path
) -> None:
    """--latents with the x4 upscaler (pixels only), with an upscaler whose VAE reads other
    latents, or naming a file of NaN: each one line, nothing made, the batch goes on."""
    from safetensors.numpy import save_file

    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_shared_upscalers))
    run((*args, "-o", "o"), f"{LINE} --save_latents")
    picture, kept = "o/000001.42.png", "o/000001.42.latents.safetensors"
    nan = np.full((1, 4, 8, 8), np.nan, np.float32)
    save_file({"latents": nan}, "nan.latents.safetensors")
    other = tiny_upscalers / "sd-x2-latent-upscaler"
    x4 = tiny_upscalers / "stable-diffusion-x4-upscaler"
    said = {
        f"!fix {picture} -U 4 --latents {kept} --upscaler {x4}": (
            "--latents: -U 4's upscaler takes pixels, not latents (only the x2 latent upscaler "
            "takes latents); drop --latents"
        ),
        f"!fix {picture} -U 2 --latents {kept} --upscaler {other}": (
            "--latents: 000001.42.latents.safetensors holds latents of another VAE "
            "(AutoencoderKL, 4 channels, 8 px a cell, scaling factor 0.18215) than the "
            "upscaler's (AutoencoderKL, 4 channels, 4 px a cell, scaling factor 0.18215)"
        ),
        f"!fix {picture} -U 2 --latents nan.latents.safetensors": (
            "--latents: nan.latents.safetensors holds NaN, infinite or non-float numbers"
        ),
        f"!fix {picture} -U 2 --latents gone.latents.safetensors": (
            "--latents: gone.latents.safetensors: no such file"
        ),
    }
    code, out, err = invoke(*args, "-o", "o", stdin="".join(f"{line}\n" for line in said))
    assert code == 1
    for number, message in enumerate(said.values(), start=1):
        found = [line for line in (out + err).splitlines() if message in line]
        assert len(found) == 1 and f"line {number}" in found[0], (message, out + err)
    assert sorted(p.name for p in Path("o").glob("*.png")) == ["000001.42.png"]


def test_an_upscaler_reading_other_latents_takes_the_pixels_and_says_so(
    isolated: Path, tiny_model_dir: Path, tiny_upscalers: Path
) -> None:
    """The hub-named tiny upscaler's VAE has 4 pixels a cell, the model's 8: the pixel path,
    said once a line."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_upscalers), "-o", "o")
    err = run(args, f"{LINE} -n 2 -U 2")
    assert (
        err.count(">> -U 2: sd-x2-latent-upscaler enlarges the pixels, not the latents: its VAE")
        == 1
    )
    assert "4 px a cell" in err and "8 px a cell" in err


def test_each_picture_of_a_line_upscales_its_own_latents(
    isolated: Path, tiny_model_dir: Path, tiny_shared_upscalers: Path
) -> None:
    """-n 2 -U 2: each picture from its own latents; each command remakes its picture alone."""
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_shared_upscalers))
    args += ("-o", "o")
    run(args, "a red circle -s 3 -S 5 -n 2 -U 2 1")
    made = sorted(Path("o").glob("000001.*.png"))
    assert len(made) == 2 and pixels(made[0]) != pixels(made[1])
    run(args, *(png_text(path)["Dream"] for path in made))
    for number, path in enumerate(made, start=2):
        assert pixels(Path("o") / f"{number:06d}.{path.name.split('.')[1]}.png") == pixels(path)


def test_latents_that_do_not_come_back_stop_the_upscale_and_keep_the_picture(
    isolated: Path,
    tiny_model_dir: Path,
    tiny_shared_upscalers: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A runner whose last step brings no latents: upscaling the pixels would make another
    picture than the command remakes, so the line stops, the picture kept as drawn."""
    from invoke.saving import Saver

    monkeypatch.setattr(Saver, "keep_final", lambda self, step: None)
    args = ("--model", str(tiny_model_dir), "--upscaler_dir", str(tiny_shared_upscalers))
    code, out, err = invoke(*args, "-o", "o", stdin=f"{LINE} -U 2\n")
    assert code == 1
    assert "-U 2: the job's final latents did not come back with its pictures" in out + err
    [kept] = Path("o").glob("*.png")
    assert png_text(kept)["Dream"] == '"a red circle" -s 4 -S 42 -W 64 -H 64 -C 7.5 -A ddim'
