"""`!fix FILE --outcrop ...`: the line it becomes (fake runner), then real pictures on the tiny
model through the shell, a batch and the one-shot line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError

from invoke import outputs
from invoke.line.parse import parse_request
from invoke.line.request import Request
from invoke.shell.batch import run_one
from invoke.shell.completer import ShellCompleter
from invoke.shell.help import help_lines
from invoke.shell.validator import LineValidator
from tests.helpers import FakeRunner, batch, type_into_shell

SOURCE_LINE = '"a red circle on a blue background" -s 7 -S 42 -W 64 -H 64 -C 5.0 -A k_euler'


def picture(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (35, 65, 215)).save(path)
    return path


@pytest.fixture
def runner(tmp_path: Path) -> FakeRunner:
    outdir = tmp_path / "outputs"
    picture(outdir / "000001.42.png")
    return FakeRunner(outdir, stored={"000001.42.png": SOURCE_LINE})


# -- the line !fix becomes -------------------------------------------------------------------


def test_fix_reuses_the_images_prompt_seed_and_settings_and_extends_it(runner):
    status, _, err = batch(runner, ["!fix 000001.42.png --outcrop top 64 right 32"])
    assert status == 0, err
    [request] = runner.requests
    source = runner.outdir / "000001.42.png"
    assert request == Request(
        prompt="a red circle on a blue background",
        steps=7,
        seed=42,
        cfg_scale=5.0,
        sampler="k_euler",
        init_img=str(source),  # a bare name is found in the output folder, as !fetch does
        outcrop=(("top", 64), ("right", 32)),
    )
    # the strength and size are the session's to fill (0.9 and the grown canvas)
    assert request.to_command() == (
        '"a red circle on a blue background" -s 7 -S 42 -C 5.0 -A k_euler '
        f"-I {source} --outcrop top 64 right 32"
    )


def test_the_line_overrides_the_images_values(runner):
    line = '!fix 000001.42.png "a red circle" -s 20 -S 7 -C 9 -A ddim -f 0.6 -n 2 -o elsewhere'
    status, _, err = batch(runner, [line + " --outcrop left 8"])
    assert status == 0, err
    [request] = runner.requests
    assert (request.prompt, request.steps, request.seed, request.cfg_scale, request.sampler) == (
        "a red circle",
        20,
        7,
        9.0,
        "ddim",
    )
    assert (request.strength, request.iterations, request.outdir) == (0.6, 2, "elsewhere")
    assert request.outcrop == (("left", 8),)


def test_a_file_name_with_spaces_is_quoted(runner):
    picture(runner.outdir / "my pic.png")
    runner.stored["my pic.png"] = SOURCE_LINE
    status, _, err = batch(runner, ["!fix 'my pic.png' -c bottom 16"])
    assert status == 0, err
    assert runner.requests[0].init_img == str(runner.outdir / "my pic.png")


def test_a_foreign_picture_without_metadata_needs_a_prompt_and_says_how(runner, tmp_path):
    # InvokeAI #1320: !fix on a picture it had not made crashed. Here: one line saying what
    # to add, and with a prompt on the line it works (a new seed, as no seed is known).
    photo = picture(tmp_path / "photo.png")
    status, _, err = batch(runner, [f"!fix {photo} --outcrop right 64"])
    assert status == 1 and runner.requests == []
    assert err[0] == (
        f"line 1: !fix: {photo} has no metadata with its prompt and seed; type a prompt after "
        f'the file: !fix {photo} "a red circle on a blue background" --outcrop right 64'
    )
    status, _, err = batch(runner, [f"!fix {photo} a blue sky --outcrop right 64"])
    assert status == 0, err
    [request] = runner.requests
    assert (request.prompt, request.seed, request.init_img) == ("a blue sky", None, str(photo))
    assert ">> photo.png has no metadata: using the line's prompt and a new seed" in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "!fix nowhere.png --outcrop top 64",
            "!fix: nowhere.png: no such file (nor in {outdir}); give the path of an image",
        ),
        ("!fix {outdir} --outcrop top 64", "!fix: {outdir} is a folder; give the path of an image"),
        (
            "!fix 000001.42.png",
            "!fix: say how to extend 000001.42.png, e.g. !fix 000001.42.png --outcrop right 64 "
            "(sides top, right, bottom, left); face restoration needs models this program does "
            "not ship",
        ),
        ("!fix", "!fix: needs a file, e.g. !fix 000001.42.png --outcrop right 64"),
        (
            "!fix 000001.42.png --outcrop north 64",
            "-c/--outcrop: north is not a side; use SIDE PIXELS pairs, SIDE one of top, right, "
            "bottom, left, e.g. top 64",
        ),
        (
            "!fix 000001.42.png --outcrop top -64",
            "-c/--outcrop: 'top -64' needs a whole number of pixels in 1..4096",
        ),
        (
            "!fix 000001.42.png --outcrop top lots",
            "-c/--outcrop: 'top lots' needs a whole number of pixels in 1..4096",
        ),
        (
            "!fix 000001.42.png -I other.png --outcrop top 64",
            "!fix: the image is 000001.42.png, the word after !fix; drop -I",
        ),
        (
            "!fix 000001.42.png -W 128 --outcrop top 64",
            "!fix: the new size is 000001.42.png's own plus the pixels --outcrop adds; drop -W/-H",
        ),
        (
            "!fix 000001.42.png --outcrop top 64 -M mask.png",
            "-c/--outcrop: cannot be combined with -M/--init_mask: it makes its own mask",
        ),
        # InvokeAI's other !fix tools: why not, and what works instead
        (
            "!fix 000001.42.png -U 2 0.75 -C 5",
            "!fix FILE -U enlarges FILE as it is and draws nothing: a prompt, -S, --latents, "
            "--upscaler, -o, -z and --fnformat go with it; to draw it again larger, !fetch FILE "
            "and add -U to its line",
        ),
        (
            "!fix 000001.42.png --embiggen 1.5",
            "--embiggen: embiggen needs the Real-ESRGAN upscaler, which this program does not "
            "ship and cannot download; for a larger picture use -U 2 or -U 4, -W/-H "
            "--hires_fix, or !fix FILE --outcrop SIDE PIXELS",
        ),
        (
            "!fix 000001.42.png -G 0.8",
            "-G: face restoration needs GFPGAN or CodeFormer models, which this program does not "
            "ship and cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing it "
            "does",
        ),
        (
            "!fix 000001.42.png -ft codeformer -G 0.5",
            "-ft: face restoration needs GFPGAN or CodeFormer models, which this program does "
            "not ship and cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing "
            "it does",
        ),
        (
            '!fix 000001.42.png --new_prompt "a cat" --outcrop top 64',
            "--new_prompt: is InvokeAI's; here a new prompt goes after the file: "
            '!fix FILE "a new prompt" --outcrop SIDE PIXELS',
        ),
    ],
)
def test_each_mistake_is_one_line_and_the_batch_goes_on(runner, line, message):
    status, _, err = batch(runner, [line.format(outdir=runner.outdir), "a cat -s 3"])
    assert status == 1
    assert err[0] == "line 1: " + message.format(outdir=runner.outdir)
    assert [r.prompt for r in runner.requests] == ["a cat"]  # the next line still ran


def test_a_file_that_is_not_an_image_says_so(runner, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello", encoding="utf-8")
    status, _, err = batch(runner, [f"!fix {notes} --outcrop top 64"])
    assert status == 1
    assert err[0] == (
        f"line 1: !fix: init image {notes}: not an image PIL can read; "
        "use a PNG, JPEG, WebP or GIF file"
    )


def test_dry_run_prints_the_runners_canonical_line_of_the_request_fix_makes(runner, monkeypatch):
    """!fix's part of --dry-run: the request it would run (the image's stored line, the line's
    switches, the image as init) handed to the runner's canonical(), whose answer is printed."""
    seen: list[Request] = []

    def canonical(request: Request) -> str:
        seen.append(request)
        return "the runner's canonical line"

    monkeypatch.setattr(runner, "canonical", canonical)
    line = "!fix 000001.42.png --outcrop top 64"
    status, out, _ = batch(runner, [line], dry_run=True)
    assert status == 0 and runner.requests == []
    assert out == ["the runner's canonical line"]
    # The very request a real run of the line hands the runner.
    assert batch(runner, [line])[0] == 0
    assert seen == runner.requests and seen[0].outcrop == (("top", 64),)
    assert seen[0].init_img == str(runner.outdir / "000001.42.png") and seen[0].seed == 42


