"""The `invoke` command end to end: one-shot lines, stdin batches, --dry-run, real models."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from invoke.__main__ import cli

REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        image.load()
        return dict(image.text)


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_help_teaches_without_importing_torch() -> None:
    code = (
        "import sys, invoke.__main__\n"
        "assert 'torch' not in sys.modules, 'torch imported by invoke.__main__'\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(invoke.__main__.cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "print(r.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "--outdir" in done.stdout and "--dry-run" in done.stdout and "red circle" in done.stdout


def test_one_shot_writes_png_with_chunks_and_its_command_remakes_it(
    isolated: Path, tiny_model_dir: Path
) -> None:
    code, out, err = invoke(
        "--model",
        str(tiny_model_dir),
        "--outdir",
        "o1",
        "a red circle on a blue background -s 4 -S 42",
    )
    assert code == 0, err
    first = isolated / "o1" / "000001.42.png"
    assert first.is_file()
    chunks = png_text(first)
    assert {"Dream", "sd-metadata", "parameters"} <= set(chunks)
    command = chunks["Dream"]
    assert command == '"a red circle on a blue background" -s 4 -S 42 -W 64 -H 64 -C 7.5 -A k_lms'
    assert f"[1] o1/000001.42.png: {command}" in out

    code, out, err = invoke("--model", str(tiny_model_dir), "--outdir", "o1", command)
    assert code == 0, err
    second = isolated / "o1" / "000002.42.png"
    assert pixels(second) == pixels(first)
    log = (isolated / "o1" / "invoke_log.txt").read_text().splitlines()
    assert len(log) == 2 and log[0].endswith(command)


def test_hires_fix_images_carry_the_switch_and_their_commands_remake_them(
    isolated: Path, tiny_model_dir: Path
) -> None:
    from invoke.outputs import read_command

    line = "a red circle -W 128 -H 96 --hires_fix -s 4 -S 42 -n 3"
    code, out, err = invoke("--model", str(tiny_model_dir), "--outdir", "h", line)
    assert code == 0, err
    assert "hires_fix: 72x48 first, then its latents upscaled to 128x96" in err
    files = sorted((isolated / "h").glob("000001.*.png"))
    assert len(files) == 3
    for path in files:
        chunks = png_text(path)
        assert chunks["Dream"].endswith("-W 128 -H 96 -C 7.5 -A k_lms --hires_fix -f 0.75")
        image = json.loads(chunks["sd-metadata"])["image"]
        assert (image["type"], image["hires_fix"], image["strength"]) == ("txt2img", True, 0.75)
        assert read_command(path) == chunks["Dream"]  # what !fetch gives back
        with Image.open(path) as picture:
            assert picture.size == (128, 96)
    # The third image's printed command, run on its own, makes the same pixels.
    third = png_text(files[2])["Dream"]
    assert f"] h/{files[2].name}: {third}" in out
    code, out, err = invoke("--model", str(tiny_model_dir), "--outdir", "h", third)
    assert code == 0, err
    assert pixels(isolated / "h" / f"000002.{files[2].name.split('.')[1]}.png") == pixels(files[2])


def test_hires_fix_intermediates_cover_both_passes(isolated: Path, tiny_model_dir: Path) -> None:
    from safetensors.numpy import load_file

    line = "a red circle -W 128 -H 96 --hires_fix -s 4 -S 5 --save_intermediates 2"
    code, _, err = invoke("--model", str(tiny_model_dir), "--outdir", "i", line)
    assert code == 0, err
    folder = isolated / "i" / "intermediates" / "000001.5"
    # Steps 0-4 are the first pass (72x48), then int(0.75 * 4) = 3 more at 128x96, the last kept.
    shapes = {
        int(path.stem[5:]): load_file(path)["latents"].shape
        for path in folder.glob("step-*.safetensors")
    }
    assert shapes == {0: (4, 6, 9), 2: (4, 6, 9), 4: (4, 6, 9), 6: (4, 12, 16), 7: (4, 12, 16)}
    assert (folder / "steps.png").is_file()


def test_hires_fix_at_native_size_is_one_plain_pass(isolated: Path, tiny_model_dir: Path) -> None:
    for extra in ("", " --hires_fix"):
        line = f"a red circle -s 4 -S 42{extra}"
        code, _, err = invoke("--model", str(tiny_model_dir), "--outdir", "n", line)
        assert code == 0, err
    assert "hires_fix: 64x64 is not larger than the model's native 64x64; one pass" in err
    assert pixels(isolated / "n" / "000002.42.png") == pixels(isolated / "n" / "000001.42.png")
    assert png_text(isolated / "n" / "000002.42.png")["Dream"].endswith("--hires_fix -f 0.75")


def test_dry_run_keeps_strength_only_where_it_acts(isolated: Path) -> None:
    lines = "a cat -W 128 -H 128 --hires_fix -S 1\na cat -f 0.5 -S 1\na cat --hires -f 0.5 -S 1\n"
    code, out, err = invoke("--dry-run", stdin=lines)
    assert code == 0, err
    printed = [line for line in out.splitlines() if line.startswith('"')]
    assert printed == [
        '"a cat" -s 50 -S 1 -W 128 -H 128 -C 7.5 -A k_euler --hires_fix -f 0.75',
        '"a cat" -s 50 -S 1 -W 64 -H 64 -C 7.5 -A k_euler',
        '"a cat" -s 50 -S 1 -W 64 -H 64 -C 7.5 -A k_euler --hires_fix -f 0.5',
    ]


def test_words_after_launch_options_form_the_line(isolated: Path, tiny_model_dir: Path) -> None:
    code, out, err = invoke(
        "--model", str(tiny_model_dir), "--outdir", "shots", "a red circle", "-s", "2", "-n", "3"
    )
    assert code == 0, err
    files = sorted((isolated / "shots").glob("000001.*.png"))
    assert len(files) == 3
    for n in (1, 2, 3):
        assert f"[1.{n}] shots/000001." in out
    # -s 2 took effect: each picture's stored command says so, with its own seed.
    for path in files:
        seed = path.name.split(".")[1]
        assert png_text(path)["Dream"].startswith(f'"a red circle" -s 2 -S {seed} -W 64 -H 64 ')


def test_stdin_batch_counts_lines_and_keeps_going(isolated: Path, tiny_model_dir: Path) -> None:
    good = "a cat -s 3 -S 1\n\n# c\na dog -s 3 -S 2 -n 2\n"
    code, out, err = invoke("--model", str(tiny_model_dir), "--outdir", "o2", stdin=good)
    assert code == 0, err
    assert len(list((isolated / "o2").glob("*.png"))) == 3

    code, out, err = invoke(
        "--model", str(tiny_model_dir), "--outdir", "o3", stdin=good + "a cow -f 1.5\n"
    )
    assert code == 1
    assert len(list((isolated / "o3").glob("*.png"))) == 3
    assert "line 5: -f/--strength: 1.5" in out + err


def test_dry_run_output_is_a_fixed_point(isolated: Path) -> None:
    lines = "a cat -s 3 -S 1\na dog -n 2 -C 5 -A k_euler_a\n'quoted: prompt' -W 102 -H 80\n"
    code, out, err = invoke("--dry-run", stdin=lines)
    assert code == 0, err
    printed = [line for line in out.splitlines() if line.startswith('"')]
    assert len(printed) == 3
    assert printed[0] == '"a cat" -s 3 -S 1 -W 64 -H 64 -C 7.5 -A k_euler'
    assert "-W 100 -H 80" in printed[2]  # rounded down to the default model's multiple of 4
    code, again, err = invoke("--dry-run", stdin="\n".join(printed) + "\n")
    assert code == 0, err
    assert [line for line in again.splitlines() if line.startswith('"')] == printed
    assert not (isolated / "outputs").exists()  # nothing generated


def test_dry_run_rounds_sizes_and_outcrop_as_the_real_run_does(isolated: Path) -> None:
    """The default model's latent cell is 4 pixels, not SD's 8, and its sampler k_euler, not
    k_lms: --dry-run reads both from the model's files, so it prints what the real run prints."""
    Image.new("RGB", (64, 64), (35, 65, 215)).save(isolated / "src.png")
    lines = [
        '"a cat" -s 2 -S 1 -I src.png --outcrop top 10',
        '"a cat" -s 2 -S 1 -W 102 -H 76',
    ]
    code, out, err = invoke("--dry-run", stdin="\n".join(lines) + "\n")
    assert code == 0, err
    dry = [line for line in out.splitlines() if line.startswith('"')]
    assert dry == [
        '"a cat" -s 2 -S 1 -W 64 -H 76 -C 7.5 -A k_euler -I src.png -f 0.9 --outcrop top 12',
        '"a cat" -s 2 -S 1 -W 100 -H 76 -C 7.5 -A k_euler',
    ]
    code, out, err = invoke("--outdir", "o", stdin="\n".join(lines) + "\n")
    assert code == 0, err
    assert "--outcrop: top 10 to 12 (rounded up to a multiple of 4)" in err
    made = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("[")]
    assert made == dry


