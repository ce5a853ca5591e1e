"""Batches (stdin, --from_file, !replay) and the one-shot line, driven with a fake runner."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from invoke.line.parse import parse_request
from invoke.line.request import Request
from invoke.shell.batch import run_batch, run_one
from tests.helpers import FakeRunner, batch


@pytest.fixture
def runner(tmp_path: Path) -> FakeRunner:
    return FakeRunner(tmp_path)


def test_bad_line_is_reported_with_its_input_line_number_and_the_rest_run(runner):
    lines = ["a cat -s 3 -S 1", "", "# c", "a dog -s 3 -S 2", "a cow -f 1.5", "a pig -s 4"]
    status, _, err = batch(runner, lines)
    assert [r.prompt for r in runner.requests] == ["a cat", "a dog", "a pig"]
    assert status == 1
    [error] = [e for e in err if e.startswith("line ")]
    assert error.startswith("line 5: ") and "-f/--strength" in error and "1.5" in error
    assert err[-1] == "4 lines run, 1 failed (line 5)"


def test_all_good_exits_0_and_echoes_each_command_line_only(runner):
    lines = ["// a note", "a cat -s 3", "   ", "# another", "a dog -S 7"]
    status, out, err = batch(runner, lines)
    assert status == 0
    assert out == ["invoke> a cat -s 3", "invoke> a dog -S 7"]
    assert err == ["2 lines run, 0 failed"]


def test_ten_good_and_ten_bad_lines_make_ten_images_and_list_the_bad_ones(runner):
    lines = []
    for k in range(10):
        lines += [f"good {k} -s 3", f"bad {k} -s x"]
    status, _, err = batch(runner, lines)
    assert len(runner.requests) == 10
    assert status == 1
    bad = ", ".join(str(n) for n in range(2, 21, 2))
    assert err[-1] == f"20 lines run, 10 failed (lines {bad})"


def test_dry_run_prints_the_runners_canonical_line_of_each_parsed_line_and_runs_nothing(
    runner, monkeypatch
):
    """The batch's part of --dry-run: each good line parsed, handed to the runner's canonical(),
    and its answer printed verbatim on stdout (the echo goes to stderr). That the real canonical
    line is a fixed point is test_cli's test_dry_run_output_is_a_fixed_point."""
    seen: list[Request] = []

    def canonical(request: Request) -> str:
        seen.append(request)
        return f"canonical #{len(seen)}"

    monkeypatch.setattr(runner, "canonical", canonical)
    lines = ["a cat -s 3 -S 1", "# comment", "a cow -f 1.5", "a dog"]
    status, out, err = batch(runner, lines, dry_run=True)
    assert runner.requests == []
    assert seen == [parse_request("a cat -s 3 -S 1"), parse_request("a dog")]
    assert out == ["canonical #1", "canonical #2"]
    assert status == 1
    assert err[0] == "invoke> a cat -s 3 -S 1"
    assert any(e.startswith("line 3: ") for e in err)
    assert err[-1] == "3 lines checked, 1 failed (line 3)"


def test_dry_run_reports_runner_errors_as_failed_lines(runner):
    status, _, err = batch(runner, ["a missing init -s 3", "a cat"], dry_run=True)
    assert status == 1
    assert "line 1: -I/--init_img: missing.png does not exist; give an image file" in err


def test_q_stops_the_batch(runner):
    status, _, err = batch(runner, ["a cat", "q", "a dog"])
    assert [r.prompt for r in runner.requests] == ["a cat"]
    assert status == 0
    assert err[-1] == "1 line run, 0 failed; stopped by q at line 2"


def test_ctrl_c_stops_the_batch_with_a_summary(runner):
    status, _, err = batch(runner, ["a cat", "# x", "interrupt me", "a dog"])
    assert [r.prompt for r in runner.requests] == ["a cat"]
    assert status == 130
    assert err[-1] == (
        "1 line run, 0 failed; stopped by Ctrl-C at line 3; finished images were kept"
    )


def test_ctrl_c_while_waiting_for_the_next_line_stops_at_once(runner):
    """A live producer is quiet: nothing is being made, so the first Ctrl-C stops the batch
    (it does not wait for a line that may never come, to finish its image)."""

    def quiet_producer():
        yield "a cat"
        os.kill(os.getpid(), signal.SIGINT)  # the person presses Ctrl-C
        time.sleep(10)  # the producer says nothing more
        yield "a dog"

    started = time.monotonic()
    status, _, err = batch(runner, quiet_producer())
    assert time.monotonic() - started < 5
    assert [r.prompt for r in runner.requests] == ["a cat"]
    assert status == 130
    assert err == [
        "1 line run, 0 failed; stopped by Ctrl-C after line 1; finished images were kept"
    ]