def test_one_shot_line_runs_fix_like_the_shell(runner):
    err: list[str] = []
    status = run_one(runner, "!fix 000001.42.png --outcrop top 64", err=err.append)
    assert status == 0, err
    assert runner.requests[0].outcrop == (("top", 64),)
    assert run_one(runner, "!fix nowhere.png --outcrop top 64", err=err.append) == 1
    assert err[-1].startswith("!fix: nowhere.png: no such file")


def test_help_completion_and_the_validator_know_fix(tmp_path, monkeypatch):
    assert any(line.lstrip().startswith("!fix FILE") for line in help_lines())
    assert any("-c, --outcrop SIDE PIXELS" in line for line in help_lines())
    monkeypatch.chdir(tmp_path)
    picture(tmp_path / "pics" / "cat.png")

    def complete(text: str) -> list[str]:
        found = ShellCompleter(None).get_completions(
            Document(text, len(text)), CompleteEvent(completion_requested=True)
        )
        return [text[: len(text) + c.start_position] + c.text for c in found]

    assert "!fix" in complete("!fi")
    assert complete("!fix pics/c") == ["!fix pics/cat.png"]
    # after the file the line completes as a command line does
    assert complete("!fix pics/cat.png --outc") == ["!fix pics/cat.png --outcrop"]
    assert complete("!fix pics/cat.png -A k_euler") == [
        "!fix pics/cat.png -A k_euler",
        "!fix pics/cat.png -A k_euler_a",
    ]
    validator = LineValidator()
    validator.validate(Document("!fix pics/cat.png --outcrop top 64"))
    with pytest.raises(ValidationError, match="north is not a side"):
        validator.validate(Document("!fix pics/cat.png --outcrop north 64"))