def test_dry_run_on_a_kandinsky_folder_rounds_to_its_pipelines_64_pixels(isolated: Path) -> None:
    folder = isolated / "kandinsky"
    (folder / "movq").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "KandinskyV22CombinedPipeline"}')
    (folder / "movq" / "config.json").write_text('{"block_out_channels": [128, 256, 256, 512]}')
    code, out, err = invoke("--model", str(folder), "--dry-run", "a cat -S 1 -W 100 -H 130")
    assert code == 0, err
    assert "-W 64 -H 128" in out and "-A ddim" in out  # its loop cannot run k_lms


def test_launch_defaults_apply_and_are_validated(isolated: Path) -> None:
    code, out, err = invoke("--steps", "12", "--sampler", "ddim", "--dry-run", stdin="a cat -S 3\n")
    assert code == 0, err
    assert '"a cat" -s 12 -S 3 -W 64 -H 64 -C 7.5 -A ddim' in out
    code, out, err = invoke("--strength", "1.5", "a cat")
    assert code != 0
    assert "-f/--strength: 1.5" in out + err


def test_seamless_axes_are_said_the_short_way_and_only_with_seamless(isolated: Path) -> None:
    lines = (
        "a wall -S 1 --seamless\n"
        "a wall -S 1 --seamless --seamless_axes y,x\n"  # both axes: what --seamless alone means
        "a wall -S 1 --seamless --seamless_axes y\n"
        "a wall -S 1 --seamless_axes x\n"  # axes without --seamless wrap nothing, as InvokeAI's
    )
    code, out, err = invoke("--dry-run", stdin=lines)
    assert code == 0, err
    base = '"a wall" -s 50 -S 1 -W 64 -H 64 -C 7.5 -A k_euler'
    assert [line for line in out.splitlines() if line.startswith('"')] == [
        f"{base} --seamless",
        f"{base} --seamless",
        f"{base} --seamless --seamless_axes y",
        base,
    ]
    # A launch --seamless is every line's default, like --fit and --grid.
    code, out, err = invoke("--seamless", "--dry-run", stdin="a wall -S 1\n")
    assert code == 0, err
    assert f"{base} --seamless" in out