def test_an_unexpected_error_is_one_line_and_the_batch_goes_on(runner, capsys):
    status, _, err = batch(runner, ["crash now", "a dog"])
    assert [r.prompt for r in runner.requests] == ["a dog"]
    assert status == 1
    assert err[0] == (
        "line 1: unexpected error: RuntimeError: kaput second line "
        "(run with --debug for the traceback)"
    )
    assert "Traceback" not in capsys.readouterr().err


def test_debug_shows_the_traceback(runner, capsys):
    batch(runner, ["crash now"], debug=True)
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad", "column", "byte"),
    [(b"a dog \xff\xfe -s 3\n", 7, "0xFF"), ("a dog \udce9", 7, "0xE9"), (b"\xe9t\xe9", 1, "0xE9")],
)
def test_the_first_line_that_is_not_utf8_stops_the_batch_with_one_message(
    runner, bad, column, byte
):
    """A binary file (or one in another encoding) is refused at its first such line, once:
    not reported line by line, and nothing after it runs."""
    lines = ["a cat -s 3", bad, b"a cow -s 2 \xff", "a pig"]
    status, out, err = batch(runner, lines)
    assert [r.prompt for r in runner.requests] == ["a cat"]
    assert status == 1
    assert out == ["invoke> a cat -s 3"]
    assert err == [
        f"line 2: has bytes that are not UTF-8 text at column {column} (byte {byte}); stopped "
        "reading: a batch is a text file of command lines, saved as UTF-8",
        "2 lines run, 1 failed (line 2); stopped reading at line 2",
    ]


def test_control_characters_are_echoed_as_escapes(runner):
    _, out, _ = batch(runner, ["a cat \x1b[31m red -s 3"])
    assert out == ["invoke> a cat \\x1b[31m red -s 3"]


def test_fetch_in_a_batch_prints_the_command(tmp_path):
    runner = FakeRunner(tmp_path, {"000001.42.png": '"a cat" -s 7 -S 42'})
    (tmp_path / "000001.42.png").write_bytes(b"")
    status, out, _ = batch(runner, [f"!fetch {tmp_path / '000001.42.png'}", "!fetch 000001.42.png"])
    assert status == 0
    assert out[1::2] == ['"a cat" -s 7 -S 42', '"a cat" -s 7 -S 42']


def test_fetch_a_pattern_writes_a_batch_file_that_replays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shots = tmp_path / "shots"
    shots.mkdir()
    stored = {"000001.1.png": '"a cat" -s 3 -S 1', "000002.2.png": '"a dog" -s 4 -S 2'}
    for name in [*stored, "000003.3.png"]:
        (shots / name).write_bytes(b"")
    runner = FakeRunner(tmp_path, stored)
    status, out, err = batch(runner, ["!fetch 'shots/*.png' commands.txt"])
    assert status == 0
    assert out[-1] == "wrote 2 commands to commands.txt"
    assert any("000003.3.png" in e for e in err)  # the image without a command is named
    written = Path("commands.txt").read_text(encoding="utf-8").splitlines()
    assert written == [
        f"# {Path('shots/000001.1.png')}",
        '"a cat" -s 3 -S 1',
        f"# {Path('shots/000002.2.png')}",
        '"a dog" -s 4 -S 2',
    ]
    status, _, _ = batch(runner, ["!replay commands.txt"])
    assert status == 0
    assert [(r.prompt, r.steps, r.seed) for r in runner.requests] == [
        ("a cat", 3, 1),
        ("a dog", 4, 2),
    ]


