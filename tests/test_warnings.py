"""Honest warnings before the work (invoke/caveats.py): an init image far larger than the model's
size, -W/-H far larger, and words the default model never learned; said before the model loads
and in a --dry-run. All on the real default model's folder, none of it loading the model."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from invoke import caveats
from invoke.config.settings import EMBEDDED_MODEL_DIR, Settings
from invoke.errors import ModelError
from invoke.line.parse import parse_request
from invoke.session import Session
from invoke.shell.report import TerminalReporter
from tests.fixtures import world
from tests.helpers import RecordingReporter, batch

ROOT = Path(__file__).resolve().parents[1]
GUIDE = "tree on a hill with a river -I test-pictures/tree-and-river-sketch.png -f 0.85"
FIT_LINE = '"tree on a hill with a river" -I test-pictures/tree-and-river-sketch.png -f 0.85 --fit'


def dry_run(tmp_path: Path, lines: list[str], **settings) -> tuple[list[str], list[str]]:
    """`invoke --dry-run` on these lines: the canonical commands (stdout) and the `>>` notes."""
    notes = io.StringIO()
    session = Session(
        Settings(outdir=tmp_path / "out", **settings),
        reporter=TerminalReporter(err=notes, progress=False),
        dry_run=True,
    )
    status, out, err = batch(session, lines, dry_run=True)
    assert status == 0, err
    return out, notes.getvalue().splitlines()


def picture(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (35, 65, 215)).save(path)
    return path


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the guide's command names test-pictures/ from the repository


def test_the_img2img_guide_command_dry_run_warns_with_the_fit_line(tmp_path: Path, in_repo):
    out, notes = dry_run(tmp_path, [GUIDE])
    size = [n for n in notes if "tree-and-river-sketch.png" in n]
    assert size == [
        ">> init image tree-and-river-sketch.png is 512x384, 8x the size model default draws "
        "best (64x64): it will draw at 512x384, slowly, and that far above its size a model "
        f"draws repeated, tiled pictures; add --fit to draw at 64x48: {FIT_LINE}"
    ]
    assert len(out) == 1 and "--fit" not in out[0]  # stdout: only the canonical command
    # The line it names draws at the model's size, and is not warned about.
    out, notes = dry_run(tmp_path, [FIT_LINE])
    assert "-W 64 -H 64" in out[0] and "--fit" in out[0]
    assert not [n for n in notes if "slowly" in n or "-W/-H" in n]


def test_the_warning_comes_before_the_model_loads(
    tmp_path: Path, in_repo, monkeypatch: pytest.MonkeyPatch
):
    reporter = RecordingReporter()
    session = Session(Settings(outdir=tmp_path / "out"), reporter=reporter)

    def load(entry, source):  # stands for the 4-16 s load, and stops the line there
        reporter.note("LOADING")
        raise ModelError("stopped before loading")

    monkeypatch.setattr(session.models, "_load", load)
    with pytest.raises(ModelError):
        session.generate(parse_request(GUIDE))
    assert reporter.notes[0].startswith("init image tree-and-river-sketch.png is 512x384")
    assert reporter.notes[0].endswith(FIT_LINE)
    assert reporter.notes[-1] == "LOADING"


def test_far_means_a_side_more_than_twice_the_models(tmp_path: Path):
    twice = picture(tmp_path / "twice.png", (128, 128))
    wider = picture(tmp_path / "wider.png", (132, 64))
    lines = [f"a red circle -I {twice}", f"a red circle -I {wider}"]
    _, notes = dry_run(tmp_path, lines)
    assert [n for n in notes if "twice.png" in n] == []
    (wide,) = [n for n in notes if "wider.png" in n]
    assert "is 132x64, 2.06x the size model default draws best (64x64)" in wide
    assert "add --fit to draw at 64x28:" in wide  # 132x64 fitted into 64x64, cells of 4


def test_an_init_image_with_big_explicit_sizes_gets_a_fit_line_at_the_models_size(
    tmp_path: Path, in_repo
):
    _, notes = dry_run(tmp_path, [GUIDE + " -W 512 -H 512"])
    (note,) = [n for n in notes if "tree-and-river-sketch.png" in n]
    assert note.endswith("add --fit to draw at 64x48: " + FIT_LINE)  # -W/-H dropped


def test_explicit_sizes_are_said_once_and_not_with_hires_fix(tmp_path: Path):
    lines = [
        "a red circle -W 512 -H 768",
        "a red circle -W 512 -H 768 -S 3",
        "a red circle -W 512 -H 768 --hires_fix",
        "a red circle -W 128 -H 128",  # twice the side: fine
    ]
    _, notes = dry_run(tmp_path, lines)
    said = [n for n in notes if "-W/-H" in n]
    assert said == [
        ">> -W/-H: 512x768 is 12x the size model default draws best (64x64): slow, and that far "
        "above its size a model draws repeated, tiled pictures; leave out -W/-H to draw at 64x64, "
        "or add --hires_fix to draw at 64x64 first"
    ]


def test_fit_into_a_big_box_is_said_and_into_the_models_size_is_not(tmp_path: Path, in_repo):
    sketch = "a red circle -I test-pictures/tree-and-river-sketch.png --fit"
    _, notes = dry_run(tmp_path, [sketch, sketch + " -W 256 -H 256"])
    said = [n for n in notes if "-W/-H" in n or "slowly" in n]
    assert len(said) == 1 and said[0].startswith(">> -W/-H: 256x192 is 4x the size")


def test_words_the_default_model_never_learned_are_named(tmp_path: Path):
    lines = [
        "a cat",
        "a red circle on a blue background",
        "A Red circle, on a BLUE background! (star)1.2 -s 5",
        "a red circle [wizard] <my-style>",
    ]
    _, notes = dry_run(tmp_path, lines)
    words = [n for n in notes if "never learned" in n]
    assert words == [
        ">> model default never learned: cat (expect a random shape); it knows only colours "
        "(red, orange, yellow, green, cyan, blue, purple, pink, white, black), shapes (circle, "
        "square, triangle, diamond, star, cross) and other words (a, an, background, on), as in "
        '"a red circle on a blue background"',
        words[1],
    ]
    # The negative prompt's words count; `<my-style>` is an embedding's name, not a word.
    assert words[1].startswith(">> model default never learned: wizard (expect a random shape);")


def test_a_model_that_ships_no_vocabulary_gets_no_word_note(tmp_path: Path):
    # The default model's configs without its training.json: what a dry run reads of a model.
    folder = tmp_path / "model"
    for part in ("model_index.json", "unet/config.json", "vae/config.json"):
        (folder / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(EMBEDDED_MODEL_DIR / part, folder / part)
    _, notes = dry_run(tmp_path, ["a cat -W 512 -H 512"], model=str(folder))
    assert not [n for n in notes if "never learned" in n]
    assert [n for n in notes if "-W/-H: 512x512 is 8x" in n]  # its size is still known


def test_the_shipped_vocabulary_is_the_training_captions_words():
    meta = json.loads((EMBEDDED_MODEL_DIR / "training.json").read_text())
    assert meta["vocabulary"] == world.vocabulary_key()  # what the training script exports
    known = {w for group in meta["vocabulary"].values() if isinstance(group, list) for w in group}
    assert known == set(world.vocabulary())


def test_a_model_whose_size_is_in_its_weights_is_told_after_loading():
    """A checkpoint file (no folder to read): the session loads it first (Teller.model is None),
    then the caveats come with its real size."""

    class Models:  # model_cache.ModelCache, as far as the teller reads it
        entry = type("Entry", (), {"name": "ckpt"})()
        native_size = (512, 512)
        size_multiple = 8
        loaded = None

        def loaded_active(self):
            return self.loaded

        def unloaded_folder(self):
            return None

    said: list[str] = []
    models = Models()
    teller = caveats.Teller(said.append, models)
    line = parse_request("a cat -W 2048 -H 512")
    resolved = replace(line, width=2048, height=512, steps=50)
    assert teller.model() is None
    teller.tell(line, resolved, None)
    assert said == []
    models.loaded = object()
    teller.tell(line, resolved, None)
    assert said == [
        "-W/-H: 2048x512 is 4x the size model ckpt draws best (512x512): slow, and that far above "
        "its size a model draws repeated, tiled pictures; leave out -W/-H to draw at 512x512, or "
        "add --hires_fix to draw at 512x512 first"
    ]  # and no word note: it ships no vocabulary
