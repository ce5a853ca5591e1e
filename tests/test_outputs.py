"""Outputs: prefixes, safe names, atomic never-overwriting writes, PNG chunks, logs, read-back."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from invoke import atomic, outputs
from invoke.errors import InvokeError, MetadataError, OutputError
from invoke.line.parse import parse_request
from invoke.line.prompt_syntax import split_prompt
from invoke.line.request import Request
from invoke.line.switches import Variation
from invoke.outputs import (
    OutputFolder,
    a1111_parameters,
    make_grid,
    read_chunks,
    read_command,
    sanitize_file_name,
)
from tests.helpers import readme_request

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"model_id": "tiny-test", "model_hash": "0123456789abcdef"}


def picture(colour: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64)):
    return Image.new("RGB", size, colour)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def foreign_png(path: Path, chunks: dict[str, str], *, zip_keys: tuple[str, ...] = ()) -> Path:
    """A PNG as another program would write it."""
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value, zip=key in zip_keys)
    picture().save(path, pnginfo=info)
    return path


# ---------------------------------------------------------------------------------------------
# Prefixes
# ---------------------------------------------------------------------------------------------


def test_prefixes_count_up_and_the_folder_is_made_on_first_use(tmp_path: Path) -> None:
    out = OutputFolder(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()
    assert [out.reserve_prefix() for _ in range(3)] == ["000001", "000002", "000003"]
    # A second object (another run) on the same folder carries on.
    assert OutputFolder(tmp_path / "a" / "b").reserve_prefix() == "000004"


def test_prefix_never_reuses_one_already_on_disk(tmp_path: Path) -> None:
    (tmp_path / "000041.5.png").write_bytes(b"x")
    (tmp_path / "000099.7").mkdir()  # a folder is not an image: ignored
    out = OutputFolder(tmp_path)
    assert out.reserve_prefix() == "000042"
    (tmp_path / ".next_prefix").unlink()  # a lost counter cannot cause reuse either
    assert out.reserve_prefix() == "000042"
    (tmp_path / "000050.1.png").write_bytes(b"x")  # copied in by someone
    assert out.reserve_prefix() == "000051"


def test_two_processes_get_distinct_prefixes_files_and_log_lines(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from PIL import Image
        from invoke.outputs import OutputFolder
        from invoke.line.request import Request
        out = OutputFolder(sys.argv[1])
        for i in range(25):
            prefix = out.reserve_prefix()
            req = Request(prompt="same", steps=1, seed=7, width=8, height=8, cfg_scale=7.5,
                          sampler="k_lms")
            out.save_image(Image.new("RGB", (8, 8)), req, prefix, model_id="m", model_hash="h")
            print(prefix, flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    prefixes = [line for out, _ in results for line in out.split()]
    assert len(prefixes) == 50 and len(set(prefixes)) == 50
    pngs = [n for n in files(tmp_path) if n.endswith(".png")]
    assert len(pngs) == 50
    log_lines = (tmp_path / "invoke_log.txt").read_text().splitlines()
    assert len(log_lines) == 50 and len(set(log_lines)) == 50
    assert all(line.endswith(': "same" -s 1 -S 7 -W 8 -H 8 -C 7.5 -A k_lms') for line in log_lines)
    md = (tmp_path / "invoke_log.md").read_text()
    assert md.count("## ") == 50 and md.count("```") == 100


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("000001.42.png", "000001.42.png"),
        ("../x.png", "_x.png"),
        ("/etc/passwd", "_etc_passwd.png"),
        ("..\\..\\x.png", "_.._x.png"),
        ("CON.png", "_CON.png"),
        ("nul.42.png", "_nul.42.png"),
        ("com1", "_com1.png"),
        (".bashrc", "bashrc.png"),
        ("a\x00b.png", "a_b.png"),
        ("..", "image.png"),
        ("x.png. ", "x.png"),
    ],
)
def test_names_cannot_escape_or_hide(name: str, expected: str) -> None:
    assert sanitize_file_name(name) == expected


def test_long_names_are_cut_to_a_safe_length() -> None:
    name = sanitize_file_name("x" * 1000 + ".png")
    assert name.endswith(".png") and len(name.encode()) <= 200


def test_fnformat_fields_fill_the_name(tmp_path: Path) -> None:
    out = OutputFolder(tmp_path, fnformat="{prefix}-{sampler}-{steps}-{width}x{height}-{seed}.png")
    assert out.image_name("000007", readme_request()) == "000007-k_lms-20-64x64-42.png"
    req = readme_request(fnformat="{prefix}.{iteration}.{cfg_scale}.png")
    assert out.image_name("000007", req, iteration=3) == "000007.3.7.5.png"


@pytest.mark.parametrize("bad", ["../{seed}.png", "{seed.__class__}.png", "{x}.png", "/tmp/a.png"])
def test_bad_fnformat_is_refused_with_one_line(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvokeError) as err:
        OutputFolder(tmp_path, fnformat=bad)
    assert "--fnformat" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Atomic, never-overwriting writes
# ---------------------------------------------------------------------------------------------


def test_existing_files_are_never_overwritten_when_hard_links_work(tmp_path: Path) -> None:
    (tmp_path / "000001.42.png").write_bytes(b"precious")
    (tmp_path / "000001.42-1.png").write_bytes(b"also precious")
    out = OutputFolder(tmp_path)
    path = out.save_image(picture(), readme_request(), "000001", **MODEL)
    assert path == tmp_path / "000001.42-2.png"
    assert (tmp_path / "000001.42.png").read_bytes() == b"precious"
    assert (tmp_path / "000001.42-1.png").read_bytes() == b"also precious"
    with Image.open(path) as im:
        assert im.size == (64, 64)
    assert not [n for n in files(tmp_path) if n.startswith(".tmp")]


def test_without_hard_links_existing_files_are_still_never_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some mounts refuse os.link (EPERM): the O_EXCL claim must still skip taken names."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(atomic.os, "link", no_links)
    (tmp_path / "000001.42.png").write_bytes(b"precious")
    out = OutputFolder(tmp_path)
    path = out.save_image(picture(), readme_request(), "000001", **MODEL)
    assert path == tmp_path / "000001.42-1.png"
    assert (tmp_path / "000001.42.png").read_bytes() == b"precious"
    with Image.open(path) as im:
        assert im.size == (64, 64)
    assert not [n for n in files(tmp_path) if n.startswith(".tmp")]


def test_paths_keep_the_folder_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = OutputFolder("outputs/img-samples")
    path = out.save_image(picture(), readme_request(), out.reserve_prefix(), **MODEL)
    assert str(path) == os.path.join("outputs", "img-samples", "000001.42.png")
    log = Path("outputs/img-samples/invoke_log.txt").read_text()
    assert log.startswith("outputs/img-samples/000001.42.png: ")


def _boom(err_no: int):
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(err_no, os.strerror(err_no))

    return fail


@pytest.mark.parametrize("where", ["fsync", "link", "write"])
def test_disk_full_raises_one_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    out = OutputFolder(tmp_path)
    prefix = out.reserve_prefix()
    before = files(tmp_path)
    if where == "write":
        real_fdopen = os.fdopen

        class FullFile:
            def __init__(self, fh) -> None:
                self.fh = fh

            def __enter__(self):
                return self

            def __exit__(self, *exc: object) -> None:
                self.fh.close()

            def write(self, data: bytes) -> int:
                self.fh.write(data[: len(data) // 2])  # half of it lands, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(atomic.os, "fdopen", lambda *a, **k: FullFile(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(atomic.os, where, _boom(errno.ENOSPC))
    with pytest.raises(OutputError) as err:
        out.save_image(picture(), readme_request(), prefix, **MODEL)
    monkeypatch.undo()
    message = str(err.value)
    assert "000001.42.png" in message and "disk is full" in message and "\n" not in message
    assert files(tmp_path) == before  # no temp file, no half file, no log line


def test_output_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    for folder in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        with pytest.raises(OutputError, match="taken") as err:
            OutputFolder(folder).reserve_prefix()
        assert "-o/--outdir" in str(err.value)


def test_unwritable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = OutputFolder(tmp_path)
    prefix = out.reserve_prefix()
    before = files(tmp_path)
    monkeypatch.setattr(atomic.tempfile, "mkstemp", _boom(errno.EACCES))
    with pytest.raises(OutputError, match="permission denied"):
        out.save_image(picture(), readme_request(), prefix, **MODEL)
    monkeypatch.undo()
    assert files(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_for_real(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            OutputFolder(folder).reserve_prefix()
    finally:
        folder.chmod(0o700)


# ---------------------------------------------------------------------------------------------
# Chunks and read-back
# ---------------------------------------------------------------------------------------------


def test_chunks_have_the_reference_shape(tmp_path: Path) -> None:
    req = readme_request(prompt="a kitten's toy [blurry, dark]")
    path = OutputFolder(tmp_path).save_image(picture(), req, "000001", **MODEL)
    chunks = read_chunks(path)
    assert chunks["Dream"] == req.to_command()
    meta = json.loads(chunks["sd-metadata"])
    assert set(meta) == {"model", "model_id", "model_hash", "app_id", "app_version", "image"}
    assert meta["model"] == "stable diffusion" and meta["model_id"] == "tiny-test"
    image = meta["image"]
    assert set(image) == {
        "type", "prompt", "seed", "variations", "sampler", "steps", "cfg_scale", "threshold",
        "perlin", "width", "height", "seamless", "hires_fix", "postprocessing", "init_img",
        "init_mask", "strength", "orig_hash",
    }  # fmt: skip
    assert image["type"] == "txt2img" and image["hires_fix"] is False
    assert image["prompt"] == [{"prompt": "a kitten's toy [blurry, dark]", "weight": 1.0}]
    assert (image["seed"], image["steps"], image["cfg_scale"]) == (42, 20, 7.5)
    assert len(image["orig_hash"]) == 64
    assert chunks["parameters"] == (
        "a kitten's toy\n"
        "Negative prompt: blurry, dark\n"
        "Steps: 20, Sampler: LMS, CFG scale: 7.5, Seed: 42, Size: 64x64, "
        "Model hash: 0123456789, Model: tiny-test, Version: invoke-dream 0.1.0"
    )


def test_img2img_and_variation_metadata() -> None:
    req = readme_request(
        init_img="000001.42.png", strength=0.7, with_variations=(Variation(99, 0.25),)
    )
    text = a1111_parameters(req, model_id="m")
    assert "Denoising strength: 0.7" in text and "Variation seed: 99" in text
    meta = outputs.sd_metadata(req, model_id="m", model_hash="h")["image"]
    assert meta["type"] == "img2img" and meta["strength"] == 0.7
    assert meta["init_img"] == "000001.42.png"
    assert meta["variations"] == [{"seed": 99, "weight": 0.25}]


def test_hires_fix_metadata_reads_back_with_its_strength(tmp_path: Path) -> None:
    req = readme_request(width=128, height=96, hires_fix=True, strength=0.6)
    meta = outputs.sd_metadata(req, model_id="m", model_hash="h")["image"]
    # InvokeAI 2.3's shape: a txt2img image with the flag; the strength sets the second pass.
    assert meta["type"] == "txt2img" and meta["hires_fix"] is True and meta["strength"] == 0.6
    assert "Denoising strength" not in a1111_parameters(req, model_id="m")
    path = OutputFolder(tmp_path).save_image(picture(), req, "000001", **MODEL)
    assert read_command(path) == req.to_command()
    assert "--hires_fix -f 0.6" in req.to_command()
    # Without the Dream chunk, sd-metadata alone gives the switch back.
    only_meta = foreign_png(
        tmp_path / "m.png",
        {"sd-metadata": json.dumps(outputs.sd_metadata(req, model_id="m", model_hash="h"))},
    )
    assert read_command(only_meta) == req.to_command()


def test_invokeai_hires_fix_image_reads_back_as_the_switch(tmp_path: Path) -> None:
    image = {
        "type": "txt2img",
        "prompt": [{"prompt": "a castle", "weight": 1.0}],
        "seed": 7,
        "steps": 30,
        "width": 1024,
        "height": 768,
        "hires_fix": True,
    }
    path = foreign_png(tmp_path / "c.png", {"sd-metadata": json.dumps({"image": image})})
    assert read_command(path) == '"a castle" -s 30 -S 7 -W 1024 -H 768 --hires_fix'
    dream = foreign_png(tmp_path / "d.png", {"Dream": '"a castle" -s 30 -S 7 --hires_fix'})
    assert read_command(dream) == '"a castle" -s 30 -S 7 --hires_fix'


@pytest.mark.parametrize(
    "req",
    [
        readme_request(),
        readme_request(prompt="a kitten's toy"),
        readme_request(prompt='say "cheese" [no \\ backslash]'),
        readme_request(prompt="東京の夜景, ネオン"),
        readme_request(prompt="a cat:0.5 a dog:0.5", skip_normalize=True),
        readme_request(init_img="000001.42.png", strength=0.7, fit=True),
        readme_request(with_variations=(Variation(12, 0.1), Variation(34, 0.2))),
        readme_request(seamless=True),
        readme_request(seamless=True, seamless_axes=("y",)),
    ],
    ids=[
        "plain",
        "apostrophe",
        "quotes",
        "non-latin",
        "weights",
        "img2img",
        "variations",
        "seamless",
        "seamless-y",
    ],
)
def test_round_trip_command(tmp_path: Path, req: Request) -> None:
    path = OutputFolder(tmp_path).save_image(picture(), req, "000001", **MODEL)
    command = read_command(path)
    assert command == req.to_command()
    assert parse_request(command) == req


def test_invokeai_dream_chunk_with_escaped_apostrophe_and_their_switches(tmp_path: Path) -> None:
    path = foreign_png(
        tmp_path / "000012.1234.png",
        {
            "Dream": '"a kitten\\\'s toy" -s 50 -S 1234 -W 512 -H 512 -C 7.5 -A k_lms'
            " -G 0.8 -U 2 0.75",
            "sd-metadata": json.dumps({"app_id": "invoke-ai/InvokeAI", "image": {}}),
        },
    )
    assert (
        read_command(path)
        == '"a kitten\'s toy" -s 50 -S 1234 -W 512 -H 512 -C 7.5 -A k_lms -U 2 0.75'
    )


def test_invokeai_sd_metadata_with_prompt_list(tmp_path: Path) -> None:
    meta = {
        "model": "stable diffusion",
        "model_id": "stable-diffusion-1.5",
        "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
        "app_id": "invoke-ai/InvokeAI",
        "app_version": "2.2.5",
        "image": {
            "prompt": [{"prompt": "a lighthouse at dusk", "weight": 1.0}],
            "steps": 30,
            "cfg_scale": 7.5,
            "threshold": 0,
            "perlin": 0,
            "height": 512,
            "width": 768,
            "seed": 3357757885,
            "seamless": False,
            "hires_fix": False,
            "type": "img2img",
            "postprocessing": None,
            "sampler": "k_euler_a",
            "variations": [{"seed": 111, "weight": 0.1}],
            "init_img": "outputs/init.png",
            "strength": 0.6,
        },
    }
    path = foreign_png(
        tmp_path / "x.png", {"sd-metadata": json.dumps(meta)}, zip_keys=("sd-metadata",)
    )
    assert read_command(path) == (
        '"a lighthouse at dusk" -s 30 -S 3357757885 -W 768 -H 512 -C 7.5 -A k_euler_a '
        "-I outputs/init.png -f 0.6 -V 111:0.1"
    )


def invokeai_txt2img_metadata(prompt: str, seed: int) -> dict:
    """sd-metadata as InvokeAI 2.3.5's metadata_dumps wrote it for a txt2img picture: the
    `sampler` from its sampler_name, and no `seamless` or `init_img` (a missing comma in its
    list of fields fused the two names)."""
    return {
        "model": "stable diffusion",
        "model_id": "stable-diffusion-1.5",
        "model_hash": "cc6cb27103417325ff94f52b7a5d2dde45a7515b25c255d8e396c90014281516",
        "app_id": "invoke-ai/InvokeAI",
        "app_version": "2.3.5",
        "image": {
            "prompt": [{"prompt": prompt, "weight": 1.0}],
            "steps": 30,
            "seed": seed,
            "hires_fix": False,
            "cfg_scale": 9.0,
            "threshold": 0.0,
            "perlin": 0.0,
            "width": 512,
            "height": 512,
            "init_mask": None,
            "facetool": "gfpgan",
            "facetool_strength": 0.0,
            "upscale": None,
            "h_symmetry_time_pct": None,
            "v_symmetry_time_pct": None,
            "postprocessing": None,
            "sampler": "k_euler_a",
            "variations": [],
            "type": "txt2img",
        },
    }


def invokeai_fixed(meta: dict, *entries: tuple[str, str]) -> str:
    """What InvokeAI 2.3's !fix left in the new picture: only an sd-metadata chunk (its
    write_metadata rewrote the file without the Dream chunk), holding the source's metadata with
    {tool, dream_command} appended to image.postprocessing for each !fix."""
    fixed = json.loads(json.dumps(meta))
    fixed["image"]["postprocessing"] = [{"tool": t, "dream_command": c} for t, c in entries]
    return json.dumps(fixed)


def test_fetch_of_an_invokeai_outcrop_is_img2img_on_its_source(isolated: Path) -> None:
    from invoke.config.settings import Settings
    from invoke.session import Session
    from invoke.shell.report import TerminalReporter

    outdir = isolated / "outputs"
    outdir.mkdir()
    meta = invokeai_txt2img_metadata("a lighthouse on a cliff", 1234)
    source = outdir / "000012.1234.png"
    dream = '"a lighthouse on a cliff" -s 30 -S 1234 -W 512 -H 512 -C 9.0 -A k_euler_a'
    info = PngImagePlugin.PngInfo()
    info.add_text("Dream", dream + " # model_id=stable-diffusion-1.5")
    info.add_text("sd-metadata", json.dumps(meta))
    picture(size=(64, 64)).save(source, pnginfo=info)
    # `!fix 000012.1234.png -c top 64 right 30`: each side grown by its pixels rounded up to 64
    fix = (
        f"!fix {source} -s 50 -S 1234 -W 512 -H 512 -C 7.5 -A k_lms -c top 64 right 30 "
        "# model_id=stable-diffusion-1.5"
    )
    outcropped = outdir / "000012.1234.outcrop.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-metadata", invokeai_fixed(meta, ("outcrop", fix)))
    picture(size=(128, 128)).save(outcropped, pnginfo=info)

    assert read_command(source) == dream
    command = read_command(outcropped)
    assert command == (
        f'"a lighthouse on a cliff" -s 50 -S 1234 -C 7.5 -A k_lms -I {source} -f 0.9 '
        "--outcrop top 64 right 64"
    )
    # run, it makes a picture of the outcropped one's size from the source
    session = Session(Settings(outdir=outdir), reporter=TerminalReporter(), dry_run=True)
    assert "-W 128 -H 128" in session.canonical(parse_request(command))


def test_invokeai_outcrop_with_spaces_its_switches_and_a_later_face_fix(tmp_path: Path) -> None:
    meta = invokeai_txt2img_metadata("a red barn", 77)
    source = "/home/me/my pics/000003.77.png"
    outcrop = (
        f"!fix {source} -s 25 -S 77 -W 512 -H 512 -C 6.0 --perlin 0.1 -A k_euler -c left 100 "
        "# model_id=stable-diffusion-1.5"
    )
    # a face fix of the outcropped picture appends its own entry; the outcrop still sets it
    faces = (
        "!fix /home/me/my pics/000003.77.outcrop.png -s 50 -S 77 -W 512 -H 512 -C 7.5 -A k_lms "
        "-G 0.8 -ft gfpgan # model_id=stable-diffusion-1.5"
    )
    path = foreign_png(
        tmp_path / "000003.77.outcrop.gfpgan.png",
        {"sd-metadata": invokeai_fixed(meta, ("outcrop", outcrop), ("gfpgan", faces))},
    )
    assert read_command(path) == (
        "\"a red barn\" -s 25 -S 77 -C 6.0 -A k_euler -I '/home/me/my pics/000003.77.png' -f 0.9 "
        "--outcrop left 128"
    )


def test_invokeai_outcrop_of_a_picture_without_metadata(tmp_path: Path) -> None:
    """With no sd-metadata in the source, InvokeAI 2.3 wrote the !fix line's own fields at the
    top level and an `image` holding only `postprocessing`."""
    line = invokeai_txt2img_metadata("a blue sky", 0)["image"]  # --new_prompt "a blue sky"
    fix = "!fix photo.png -s 50 -S 0 -W 512 -H 512 -C 7.5 -A k_lms -c bottom 64 # model_id=sd"
    meta = {**line, "image": {"postprocessing": [{"tool": "outcrop", "dream_command": fix}]}}
    path = foreign_png(tmp_path / "photo.outcrop.png", {"sd-metadata": json.dumps(meta)})
    assert read_command(path) == (
        '"a blue sky" -s 50 -S 0 -C 7.5 -A k_lms -I photo.png -f 0.9 --outcrop bottom 64'
    )


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("!fix a.png", "dream_command '!fix a.png' is not InvokeAI's !fix FILE -s STEPS"),
        ("!fix a.png -s 5 -S 1", "dream_command '!fix a.png -s 5 -S 1' has no -c SIDE PIXELS"),
        ("!fix a.png -s 5 -c top 64 'x", "cannot be split into words (No closing quotation)"),
        ("!fix a.png -s 5 -c north 64", "-c/--outcrop: north is not a side"),
    ],
)
def test_an_unreadable_invokeai_outcrop_says_why(
    tmp_path: Path, command: str, message: str
) -> None:
    meta = invokeai_txt2img_metadata("a red barn", 77)
    path = foreign_png(
        tmp_path / "a.png", {"sd-metadata": invokeai_fixed(meta, ("outcrop", command))}
    )
    assert message in _metadata_error(path)


def test_invokeai_23_dream_line_ends_in_a_model_id_comment(tmp_path: Path) -> None:
    dream = (
        '"a cat" -s 50 -S 42 -W 512 -H 512 -C 7.5 --perlin 0.1 -A k_lms '
        "# model_id=stable-diffusion-1.5"
    )
    path = foreign_png(tmp_path / "a.png", {"Dream": dream})
    assert read_command(path) == '"a cat" -s 50 -S 42 -W 512 -H 512 -C 7.5 -A k_lms'


@pytest.mark.parametrize(
    ("req", "seamless_axes", "tiling"),
    [
        (readme_request(seamless=True), ["x", "y"], True),
        (readme_request(seamless=True, seamless_axes=("x",)), ["x"], False),
    ],
    ids=["both", "x"],
)
def test_seamless_in_every_chunk_and_each_one_reads_back(
    tmp_path: Path, req: Request, seamless_axes: list[str], tiling: bool
) -> None:
    path = OutputFolder(tmp_path).save_image(picture(), req, "000001", **MODEL)
    chunks = read_chunks(path)
    image = json.loads(chunks["sd-metadata"])["image"]
    assert image["seamless"] is True and image["seamless_axes"] == seamless_axes
    # AUTOMATIC1111 tiles both axes or none: one axis is not written as Tiling.
    assert ("Tiling: True" in chunks["parameters"]) is tiling
    assert read_command(path) == req.to_command()
    meta_only = foreign_png(tmp_path / "meta.png", {"sd-metadata": chunks["sd-metadata"]})
    assert read_command(meta_only) == req.to_command()
    if tiling:
        a1111 = foreign_png(tmp_path / "a1111.png", {"parameters": chunks["parameters"]})
        assert read_command(a1111) == req.to_command()


def test_invokeai_seamless_dream_line_and_sd_metadata_keep_the_switch(tmp_path: Path) -> None:
    """InvokeAI 2.x wrote `--seamless` into Dream and `"seamless": true` into sd-metadata."""
    dream = '"a brick wall" -s 30 -S 7 -W 512 -H 512 -C 7.5 --seamless -A k_euler'
    path = foreign_png(
        tmp_path / "a.png",
        {"Dream": dream, "sd-metadata": json.dumps({"app_id": "invoke-ai/InvokeAI"})},
    )
    expected = '"a brick wall" -s 30 -S 7 -W 512 -H 512 -C 7.5 -A k_euler --seamless'
    assert read_command(path) == expected
    axes = foreign_png(tmp_path / "b.png", {"Dream": dream + " --seamless_axes x"})
    assert read_command(axes) == expected + " --seamless_axes x"
    meta = {"image": {"prompt": "a brick wall", "seed": 7, "steps": 30, "seamless": True}}
    path = foreign_png(tmp_path / "c.png", {"sd-metadata": json.dumps(meta)})
    assert read_command(path) == '"a brick wall" -s 30 -S 7 --seamless'
    meta["image"]["seamless_axes"] = ["z"]
    path = foreign_png(tmp_path / "d.png", {"sd-metadata": json.dumps(meta)})
    assert "--seamless_axes: z is not a list of axes" in _metadata_error(path)


def test_invokeai_sd_metadata_with_string_prompt_and_weighted_parts(tmp_path: Path) -> None:
    plain = {"image": {"prompt": "an old barn", "seed": 5, "steps": 10}}
    path = foreign_png(tmp_path / "a.png", {"sd-metadata": json.dumps(plain)})
    assert read_command(path) == '"an old barn" -s 10 -S 5'
    parts = {
        "image": {
            "prompt": [{"prompt": "a cat", "weight": 0.7}, {"prompt": "a dog", "weight": 0.3}]
        }
    }
    path = foreign_png(tmp_path / "b.png", {"sd-metadata": json.dumps(parts)})
    command = read_command(path)
    assert command == '"a cat:0.7 a dog:0.3"'


def test_a1111_parameters(tmp_path: Path) -> None:
    text = (
        "a castle on a hill,\nhighly detailed\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 25, Sampler: Euler a, CFG scale: 6.5, Seed: 1234, Size: 512x768, "
        'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "a: 1, b: 2", '
        "Version: v1.6.0"
    )
    path = foreign_png(tmp_path / "a1111.png", {"parameters": text})
    assert read_command(path) == (
        '"a castle on a hill, highly detailed [blurry, lowres]" -s 25 -S 1234 -W 512 -H 768 '
        "-C 6.5 -A k_euler_a"
    )


def test_our_parameters_chunk_alone_reads_back(tmp_path: Path) -> None:
    req = readme_request(prompt="a kitten's toy [blurry]", sampler="k_dpmpp_2_a")
    path = foreign_png(tmp_path / "p.png", {"parameters": a1111_parameters(req, model_id="m")})
    assert read_command(path) == req.to_command()


def test_parameters_chunk_escapes_colons_inside_weighted_sub_prompts(tmp_path: Path) -> None:
    req = readme_request(prompt="ratio 16\\:9 poster:0.5 a dog:0.5")
    text = a1111_parameters(req, model_id="m")
    path = foreign_png(tmp_path / "p.png", {"parameters": text})
    back = parse_request(read_command(path))
    # read as AUTOMATIC1111 reads it: `:0.5` is text there (no sub-prompts), so it stays text
    assert split_prompt(back.prompt).positive == (("ratio 16:9 poster:0.5 a dog:0.5", 1.0),)


# ---------------------------------------------------------------------------------------------
# Untrusted metadata
# ---------------------------------------------------------------------------------------------


def _metadata_error(path: Path) -> str:
    with pytest.raises(MetadataError) as err:
        read_command(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    return message


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert "no such file" in _metadata_error(tmp_path / "nope.png")
    assert "folder" in _metadata_error(tmp_path)


def test_not_a_png(tmp_path: Path) -> None:
    jpg = tmp_path / "photo.jpg"
    picture().save(jpg)
    assert "not a PNG" in _metadata_error(jpg)
    txt = tmp_path / "notes.png"
    txt.write_text("hello")
    assert "not a PNG" in _metadata_error(txt)


def test_png_without_chunks(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    picture().save(path)
    assert "no Dream, sd-metadata or parameters" in _metadata_error(path)


def test_malformed_json(tmp_path: Path) -> None:
    path = foreign_png(tmp_path / "bad.png", {"sd-metadata": '{"image": {"prompt": "x",'})
    assert "not valid JSON" in _metadata_error(path)
    path = foreign_png(tmp_path / "list.png", {"sd-metadata": "[1, 2]"})
    assert "not a JSON object" in _metadata_error(path)
    path = foreign_png(
        tmp_path / "types.png", {"sd-metadata": '{"image": {"prompt": "x", "steps": "many"}}'}
    )
    assert "not a number" in _metadata_error(path)


def test_huge_chunk_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = foreign_png(tmp_path / "huge.png", {"Dream": '"' + "a" * 200_000 + '" -s 5'})
    start = time.monotonic()
    assert "64 KiB" in _metadata_error(path)
    assert time.monotonic() - start < 1


def test_compressed_chunk_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ztxt.png"
    picture().save(path)
    data = path.read_bytes()
    body = b"Dream\x00\x00" + zlib.compress(b"a" * 50_000_000, 9)
    chunk = (
        len(body).to_bytes(4, "big")
        + b"zTXt"
        + body
        + zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    )
    path.write_bytes(data[:33] + chunk + data[33:])  # right after IHDR
    assert "64 KiB" in _metadata_error(path)


@pytest.mark.parametrize(
    "dream",
    ['"a cat" -s 20; rm -rf ~', '"a cat" -s 20 && touch {marker}', "a cat -s `touch {marker}`"],
)
def test_shell_metacharacters_after_the_prompt_are_rejected(tmp_path: Path, dream: str) -> None:
    marker = tmp_path / "pwned"
    path = foreign_png(tmp_path / "evil.png", {"Dream": dream.format(marker=marker)})
    _metadata_error(path)
    assert not marker.exists()


@pytest.mark.parametrize("prompt", ["$(touch {marker})", "`touch {marker}`", "a cat; rm -rf ~"])
def test_shell_metacharacters_in_the_prompt_stay_text(tmp_path: Path, prompt: str) -> None:
    marker = tmp_path / "pwned"
    text = prompt.format(marker=marker)
    path = foreign_png(tmp_path / "evil.png", {"Dream": f"{json.dumps(text)} -s 5"})
    command = read_command(path)
    assert parse_request(command).prompt == text
    assert not marker.exists()


def test_control_characters_are_refused(tmp_path: Path) -> None:
    path = foreign_png(tmp_path / "esc.png", {"Dream": '"a \x1b[2J cat" -s 5\nrm -rf ~'})
    assert "control character" in _metadata_error(path)


def test_truncated_png_keeps_what_it_read(tmp_path: Path) -> None:
    path = OutputFolder(tmp_path).save_image(picture(), readme_request(), "000001", **MODEL)
    data = path.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) - 30])  # IDAT tail and IEND gone, text chunks intact
    assert read_command(cut) == readme_request().to_command()


# ---------------------------------------------------------------------------------------------
# Logs, grids, intermediates
# ---------------------------------------------------------------------------------------------


def test_logs_have_one_entry_per_image(tmp_path: Path) -> None:
    out = OutputFolder(tmp_path)
    prefix = out.reserve_prefix()
    a = out.save_image(picture(), readme_request(seed=1), prefix, **MODEL)
    b = out.save_image(picture(), readme_request(seed=2), prefix, **MODEL)
    assert (tmp_path / "invoke_log.txt").read_text().splitlines() == [
        f"{a}: {readme_request(seed=1).to_command()}",
        f"{b}: {readme_request(seed=2).to_command()}",
    ]
    md = (tmp_path / "invoke_log.md").read_text()
    assert md.startswith(
        f"## 000001.1.png\n![](000001.1.png)\n\n```\n{readme_request(seed=1).to_command()}\n```\n\n"
    )
    assert "## 000001.2.png" in md


@pytest.mark.parametrize(
    ("n", "cols", "rows"), [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2), (5, 3, 2), (9, 3, 3)]
)
def test_grid_layout_is_near_square(n: int, cols: int, rows: int) -> None:
    grid = make_grid([picture((i * 20, 0, 0), (16, 8)) for i in range(n)])
    assert grid.size == (16 * cols, 8 * rows)
    assert grid.getpixel((16 * ((n - 1) % cols), 8 * ((n - 1) // cols))) == ((n - 1) * 20, 0, 0)


def test_save_grid_names_and_metadata(tmp_path: Path) -> None:
    out = OutputFolder(tmp_path)
    prefix = out.reserve_prefix()
    reqs = [readme_request(seed=s) for s in (42, 43, 44)]
    path = out.save_grid([picture()] * 3, reqs, prefix, command=reqs[0].to_command(), **MODEL)
    assert path.name == "000001.42.grid.png"
    with Image.open(path) as im:
        assert im.size == (128, 128)
    meta = json.loads(read_chunks(path)["sd-metadata"])
    assert [im["seed"] for im in meta["images"]] == [42, 43, 44]
    assert "image" not in meta
    assert read_command(path) == reqs[0].to_command()


def test_intermediates(tmp_path: Path) -> None:
    from safetensors import safe_open

    out = OutputFolder(tmp_path)
    steps = out.intermediates("000003", 42)
    latents = np.arange(4 * 8 * 8, dtype=np.float32).reshape(1, 4, 8, 8)
    for step, timestep in ((0, 999), (1, 800), (2, 600)):
        steps.save_step(step, timestep, latents + step, picture((step * 100, 0, 0), (8, 8)))
    strip = steps.finish()
    folder = tmp_path / "intermediates" / "000003.42"
    assert strip == folder / "steps.png"
    assert files(folder) == [
        "step-0000.png", "step-0000.safetensors", "step-0001.png", "step-0001.safetensors",
        "step-0002.png", "step-0002.safetensors", "steps.png",
    ]  # fmt: skip
    with safe_open(folder / "step-0002.safetensors", framework="numpy") as f:
        assert f.metadata() == {"step": "2", "timestep": "600.0"}
        assert np.array_equal(f.get_tensor("latents"), latents + 2)
    with Image.open(strip) as im:
        assert im.size == (24, 8)
        assert [im.getpixel((x, 0))[0] for x in (0, 8, 16)] == [0, 100, 200]


def test_invokeai_switches_we_refuse_are_dropped_from_foreign_dream_lines_and_ours_are_not() -> (
    None
):
    # One list of InvokeAI switches this program lacks (the parser refuses them with a reason);
    # !fetch must drop each from an InvokeAI Dream line, and never drop one of our own switches
    # (--outcrop/-c used to be foreign: now they are ours and must survive).
    from invoke.line.parse import _NOT_YET
    from invoke.line.table import SWITCHES

    ours = {name for switch in SWITCHES for name in switch.names}
    assert set(_NOT_YET) <= set(outputs._FOREIGN_SWITCHES)
    assert not ours & set(outputs._FOREIGN_SWITCHES)
    # -U was InvokeAI's Real-ESRGAN; the same words ask our upscalers for the same enlargement.
    line = '"a cat" -s 20 -I x.png -U 2 0.75 -G 0.8 -ft codeformer --outcrop top 64'
    assert (
        outputs._command_from_dream(line, ours=False)
        == '"a cat" -s 20 -I x.png --outcrop top 64 -U 2 0.75'
    )
