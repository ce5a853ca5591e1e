"""invoke for scripts: --json (one JSON record a line on stdout, nothing else), --quiet (only
errors), bars only on a terminal and saying which picture, --device cuda:N, --threads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from invoke.__main__ import cli
from invoke.backend import device
from invoke.config.settings import Settings
from invoke.errors import ModelError
from invoke.events import Tokens
from invoke.line.parse import parse_request
from invoke.session import Session, image_label
from invoke.shell.report import JsonReporter, TerminalReporter
from tests.helpers import RecordingReporter

BATCH = """\
# a comment, and a blank line: neither is a record
a red circle -s 3 -S 7 -n 2

a blue square -s 3 -Z
!models
a green star -s 3 -I nothere.png
a cross -s 3 -S 9 -W 72 -H 64
"""


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def records(out: str) -> list[dict]:
    """stdout as JSON lines: every line one object, or the test fails."""
    assert out.endswith("\n"), out
    return [json.loads(line) for line in out.splitlines()]


# -- --json ---------------------------------------------------------------------------------------


def test_json_batch_is_one_record_per_picture_and_failure_and_nothing_else(
    isolated: Path, tiny_model_dir: Path
) -> None:
    """Acceptance 2: `invoke --json --from_file f.txt`, good and bad lines."""
    (isolated / "f.txt").write_text(BATCH)
    model = ("--model", str(tiny_model_dir))
    code, out, err = invoke("--json", *model, "-o", "o", "--from_file", "f.txt")
    assert code == 1  # as without --json (below): a line failed
    found = records(out)
    assert [(r["type"], r["line"]) for r in found] == [
        ("picture", 2), ("picture", 2), ("error", 4), ("error", 6), ("picture", 7)
    ]  # fmt: skip
    first, second, bad_switch, no_image, cross = found
    assert first["seed"] == 7 and second["seed"] != 7
    for picture in (first, second, cross):
        assert (isolated / picture["path"]).is_file()
        assert picture["model"] == "tiny"
        assert f"-S {picture['seed']} " in picture["command"]
    assert (first["width"], first["height"]) == (64, 64)
    assert (cross["width"], cross["height"]) == (72, 64)
    assert cross["command"] == '"a cross" -s 3 -S 9 -W 72 -H 64 -C 7.5 -A k_lms'
    assert bad_switch["message"].startswith("-Z: unknown switch")
    assert no_image["message"].startswith("nothere.png: no such image")
    # The person's text is all on stderr: echoes, !models, errors, the summary.
    assert "invoke> a red circle -s 3 -S 7 -n 2" in err and "* tiny" in err
    assert "line 4: -Z: unknown switch" in err
    assert err.rstrip().endswith("5 lines run, 2 failed (lines 4, 6)")

    code, out, _ = invoke(*model, "-o", "plain", "--from_file", "f.txt")
    assert code == 1 and "Outputs:" in out  # the same status without --json


def test_json_one_shot_line_is_line_1(isolated: Path, tiny_model_dir: Path) -> None:
    model = ("--model", str(tiny_model_dir))
    code, out, err = invoke("--json", *model, "-o", "o", "a red circle -s 2 -S 3 -t")
    assert code == 0, err
    (picture,) = records(out)
    assert picture["type"] == "picture" and picture["line"] == 1 and picture["seed"] == 3
    assert ">> Tokens (3): a red circle" in err  # -t is text for the person: stderr

    code, out, err = invoke("--json", *model, "a red circle -s 2 -Q")
    assert code == 1
    assert records(out) == [{"type": "error", "line": 1, "message": err.strip()}]


def test_json_dry_run_gives_each_lines_canonical_command(isolated: Path) -> None:
    code, out, err = invoke("--json", "--dry-run", stdin="a red circle -s 5 -S 1\n\nx -s 0\n")
    assert code == 1
    command, error = records(out)
    assert command == {
        "type": "command",
        "line": 1,
        "command": '"a red circle" -s 5 -S 1 -W 64 -H 64 -C 7.5 -A k_euler',
    }
    assert error["type"] == "error" and error["line"] == 3 and "-s" in error["message"]
    assert "line 3:" in err and "1 failed" in err


def test_json_text_from_outside_is_escaped_by_json() -> None:
    out = io.StringIO()
    JsonReporter(out, io.StringIO()).failed(2, "bad \x1b[31mred\u202e")
    assert out.getvalue().isascii() and "\x1b" not in out.getvalue()
    assert json.loads(out.getvalue())["message"] == "bad \x1b[31mred\u202e"


def test_json_is_not_a_setting_of_the_defaults_file(isolated: Path) -> None:
    folder = isolated / "config" / "invoke-dream"
    folder.mkdir(parents=True)
    (folder / "invoke.init").write_text("--json\n")
    code, out, err = invoke("--dry-run", stdin="a cat\n")
    assert code == 2 and out == ""
    assert "--json is not a setting; give it on the command line" in err


# -- --quiet --------------------------------------------------------------------------------------


def test_quiet_prints_only_errors(isolated: Path, tiny_model_dir: Path) -> None:
    model = ("--model", str(tiny_model_dir))
    code, out, err = invoke("--quiet", *model, "-o", "o", "a red circle -s 2 -S 1 -t")
    assert (code, out, err) == (0, "", "")  # no note, no tokens, no Outputs:
    assert (isolated / "o" / "000001.1.png").is_file()

    code, out, err = invoke("-q", *model, "-o", "o", stdin="a red circle -s 2\n!models\nx -Z\n")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "line 3: -Z: unknown switch (did you mean -z/--png_compression?)",
        "3 lines run, 1 failed (line 3)",
    ]


def test_quiet_dry_run_checks_silently(isolated: Path) -> None:
    assert invoke("--quiet", "--dry-run", stdin="a cat -s 5\n") == (0, "", "")


# -- bars -----------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_when_stderr_is_a_terminal() -> None:
    piped = io.StringIO()
    bar = TerminalReporter(io.StringIO(), piped).progress(5, "image")
    bar.advance()
    bar.close()
    assert piped.getvalue() == ""

    terminal = Terminal()
    bar = TerminalReporter(io.StringIO(), terminal).progress(5, "image 2/3")
    bar.advance()
    bar.close()
    assert terminal.getvalue().startswith("\rimage 2/3:   0%|")


def test_tokens_print_above_a_running_bar_not_through_it() -> None:
    screen = Terminal()  # stdout and stderr on one terminal
    report = TerminalReporter(screen, screen)
    bar = report.progress(4, "image")
    bar.advance()
    report.tokens(Tokens(3, "a red circle"))
    bar.advance()
    bar.close()
    text = screen.getvalue()
    at = text.index(">> Tokens (3): a red circle\n")
    assert text[at - 1] == "\r"  # the bar's line was cleared first: the tokens start a line
    assert text[at:].count("image:") >= 1  # and the bar comes back below them


@pytest.mark.parametrize(
    ("done", "drawing", "count", "label"),
    [(0, 1, 1, "image"), (1, 1, 3, "image 2/3"), (0, 8, 16, "images 1-8/16"),
     (8, 2, 10, "images 9-10/10")],
)  # fmt: skip
def test_the_bar_says_which_picture_of_how_many(
    done: int, drawing: int, count: int, label: str
) -> None:
    assert image_label(done, drawing, count) == label


def test_n_3_bars_are_image_1_2_3_of_3(tmp_path: Path, tiny_model_dir: Path) -> None:
    reporter = RecordingReporter()
    session = Session(Settings(outdir=tmp_path, model=str(tiny_model_dir)), reporter=reporter)
    session.generate(parse_request("a red circle -s 2 -S 1 -n 3"))
    assert [bar.label for bar in reporter.bars] == ["image 1/3", "image 2/3", "image 3/3"]
    (outputs,) = reporter.saved
    first = outputs.saved[0]
    assert (first.seed, first.size, first.model) == (1, (64, 64), "tiny")


# -- --device -------------------------------------------------------------------------------------


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """torch as on a machine with two CUDA GPUs; the list of set_device calls."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_device_cuda_n_picks_gpu_n(two_gpus: list[int]) -> None:
    assert device.pick_device("cuda:1") == torch.device("cuda", 1)
    assert two_gpus == [1]
    assert device.pick_device("cuda") == torch.device("cuda")