def test_seamless_image_carries_its_switch_and_remakes_itself(
    isolated: Path, tiny_model_dir: Path
) -> None:
    from invoke.outputs import read_command

    model = ("--model", str(tiny_model_dir), "--outdir", "o")
    lines = "a red circle -s 3 -S 5\na red circle -s 3 -S 5 --seamless\na red circle -s 3 -S 5\n"
    code, out, err = invoke(*model, stdin=lines)
    assert code == 0, err
    plain, seamless, plain_again = (isolated / "o" / f"00000{k}.5.png" for k in (1, 2, 3))
    # Per line, not sticky: the line after a seamless one draws what it drew before.
    assert pixels(plain_again) == pixels(plain) != pixels(seamless)

    chunks = png_text(seamless)
    command = '"a red circle" -s 3 -S 5 -W 64 -H 64 -C 7.5 -A k_lms --seamless'
    assert chunks["Dream"] == command and f"o/000002.5.png: {command}" in out
    assert json.loads(chunks["sd-metadata"])["image"]["seamless"] is True
    assert json.loads(png_text(plain)["sd-metadata"])["image"]["seamless"] is False
    assert "Tiling: True" in chunks["parameters"]
    assert read_command(seamless) == command  # !fetch
    code, out, err = invoke(*model, command)
    assert code == 0, err
    assert pixels(isolated / "o" / "000004.5.png") == pixels(seamless)

    # One axis: the Dream line and sd-metadata say which; AUTOMATIC1111's Tiling cannot.
    code, out, err = invoke(*model, "a red circle -s 3 -S 5 --seamless --seamless_axes x")
    assert code == 0, err
    only_x = isolated / "o" / "000005.5.png"
    chunks = png_text(only_x)
    assert chunks["Dream"].endswith("--seamless --seamless_axes x")
    assert json.loads(chunks["sd-metadata"])["image"]["seamless_axes"] == ["x"]
    assert "Tiling" not in chunks["parameters"]
    assert read_command(only_x) == chunks["Dream"]
    assert pixels(only_x) not in (pixels(seamless), pixels(plain))


