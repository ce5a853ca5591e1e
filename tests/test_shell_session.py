"""The real shell on the real session and a real (tiny) model, typed into through a pipe."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from invoke.config.settings import Settings
from invoke.session import Session
from invoke.shell.repl import banner, run_repl
from invoke.shell.report import TerminalReporter

ENTER = "\r"
CTRL_D = "\x04"


def type_into_shell(outdir: Path, model: Path, keys: str) -> tuple[int, str, list[str]]:
    stdout, stderr = io.StringIO(), io.StringIO()
    session = Session(
        Settings(outdir=outdir, model=str(model)),
        reporter=TerminalReporter(out=stdout, err=stderr),
    )
    printed: list[str] = []
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        status = run_repl(
            session, input=pipe, output=DummyOutput(), out=printed.append, err=printed.append
        )
    return status, stdout.getvalue(), printed


def test_shell_generates_fetches_exactly_and_keeps_history(tmp_path: Path, tiny_model_dir: Path):
    outdir = tmp_path / "out"
    first_line = "a red circle on a blue background -s 3 -S 42 -C 7.5"
    status, stdout, _ = type_into_shell(outdir, tiny_model_dir, first_line + ENTER + CTRL_D)
    assert status == 0
    made = outdir / "000001.42.png"
    assert made.is_file()
    command = '"a red circle on a blue background" -s 3 -S 42 -W 64 -H 64 -C 7.5 -A k_lms'
    assert f"[1] {made}: {command}" in stdout

    # A second run in the same outdir: the history is there, and !fetch puts the exact command
    # into the edit buffer, so Enter alone remakes the image.
    keys = f"!history{ENTER}!fetch {made}{ENTER}{ENTER}{CTRL_D}"
    status, stdout, printed = type_into_shell(outdir, tiny_model_dir, keys)
    assert status == 0
    assert any(first_line in line for line in printed), printed
    remade = outdir / "000002.42.png"
    assert f"[1] {remade}: {command}" in stdout
    with Image.open(made) as a, Image.open(remade) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))
    history = (outdir / ".invoke_history").read_text()
    assert first_line in history and command in history


def test_shell_reports_bad_lines_and_goes_on(tmp_path: Path, tiny_model_dir: Path) -> None:
    outdir = tmp_path / "out"
    keys = f"a cat -I nowhere.png -s 2{ENTER}a cat -s 2 -S 1{ENTER}{CTRL_D}"
    status, _, printed = type_into_shell(outdir, tiny_model_dir, keys)
    assert status == 0
    assert any("nowhere.png" in line for line in printed), printed
    assert (outdir / "000001.1.png").is_file()


def test_help_words_draw_nothing_and_help_names_the_models_own_defaults(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from tests import helpers

    outdir = tmp_path / "out"
    session = Session(
        Settings(outdir=outdir, model=str(tiny_model_dir)),
        reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO(), progress=False),
    )
    keys = f"help{ENTER}?{ENTER}-h{ENTER}--help{ENTER}!help -W{ENTER}!help -A{ENTER}{CTRL_D}"
    printed = helpers.type_into_shell(session, keys)  # it checks the banner comes first
    assert banner(session.active_model()) == (
        "invoke · model tiny (folder, 64 px) on cpu · !help for help, q to quit"
    )
    assert not list(outdir.glob("*.png"))  # help is never a picture of the word
    assert session.models.loaded == {}  # nor a reason to load the model
    assert printed.count("  -s, --steps N             sampling steps [default: 50]") == 4
    width = printed.index("-W, --width PIXELS")
    assert printed[width + 1 : width + 4] == [
        "    image width (rounded down to a multiple of 8)",
        "    value: a whole number in 16..4096",
        "    default: 64 (the active model's)",
    ]
    assert printed[-1] == "    default: k_lms"  # a Stable Diffusion model's, as it will draw


def test_the_model_load_says_it_is_loading_before_the_wait(tmp_path: Path, tiny_model_dir: Path):
    err = io.StringIO()
    session = Session(
        Settings(outdir=tmp_path / "out", model=str(tiny_model_dir)),
        reporter=TerminalReporter(out=io.StringIO(), err=err, progress=False),
    )
    session.model  # noqa: B018 - loads it
    notes = err.getvalue().splitlines()
    assert notes[0] == ">> loading model tiny (folder) on cpu..."
    assert notes[1].startswith(">> model tiny loaded on cpu (float32) in ")


def test_help_defaults_put_the_launch_options_first_as_a_line_gets_them(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from invoke.line.request import Request

    settings = Settings(
        outdir=tmp_path / "out",
        model=str(tiny_model_dir),
        defaults=Request(steps=30, sampler="ddim", fit=True),
    )
    session = Session(settings, reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO()))
    shown = session.line_defaults()
    assert shown["steps"] == "30 (a launch option)"
    assert shown["sampler"] == "ddim (a launch option)"  # over the model's own
    assert shown["fit"] == "on (a launch option)"
    assert shown["width"] == "64 (the active model's)"
    assert shown["cfg_scale"] == "7.5"
    assert shown["outdir"] == f"{(tmp_path / 'out').as_posix()} (the launch --outdir)"
    assert session.models.loaded == {}