# -- real pictures on the tiny model -----------------------------------------------------------

SEAM = 16  # the strip of the old edge that is blended (images.outcrop_seam for 8-pixel cells)


def new_session(outdir: Path, model: Path):
    from invoke.config.settings import Settings
    from invoke.session import Session
    from invoke.shell.report import TerminalReporter

    out, err = io.StringIO(), io.StringIO()
    return (
        Session(
            Settings(outdir=outdir, model=str(model)),
            reporter=TerminalReporter(out=out, err=err),
        ),
        out,
        err,
    )


def test_fix_in_the_shell_makes_a_new_larger_file_that_its_command_remakes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    outdir = tmp_path / "out"
    session, stdout, stderr = new_session(outdir, tiny_model_dir)
    keys = (
        "a red circle on a blue background -s 4 -S 42 -A k_euler\r"
        "!fix 000001.42.png --outcrop top 16 right 30\r"
        "\x04"
    )
    type_into_shell(session, keys)
    source, fixed = outdir / "000001.42.png", outdir / "000002.42.png"
    before = source.read_bytes()
    assert fixed.is_file(), stdout.getvalue() + stderr.getvalue()
    notes = stderr.getvalue()
    assert "--outcrop: right 30 to 32 (rounded up to a multiple of 8)" in notes
    assert "outcrop: 000001.42.png 64x64 grown to 96x80 (top 16 right 32)" in notes

    command = outputs.read_command(fixed)
    assert command == (
        '"a red circle on a blue background" -s 4 -S 42 -W 96 -H 80 -C 7.5 -A k_euler '
        f"-I {source} -f 0.9 --outcrop top 16 right 32"
    )
    assert f"[2] {fixed}: {command}" in stdout.getvalue()
    with Image.open(source) as a, Image.open(fixed) as b:
        old, new = np.asarray(a), np.asarray(b)
    assert new.shape == (80, 96, 3)
    # the old picture sits 16 down; all of it but the blended strip along the grown sides is
    # kept exactly (top and right grew: the strip is its top rows and right columns)
    assert np.array_equal(new[16 + SEAM : 80, 0 : 64 - SEAM], old[SEAM:, : 64 - SEAM])
    assert not np.array_equal(new[16:80, 0:64], old)  # the strip itself was blended

    # sd-metadata records it as InvokeAI did (postprocessing: tool + the !fix line), and the
    # extension can be read back from sd-metadata alone
    meta = json.loads(outputs.read_chunks(fixed)["sd-metadata"])["image"]
    assert (meta["type"], meta["width"], meta["height"]) == ("img2img", 96, 80)
    assert meta["postprocessing"] == [
        {
            "tool": "outcrop",
            "outcrop": ["top", "16", "right", "32"],
            "dream_command": f'!fix {source} "a red circle on a blue background" -s 4 -S 42 '
            "-C 7.5 -A k_euler -f 0.9 --outcrop top 16 right 32",
        }
    ]
    assert (
        outputs._command_from_sd_metadata(json.loads(outputs.read_chunks(fixed)["sd-metadata"]))
        == command
    )

    # the printed command remakes it exactly, in a new session; the source is never touched
    session, stdout, _ = new_session(outdir, tiny_model_dir)
    [remade] = session.generate(parse_request(command))
    with Image.open(fixed) as a, Image.open(remade) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert source.read_bytes() == before


