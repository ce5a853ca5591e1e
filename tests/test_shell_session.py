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
from invoke.shell.repl import run_repl
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