def test_fetch_never_writes_over_an_image_and_takes_names_with_spaces(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stored = {"a.png": "a cat -s 3", "my pic.png": "a dog -s 4"}
    for name in stored:
        Path(name).write_bytes(b"png")
    runner = FakeRunner(tmp_path, stored)
    status, out, err = batch(runner, ["!fetch a.png 'my pic.png'", "!fetch my pic.png"])
    assert status == 1
    assert err[0].startswith("line 1: !fetch: my pic.png looks like an image")
    assert Path("a.png").read_bytes() == Path("my pic.png").read_bytes() == b"png"
    assert out[-1] == "a dog -s 4"


def test_fetch_errors_are_failed_lines(runner):
    status, _, err = batch(runner, ["!fetch", "!fetch nothing/*.png out.txt", "!fetch nope.png"])
    assert status == 1
    assert err[0].startswith("line 1: !fetch: needs a file")
    assert err[1].startswith("line 2: !fetch: no file matches nothing/*.png")
    assert err[2] == "line 3: nope.png: no command stored in this PNG"


def test_replay_failures_fail_the_replay_line_and_a_file_cannot_replay_itself(runner, tmp_path):
    inner = tmp_path / "inner.txt"
    inner.write_text("a cat\na cow -f 9\n", encoding="utf-8")
    loop = tmp_path / "loop.txt"
    loop.write_text(f"a dog\n!replay {loop}\n", encoding="utf-8")
    status, _, err = batch(runner, [f"!replay {inner}", f"!replay {loop}", "!replay nowhere.txt"])
    assert status == 1
    assert "line 2: " in err[0] and "-f/--strength" in err[0]  # inside inner.txt
    assert f"line 1: !replay {inner}: 2 lines run, 1 failed (line 2)" in err
    assert any("cannot replay itself" in e for e in err)
    assert "line 3: !replay: nowhere.txt: no such file; give a text file of command lines" in err
    assert [r.prompt for r in runner.requests] == ["a cat", "a dog"]


def test_history_commands_say_they_need_the_shell(runner):
    status, _, err = batch(runner, ["!history", "!3", "!frobnicate"])
    assert status == 1
    assert err[0] == "line 1: !history: there is no history outside the interactive shell"
    assert err[1] == "line 2: !3: recalling history lines works in the interactive shell only"
    assert err[2].startswith("line 3: !frobnicate: unknown command; the commands are !history")


def test_dream_is_the_same_as_the_line(runner):
    status, _, _ = batch(runner, ["!dream a cat -s 3"])
    assert status == 0
    assert (runner.requests[0].prompt, runner.requests[0].steps) == ("a cat", 3)


# -- one-shot -------------------------------------------------------------------------------------


def one(runner: FakeRunner, line: str, **kw) -> tuple[int, list[str], list[str]]:
    out: list[str] = []
    err: list[str] = []
    status = run_one(runner, line, out=out.append, err=err.append, **kw)
    return status, out, err


def test_one_shot_runs_the_line_without_echo_or_summary(runner):
    assert one(runner, "a cat -s 3 -S 42") == (0, [], [])
    assert (runner.requests[0].steps, runner.requests[0].seed) == (3, 42)


def test_one_shot_errors_have_no_line_prefix(runner):
    status, _, err = one(runner, "a cow -f 1.5")
    assert status == 1
    assert len(err) == 1 and err[0].startswith("-f/--strength")


def test_one_shot_ctrl_c_and_crash(runner):
    assert one(runner, "interrupt")[::2] == (130, ["stopped (Ctrl-C); finished images were kept"])
    status, _, err = one(runner, "crash")
    assert status == 1 and err[0].startswith("unexpected error: RuntimeError: kaput")


def test_one_shot_fetch_prints_and_dry_run_prints_canonical(tmp_path, monkeypatch):
    runner = FakeRunner(tmp_path, {"a.png": '"kitten\'s toy" -s 7'})
    assert one(runner, "!fetch a.png") == (0, ['"kitten\'s toy" -s 7'], [])
    seen: list[Request] = []

    def canonical(request: Request) -> str:
        seen.append(request)
        return "the runner's canonical line"

    monkeypatch.setattr(runner, "canonical", canonical)
    assert one(runner, "a cat -s 3", dry_run=True) == (0, ["the runner's canonical line"], [])
    assert seen == [parse_request("a cat -s 3")]
    assert runner.requests == []


def test_one_shot_blank_line_is_an_error(runner):
    status, _, err = one(runner, "   ")
    assert status == 1 and err[0].startswith("nothing to run")


def test_a_closed_output_pipe_ends_the_batch_instead_of_failing_every_line(runner):
    def closed(text: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    err: list[str] = []
    with pytest.raises(BrokenPipeError):
        run_batch(runner, ["a cat", "a dog"], dry_run=True, out=closed, err=err.append)
    assert err == ["invoke> a cat"]
    with pytest.raises(BrokenPipeError):
        run_one(runner, "a cat", dry_run=True, out=closed, err=err.append)
