"""The files invoke writes (issue 18): never through a link, logs whole or not at all, a saved
picture always named, SIGTERM like Ctrl-C, no temporary file left behind, a picture's command
never choosing where the next pictures go. The catalogue's cases (tests/hostile/files.py) run
these through the front end; here each promise is pinned where it is kept."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from invoke import atomic, interrupts
from invoke.errors import OutputError
from invoke.line.request import Request
from invoke.outputs import (
    LOG_MD,
    LOG_TXT,
    PREFIX_COUNTER,
    OutputFolder,
    dropped_note,
    without_user_choices,
)
from invoke.shell.batch import run_one
from tests.helpers import FakeRunner, batch
from tests.test_hardening import _assert_every_file_complete, _start_batch, run_cli

SECRET = "the user's own file\n"
MODEL = {"model_id": "tiny-test", "model_hash": "0123456789abcdef"}
REQUEST = Request(prompt="a cat", steps=1, seed=1, width=64, height=64)


def _picture() -> Image.Image:
    return Image.new("RGB", (64, 64), (200, 30, 30))


# -- acceptance 4: a planted link leaves its target unchanged ------------------------------------


@pytest.mark.parametrize("name", [LOG_TXT, LOG_MD, PREFIX_COUNTER])
def test_a_linked_log_or_counter_leaves_its_target_unchanged(tmp_path: Path, name: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    out = OutputFolder(tmp_path / "out")
    out.ensure()
    (out.path / name).symlink_to(secret)
    with pytest.raises(OutputError) as refused:
        out.reserve_prefix()  # before anything is drawn
    assert str(refused.value).startswith(f"{out.path / name}: {atomic.LINK}")
    # Planted after the check (or the check skipped): the write itself does not follow it either.
    if name != PREFIX_COUNTER:
        with pytest.raises(OutputError, match=r"symbolic link.*was saved but not logged"):
            out.save_image(_picture(), REQUEST, "000001", **MODEL)
    assert secret.read_text() == SECRET
    assert (out.path / name).is_symlink()


def test_open_file_refuses_a_link_planted_after_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET)
    log = tmp_path / "log.txt"
    log.symlink_to(secret)
    monkeypatch.setattr(atomic, "check_file", lambda path: None)  # the race: too late to see it
    with pytest.raises(atomic.NotOurs) as refused:
        atomic.append(log, b"a line\n")
    monkeypatch.undo()
    assert refused.value.strerror == atomic.LINK
    assert secret.read_text() == SECRET


def test_a_fifo_is_refused_without_waiting_for_a_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "invoke_log.txt"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(atomic.NotOurs, match="FIFO"):
        atomic.append(fifo, b"a line\n")
    assert time.monotonic() - started < 1


def test_a_linked_history_is_neither_read_nor_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from invoke.shell.history import ShellHistory

    secret = tmp_path / "secret.txt"
    secret.write_text("+rm -rf something\n")
    (tmp_path / ".invoke_history").symlink_to(secret)
    history = ShellHistory(tmp_path / ".invoke_history")
    assert history.lines() == []  # the file it points to is not shown as history
    history.store_string("a cat -s 1")
    history.clear()
    assert secret.read_text() == "+rm -rf something\n"
    warned = capsys.readouterr().err.splitlines()
    assert warned == [
        f">> the history {tmp_path / '.invoke_history'}: {atomic.LINK} "
        "(history is kept for this session only)"
    ]
    assert history.lines() == []


def test_history_lines_are_appended_whole_and_read_back(tmp_path: Path) -> None:
    from invoke.shell.history import ShellHistory

    history = ShellHistory(tmp_path / ".invoke_history")
    history.store_string("a cat -s 1")
    history.store_string("two\nlines")
    assert ShellHistory(tmp_path / ".invoke_history").lines() == ["a cat -s 1", "two\nlines"]


# -- logs whole or not at all; a saved picture always named ----------------------------------------


def test_a_log_record_cut_short_is_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / LOG_TXT
    log.write_text("000001.1.png: an earlier line\n")
    real = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        atomic.append(log, b"000002.1.png: a line that does not fit\n")
    monkeypatch.undo()
    assert log.read_text() == "000001.1.png: an earlier line\n"


def test_a_file_size_limit_leaves_the_log_whole(tmp_path: Path) -> None:
    """A real short write: under RLIMIT_FSIZE the kernel writes what fits and says so."""
    log = tmp_path / LOG_TXT
    earlier = "x" * 4000 + "\n"
    log.write_text(earlier)
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from invoke.errors import OutputError
        from invoke.outputs import OutputFolder
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not death, past the limit
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            OutputFolder({str(tmp_path)!r}).append_log(Path("000001.1.png"), "a cat " * 40)
        except OutputError as err:
            print(err)
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"{log}: cannot append to the log (")
    assert ran.stdout.rstrip().endswith("000001.1.png was saved but not logged")
    assert log.read_text() == earlier  # not a byte of the record that did not fit


def test_a_picture_saved_before_its_log_fails_is_named(
    isolated: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.write

    def full_for_the_log(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(LOG_TXT):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the log's writes from the others")
    monkeypatch.setattr(os, "write", full_for_the_log)
    ran = run_cli(["--model", str(tiny_model_dir), "--outdir", "out", "a cat -s 1 -S 1 -n 2"], None)
    monkeypatch.undo()
    assert ran.status == 1
    shown = ran.out.splitlines()
    assert shown[-2] == "Outputs:"
    assert re.fullmatch(r'\[1\] out/000001\.1\.png: "a cat" .*', shown[-1])
    assert ran.err.splitlines()[-1] == (
        "out/invoke_log.txt: cannot append to the log (the disk is full); "
        "000001.1.png was saved but not logged"
    )
    assert (isolated / "out" / "000001.1.png").is_file()
    assert (isolated / "out" / LOG_TXT).read_text() == ""


# -- leftovers ----------------------------------------------------------------------------------


def test_leftovers_are_ours_by_name_and_age(tmp_path: Path) -> None:
    old, new = tmp_path / ".tmp-abcdefgh.part", tmp_path / ".tmp-12345678.part"
    other = tmp_path / ".tmp-abcdefgh.part.bak"
    for path in (old, new, other):
        path.write_bytes(b"half")
    stamp = time.time() - atomic.LEFTOVER_AGE_S - 5
    for path in (old, other):
        os.utime(path, (stamp, stamp))
    assert atomic.remove_leftovers(tmp_path) == [old]
    assert new.exists() and other.exists()


# -- a picture's command never chooses where the next pictures go -----------------------------


@pytest.mark.parametrize(
    ("stored", "kept", "dropped"),
    [
        ('"a cat" -s 3 -S 1 -o /etc', '"a cat" -s 3 -S 1', {"outdir": "-o /etc"}),
        (
            "\"a cat\" -s 3 -o 'my shots' --fnformat {seed}.png",
            '"a cat" -s 3',
            {"outdir": "-o 'my shots'", "fnformat": "--fnformat '{seed}.png'"},
        ),
        ('"a cat" -s 3 -S 1', '"a cat" -s 3 -S 1', {}),
        ('!fix a.png "a cat" -S 2 -U 2 -o /etc', '!fix a.png "a cat" -S 2 -U 2', {}),
    ],
)
def test_a_read_back_command_loses_its_outdir_and_fnformat(
    stored: str, kept: str, dropped: dict[str, str]
) -> None:
    command, gone = without_user_choices(stored)
    assert command.startswith(kept) and "-o" not in command and "fnformat" not in command
    if stored.startswith("!fix"):
        assert gone == {"outdir": "-o /etc"}
    else:
        assert gone == dropped
    if not gone:
        assert command == stored


def test_the_dropped_note_names_what_went() -> None:
    assert dropped_note("x.png", {"outdir": "-o /etc"}) == (
        "x.png: dropped -o /etc from the picture's command (the output folder is yours to choose)"
    )


# -- SIGTERM ------------------------------------------------------------------------------------


def test_sigterm_in_a_batch_asks_to_stop_after_the_image_then_stops_at_once() -> None:
    told: list[str] = []
    with pytest.raises(interrupts.Terminated), interrupts.two_stage(told.append):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs between bytecodes of the main thread
        assert interrupts.stop_requested() and interrupts.stopped_by() == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert told == [
        "SIGTERM: stopping after the current image (SIGTERM or Ctrl-C again to stop now)"
    ]
    assert not interrupts.stop_requested()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_while_a_picture_is_saved_waits_until_it_is_logged() -> None:
    done: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            done.append("written")
            done.append("logged")
        done.append("after")  # never: the held Ctrl-C acts as the block ends
    assert done == ["written", "logged"]


class _Killed(FakeRunner):
    """A runner that SIGTERM stops at once (a second SIGTERM, or one outside a batch)."""

    def generate(self, request: Request) -> list[Path]:
        if "killed" in request.prompt:
            raise interrupts.Terminated
        return super().generate(request)


def test_sigterm_at_once_says_so_and_exits_143(tmp_path: Path) -> None:
    runner = _Killed(tmp_path)
    status, _, err = batch(runner, ["a cat", "killed", "never"])
    assert status == 143
    assert err == ["1 line run, 0 failed; stopped by SIGTERM at line 2; finished images were kept"]
    said: list[str] = []
    assert run_one(runner, "killed", out=said.append, err=said.append) == 143
    assert said == ["stopped (SIGTERM); finished images were kept"]


@pytest.mark.e2e
def test_sigterm_mid_batch_keeps_every_finished_picture_named_and_logged(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    process, outdir, err = _start_batch(tmp_path, tiny_model_dir)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    text = err.read_text()
    assert process.returncode == 143, text
    assert "SIGTERM: stopping after the current image" in text
    summary = [line for line in re.split(r"[\r\n]", text) if line.strip()][-1]
    assert summary == (
        "2 lines run, 0 failed; stopped by SIGTERM after line 2; finished images were kept"
    )
    names = _assert_every_file_complete(outdir)  # no .tmp-*.part among them
    assert names == ["000001.1.png", "000002.2.png"]
    assert not list(outdir.rglob(".tmp-*"))
    logged = (outdir / LOG_TXT).read_text().splitlines()
    shown = out.decode()
    for name in names:
        assert sum(line.startswith(str(outdir / name)) for line in logged) == 1
        assert f"{outdir / name}: " in shown  # named in its Outputs block
    assert "Traceback" not in text