def test_fix_in_a_batch_and_with_a_prompt_on_a_foreign_picture(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    outdir = tmp_path / "out"
    photo = picture(tmp_path / "photo.png", (40, 48))  # no metadata; 40 is a multiple of 8
    before = photo.read_bytes()
    session, _, _ = new_session(outdir, tiny_model_dir)
    lines = [
        f"!fix {photo} --outcrop left 8",  # no prompt: refused, and the batch goes on
        f"!fix {photo} a blue background -s 3 -S 5 --outcrop left 8",
    ]
    status, _, err = batch(session, lines)
    assert status == 1
    assert err[0].startswith(f"line 1: !fix: {photo} has no metadata with its prompt and seed")
    made = outdir / "000001.5.png"
    with Image.open(made) as image:
        assert image.size == (48, 48)
        assert np.array_equal(
            np.asarray(image)[:, 8 + SEAM :], np.asarray(Image.open(photo))[:, SEAM:]
        )
    assert photo.read_bytes() == before


def test_resolve_rounds_the_pixels_up_to_the_cell_and_strength_defaults_to_invokeais() -> None:
    from invoke.config.settings import Settings, resolve

    line = Request("a cat", init_img="x.png", outcrop=(("top", 1), ("left", 64)))
    resolved, notes = resolve(line, Settings(), (64, 64), 8)
    assert resolved.outcrop == (("top", 8), ("left", 64)) and resolved.strength == 0.9
    assert notes == ["--outcrop: top 1 to 8 (rounded up to a multiple of 8)"]
    # the line's -f wins; a plain img2img line keeps the usual 0.75
    resolved, _ = resolve(
        Request("a cat", init_img="x.png", outcrop=(("top", 8),), strength=0.5),
        Settings(),
        (64, 64),
        4,
    )
    assert resolved.strength == 0.5
    assert resolve(Request("a cat", init_img="x.png"), Settings(), (64, 64))[0].strength == 0.75


def test_an_outcrop_is_never_larger_than_its_command_can_say(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The picture's command names its size (-W/-H): an outcrop past their 4096 would make a
    picture whose own command the parser refuses, so it is refused before anything is drawn;
    one that reaches 4096 exactly makes a picture whose command reads back and runs."""
    outdir = tmp_path / "out"
    wide = picture(tmp_path / "wide.png", (4088, 16))
    session, _, _ = new_session(outdir, tiny_model_dir)
    status, _, err = batch(
        session,
        [
            f"!fix {wide} a blue sky -s 2 -S 5 --outcrop right 16",
            f"!fix {wide} a blue sky -s 2 -S 5 --outcrop right 8",
        ],
    )
    assert status == 1
    assert err[:2] == [
        ">> wide.png has no metadata: using the line's prompt and seed 5",
        "line 1: -c/--outcrop: wide.png is 4088x16 and right 16 would make it 4104x16; a picture "
        "is at most 4096 pixels a side (as -W/-H allow), so add at most 8 left and right "
        "together and 4080 top and bottom",
    ]
    [made] = outdir.glob("*.png")  # only line 2 drew
    command = outputs.read_command(made)
    assert "-W 4096 -H 16" in command
    assert parse_request(command).outcrop == (("right", 8),)