def test_bad_model_is_one_clear_line(isolated: Path) -> None:
    code, out, err = invoke("--model", "no-such-model", "a cat -s 2")
    assert code != 0
    message = (out + err).strip()
    assert "no-such-model" in message and "Traceback" not in message


def test_t_prints_the_tokens_on_stdout_before_the_outputs_block(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """-t: the session reports the backend's Tokens event and the terminal prints it, as
    InvokeAI did, above the Outputs: block; the weights show when the prompt has any."""
    line = "a (red)1.5 zebra- [blue] -s 2 -S 1 -t"
    code, out, err = invoke("--model", str(tiny_model_dir), line)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:3] == [
        ">> Tokens (7): a red(1.5) z(0.9) e(0.9) b(0.9) r(0.9) a(0.9)",
        ">> Tokens (1): blue",
        "Outputs:",
    ]
    assert ">> Tokens" not in err


def test_a_missing_default_model_is_one_line_not_a_model_made_up(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken install (the package without its default_model/) says so and draws nothing."""
    from invoke import model_cache

    monkeypatch.setattr(model_cache, "EMBEDDED_MODEL_DIR", isolated / "gone")
    code, out, err = invoke("a red circle -s 2 -S 1")
    assert code != 0
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert any("the default model is missing" in line and "gone" in line for line in lines)
    assert "Traceback" not in out + err
    assert not list(isolated.rglob("*.png"))


@pytest.mark.e2e
def test_real_process_default_model_draws_what_it_is_asked(isolated: Path) -> None:
    """The console entry point as a user runs it, on the embedded default model."""
    from tests.fixtures import world

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    line = "a red circle on a blue background -s 20 -S 1"
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "--outdir", "o1", line],
        capture_output=True,
        text=True,
        cwd=isolated,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    made = isolated / "o1" / "000001.1.png"
    with Image.open(made) as image:
        labels = world.check(image.convert("RGB"))
    assert labels == world.parse_caption("a red circle on a blue background")


def each_chunk_alone_reads_back(picture: Path, folder: Path) -> None:
    """A copy of `picture` with only its Dream chunk, and one with only its sd-metadata: each
    gives back the picture's own command."""
    from invoke.outputs import read_command

    chunks = png_text(picture)
    for key in ("Dream", "sd-metadata"):
        alone = folder / f"{key}.png"
        info = PngImagePlugin.PngInfo()
        info.add_text(key, chunks[key])
        with Image.open(picture) as image:
            image.save(alone, pnginfo=info)
        assert read_command(alone) == chunks["Dream"], key


def seed_7_batch(args: tuple[str, ...], *prompts: str) -> tuple[list[Path], str]:
    """The prompts at `-s 4 -S 7` as one stdin batch writing to o/: its pictures, one a line,
    and what it said on stderr."""
    lines = "".join(f"{prompt} -s 4 -S 7\n" for prompt in prompts)
    code, _, err = invoke(*args, stdin=lines)
    assert code == 0, err
    return [Path("o") / f"{n:06d}.7.png" for n in range(1, len(prompts) + 1)], err


def test_lora_lines_remake_their_pictures_and_plain_lines_stay_plain(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """A batch: plain, the LoRA (AUTOMATIC1111's spelling), plain again, the LoRA by
    InvokeAI's spelling; then the stored command of the LoRA picture, run again."""
    from invoke.backend.loading import load_model
    from tests.helpers import kohya_file

    (isolated / "loras" / "styles").mkdir(parents=True)
    kohya_file(load_model(tiny_model_dir, device="cpu"), isolated / "loras/styles/ink.safetensors")
    args = ("--model", str(tiny_model_dir), "--lora_dir", "loras", "--outdir", "o")
    (plain, styled, plain_again, styled_again, _), err = seed_7_batch(
        args,
        "a red circle",
        "a red circle <lora:ink:0.8>",
        "a red circle",
        "a red circle withLora(ink, 0.8)",
        "a blue circle <lora:ink:0.8>",
    )
    # Said when merged: not again for a line that keeps the same LoRA.
    merged = ">> LoRA ink merged at 0.8 ("
    assert err.count(merged) == 2 and "UNet layers" in err and "text encoder layers" in err
    assert pixels(plain) == pixels(plain_again)
    assert pixels(styled) == pixels(styled_again) != pixels(plain)

    chunks = png_text(styled)
    assert chunks["Dream"].startswith('"a red circle <lora:ink:0.8>" -s 4 -S 7')
    assert chunks["parameters"].splitlines()[0] == "a red circle <lora:ink:0.8>"
    # The file's hash as AUTOMATIC1111 writes it: sha256 of what follows the safetensors header.
    data = (isolated / "loras/styles/ink.safetensors").read_bytes()
    digest = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]
    assert f'Lora hashes: "ink: {digest}"' in chunks["parameters"]
    recorded = json.loads(chunks["sd-metadata"])["image"]["loras"]
    assert recorded == [{"name": "ink", "weight": 0.8, "hash": digest}]
    assert "loras" not in json.loads(png_text(plain)["sd-metadata"])["image"]
    code, _, err = invoke(*args, chunks["Dream"])
    assert code == 0, err
    assert pixels(isolated / "o" / "000006.7.png") == pixels(styled)


def test_unknown_lora_is_one_line_naming_what_there_is(
    isolated: Path, tiny_model_dir: Path
) -> None:
    (isolated / "loras").mkdir()
    (isolated / "loras" / "ink.safetensors").write_bytes(b"")
    lines = "a cat withLora(inc) -s 3 -S 1\na cat -s 3 -S 1\n"
    for launch in (("--dry-run",), ("--model", str(tiny_model_dir))):
        code, out, err = invoke(*launch, "--lora_dir", "loras", stdin=lines)
        assert code == 1
        said = [line for line in (out + err).splitlines() if "LoRA inc" in line]
        assert len(said) == 1
        assert "did you mean ink?" in said[0] and "line 1" in said[0]
    assert len(list((isolated / "outputs" / "img-samples").glob("*.png"))) == 1


def ring_picture(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    """An edge map: a white ring on black, of `size` (not square: it is cropped to 64x64)."""
    import numpy as np

    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    ring = np.abs(np.hypot(x - width / 2, y - height / 2) - 18) < 2
    Image.fromarray(np.where(ring, 255, 0).astype(np.uint8)).convert("RGB").save(path)
    return path


def test_controlnet_lines_remake_their_pictures_and_record_what_guided_them(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """A batch: plain, guided by a ControlNet, guided again (loaded once); the stored command
    and the sd-metadata of the guided picture, fetched and run again."""
    from tests.fixtures.tiny_models import build_test_controlnet

    build_test_controlnet(isolated / "nets" / "sd15" / "edges", tiny_model_dir)
    ring_picture(isolated / "ring.png")
    args = ("--model", str(tiny_model_dir), "--controlnet_dir", "nets", "--outdir", "o")
    guided_line = (
        "a red circle --controlnet edges --control_image ring.png --control_weight 0.8 "
        "--control_end 0.8"
    )
    previous = "a red circle --controlnet edges --control_image -1"
    (plain, guided, guided_again, from_previous), err = seed_7_batch(
        args, "a red circle", guided_line, guided_line, previous
    )
    assert err.count(">> ControlNet edges loaded") == 1
    assert (
        err.count(
            ">> ring.png: 96×64 is another shape than the picture's 64×64: scaled to 96×64 and "
            "its middle kept"
        )
        == 2
    )
    assert pixels(guided) == pixels(guided_again) != pixels(plain)

    chunks = png_text(guided)
    assert chunks["Dream"] == (
        '"a red circle" -s 4 -S 7 -W 64 -H 64 -C 7.5 -A k_lms --controlnet edges '
        "--control_image ring.png --control_weight 0.8 --control_end 0.8"
    )
    assert json.loads(chunks["sd-metadata"])["image"]["controlnet"] == {
        "model": "edges", "image": "ring.png", "processor": None, "weight": 0.8, "start": 0.0,
        "end": 0.8,
    }  # fmt: skip
    assert (
        'ControlNet 0: "Module: none, Model: edges, Weight: 0.8, Resize Mode: Crop and Resize, '
        'Guidance Start: 0, Guidance End: 0.8"'
    ) in chunks["parameters"]
    each_chunk_alone_reads_back(guided, isolated)
    code, _, err = invoke(*args, chunks["Dream"])
    assert code == 0, err
    assert pixels(isolated / "o" / "000005.7.png") == pixels(guided)
    # -1: the previous output, named in the command as the file it was.
    assert f"--control_image {Path('o') / '000003.7.png'}" in png_text(from_previous)["Dream"]


def test_the_canny_processor_makes_the_edge_map_the_controlnet_reads(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """A photo with --control_processor canny draws what its edge map, given as the control
    image, draws; the command and metadata say which processor ran."""
    from invoke.processors import canny
    from tests.fixtures.tiny_models import build_test_controlnet

    build_test_controlnet(isolated / "nets" / "edges", tiny_model_dir)
    photo = Image.new("RGB", (64, 64), (30, 60, 200))
    photo.paste((220, 40, 40), (12, 20, 44, 52))
    photo.save(isolated / "photo.png")
    canny(photo).save(isolated / "edges.png")
    args = ("--model", str(tiny_model_dir), "--controlnet_dir", "nets", "--outdir", "o")
    (processed, given), _ = seed_7_batch(
        args,
        "a red square --controlnet edges --control_image photo.png --control_processor canny",
        "a red square --controlnet edges --control_image edges.png",
    )
    assert pixels(processed) == pixels(given)
    chunks = png_text(processed)
    assert "--control_image photo.png --control_processor canny" in chunks["Dream"]
    assert json.loads(chunks["sd-metadata"])["image"]["controlnet"]["processor"] == "canny"
    assert 'ControlNet 0: "Module: canny, Model: edges,' in chunks["parameters"]


def test_controlnet_mistakes_are_one_line_each_and_the_batch_goes_on(
    isolated: Path, tiny_model_dir: Path
) -> None:
    from tests.fixtures.tiny_models import build_test_controlnet

    build_test_controlnet(isolated / "nets" / "edges", tiny_model_dir)
    ring_picture(isolated / "ring.png", (64, 64))
    said = {
        "--controlnet edgs --control_image ring.png": "--controlnet: edgs: not found in nets; "
        "did you mean edges? there: edges",
        "--controlnet edges": "--controlnet: needs --control_image FILE",
        "--control_weight 0.5": "--control_weight: only means something with --controlnet",
        "--controlnet edges --control_image ring.png --control_processor depth": (
            "--control_processor: depth is not one of canny, invert"
        ),
        "--controlnet edges --control_image nowhere.png": "nowhere.png: no such image",
        "--controlnet edges --control_image ring.png --control_start 0.6 --control_end 0.4": (
            "--control_start: 0.6 must be less than --control_end 0.4"
        ),
        "--controlnet edges --control_image ring.png --control_weight 3": (
            "--control_weight: 3 is not in [0, 2]"
        ),
    }
    lines = "".join(f"a cat {switches} -s 3 -S 1\n" for switches in said)
    lines += "a cat --controlnet edges --control_image ring.png -s 3 -S 1\n"
    for launch in (("--dry-run",), ("--model", str(tiny_model_dir))):
        code, out, err = invoke(*launch, "--controlnet_dir", "nets", stdin=lines)
        assert code == 1
        for number, message in enumerate(said.values(), start=1):
            found = [line for line in (out + err).splitlines() if message in line]
            assert len(found) == 1 and f"line {number}" in found[0], (message, out + err)
    # Only the good line made a picture, and the failed ones used up no prefix.
    made = sorted(p.name for p in (isolated / "outputs" / "img-samples").glob("*.png"))
    assert made == ["000001.1.png"]


def test_embedding_lines_remake_their_pictures_and_other_names_stay_text(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """A batch: the embedding, an unknown <name>, a near miss (text too, with a note), the
    embedding again; then each of the picture's three metadata chunks, fetched and run again."""
    from invoke.outputs import read_command
    from tests.helpers import embedding_file

    embedding_file(isolated / "concepts" / "styles" / "ink.safetensors")
    args = ("--model", str(tiny_model_dir), "--embedding_path", "concepts", "--outdir", "o")
    words = ("<ink>", "<unknown>", "<inc>", "(<ink>)1")  # the last: weight 1 is no weight
    (ink, unknown, near, ink_again), err = seed_7_batch(args, *(f"a red circle {w}" for w in words))
    assert pixels(ink) == pixels(ink_again) != pixels(unknown)
    assert pixels(near) != pixels(ink)
    assert err.count("did you mean") == 1
    assert ">> <inc> is text: no embedding of that name in concepts; did you mean <ink>?" in err

    chunks = png_text(ink)
    assert chunks["Dream"].startswith('"a red circle <ink>" -s 4 -S 7')
    assert json.loads(chunks["sd-metadata"])["image"]["prompt"][0]["prompt"] == "a red circle <ink>"
    assert chunks["parameters"].splitlines()[0] == "a red circle <ink>"
    for key, text in chunks.items():  # !fetch reads each chunk back to the same prompt
        alone = isolated / f"{key}.png"
        info = PngImagePlugin.PngInfo()
        info.add_text(key, text)
        with Image.open(ink) as image:
            image.save(alone, pnginfo=info)
        assert read_command(alone).startswith('"a red circle <ink>" -s 4 -S 7'), key
    code, _, err = invoke(*args, read_command(ink))
    assert code == 0, err
    assert pixels(isolated / "o" / "000005.7.png") == pixels(ink)


def test_embedding_files_that_cannot_be_used_fail_their_line_only(
    isolated: Path, tiny_model_dir: Path
) -> None:
    import torch

    from tests.helpers import embedding_file, embedding_vectors

    folder = isolated / "config" / "invoke-dream" / "embeddings"  # the default folder
    embedding_file(folder / "sd2.safetensors", width=48)
    (folder / "cut.safetensors").write_bytes(b"\x10" + bytes(7) + b"{oops")
    torch.save({"string_to_param": {"*": embedding_vectors(1)}, "name": "old"}, folder / "old.pt")
    lines = "a <sd2> -s 2 -S 1\na <old> -s 2 -S 1\na <cut> -s 2 -S 1\na cat -s 2 -S 1\n"
    code, out, err = invoke("--model", str(tiny_model_dir), stdin=lines)
    assert code == 1
    said = [line for line in (out + err).splitlines() if line.startswith("line ")]
    assert len(said) == 3, said
    assert said[0].startswith("line 1: embedding <sd2> (") and "48 wide" in said[0]
    assert said[1].startswith("line 2: embedding <old> (") and "--allow-pickle" in said[1]
    assert said[2].startswith("line 3: embedding <cut> (") and "is damaged" in said[2]
    assert len(list((isolated / "outputs" / "img-samples").glob("*.png"))) == 1

    code, out, err = invoke("--dry-run", stdin="a <old> -s 2\n")  # refused before any model
    assert code == 1 and "line 1: embedding <old> (" in out + err
    code, _, err = invoke("--model", str(tiny_model_dir), "--allow-pickle", "a <old> -s 2 -S 1")
    assert code == 0, err


def test_the_default_model_ships_a_controlnet_that_puts_the_shape_where_its_silhouette_is(
    isolated: Path,
) -> None:
    """--controlnet silhouette on the default model (its folder's controlnets/silhouette, made
    by scripts/train_example_controlnet.py): a star's silhouette in the top-left corner, and the
    red star is drawn there, where without it the model draws it near the middle."""
    import numpy as np

    from tests.fixtures import world

    silhouette = world.render(world.Labels("white", "black", "star"), (18, 18), 12)
    silhouette.save(isolated / "corner.png")
    prompt = "a red star on a blue background"
    guided = f"{prompt} --controlnet silhouette --control_image corner.png"
    (plain, placed), err = seed_7_batch(("--outdir", "o"), prompt, guided)
    assert ">> ControlNet silhouette loaded" in err

    def red_centre(path: Path) -> tuple[float, float]:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
        ys, xs = np.nonzero((rgb[..., 0] > 150) & (rgb[..., 2] < 120))
        assert len(xs) > 100  # a red shape
        return float(xs.mean()), float(ys.mean())

    x, y = red_centre(placed)
    assert abs(x - 18) <= 4 and abs(y - 18) <= 4
    x, y = red_centre(plain)
    assert 24 <= x <= 40 and 24 <= y <= 40


def test_the_default_model_ships_a_lora_that_draws_outlines(isolated: Path) -> None:
    """<lora:outline:1> on the default model (its folder's loras/outline.safetensors, made by
    scripts/train_example_lora.py): the shape's middle turns to background, a ring stays."""
    import numpy as np

    prompt = "a red circle on a blue background"
    (plain, ring), err = seed_7_batch(("--outdir", "o"), prompt, f"{prompt} <lora:outline:1>")
    assert ">> LoRA outline merged at 1 (" in err

    def red(path: Path) -> np.ndarray:
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
        return (rgb[..., 0] > 150) & (rgb[..., 2] < 120)

    filled, outline = red(plain), red(ring)
    ys, xs = np.nonzero(outline)
    cy, cx = int(ys.mean()), int(xs.mean())
    middle = (slice(cy - 3, cy + 4), slice(cx - 3, cx + 4))
    assert filled.sum() > 300 and outline.sum() > 100  # a red shape both times
    assert filled[middle].mean() > 0.9  # the plain circle is red in the middle
    assert outline[middle].mean() < 0.1  # the outlined one is not