def test_device_cuda_n_beyond_the_gpus_is_one_line(two_gpus: list[int]) -> None:
    with pytest.raises(ModelError) as refused:
        device.pick_device("cuda:2")
    assert str(refused.value) == (
        "--device: cuda:2 is not on this machine, which has 2 CUDA GPUs (cuda:0 to cuda:1)"
    )
    assert two_gpus == []


@pytest.mark.parametrize("name", ["gpu", "cpu:0", "cuda:", "cuda:-1", "cuda:x"])
def test_a_device_that_is_no_device_is_refused(name: str) -> None:
    with pytest.raises(ModelError, match="is not one of auto, cpu, mps, cuda or cuda:N"):
        device.pick_device(name)


def test_launch_option_device_takes_cuda_n_and_refuses_others(isolated: Path) -> None:
    assert invoke("--device", "cuda:1", "--dry-run", stdin="a cat\n")[0] == 0
    code, out, err = invoke("--device", "cuda:one", "--dry-run", stdin="a cat\n")
    assert code == 2 and out == ""
    assert "'cuda:one' is not one of auto, cpu, mps, cuda or cuda:N" in err


# -- --threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "physical", "busy", "threads"),
    [(2, 2, 0.1, 2), (2, 2, 0.6, 1), (2, 2, 4.3, 1), (16, 8, 3.0, 8), (16, 16, 3.4, 13),
     (1, 1, 0.0, 1)],
)  # fmt: skip
def test_default_threads_are_the_free_cores(
    cpus: int, physical: int, busy: float, threads: int
) -> None:
    assert device.default_threads(cpus, physical, busy) == threads


def test_threads_option_sets_torchs_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert device.use_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert device.use_threads(None) == 3  # OMP_NUM_THREADS chose: left as it is
    finally:
        torch.set_num_threads(before)


def test_threads_reach_the_settings_and_zero_is_refused(isolated: Path) -> None:
    code, out, _ = invoke("--threads", "2", "--show-config")
    assert code == 0 and any(
        line.split()[:3] == ["--threads", "command", "line"] for line in out.splitlines()
    ), out
    code, _, err = invoke("--threads", "0", "--dry-run", stdin="a cat\n")
    assert code == 2 and "--threads" in err


@pytest.mark.e2e
def test_a_real_process_json_stdout_is_only_records(isolated: Path) -> None:
    """What libraries print (warnings, loading bars) must not reach stdout either: the default
    model, in a process of its own, stdout a pipe."""
    import os
    import subprocess
    import sys

    (isolated / "f.txt").write_text("a red circle -s 2 -S 5\na red circle -Q\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "--json", "-o", "o", "--from_file", "f.txt"],
        capture_output=True,
        text=True,
        cwd=isolated,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    picture, error = records(done.stdout)
    assert (picture["type"], picture["line"], picture["seed"]) == ("picture", 1, 5)
    assert picture["model"] == "default" and (isolated / picture["path"]).is_file()
    assert (error["type"], error["line"]) == ("error", 2)
    assert "%|" not in done.stderr  # stderr is no terminal: no bar
