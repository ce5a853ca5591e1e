"""--workers: a batch drawn by worker processes on a private Ray instance, written by the
driver exactly as one process writes it (invoke/distributed/).

The e2e tests start the real CLI twice, in one process and on workers, and compare what a user
has afterwards: the files, their bytes, the logs and what was printed. They need Ray (the
[ray] extra, in the dev extra); the rest run without it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from invoke.distributed import INSTALL_HINT
from invoke.distributed.driver import auto_count, threads_each
from invoke.distributed.lookahead import Lookahead, depends_on_earlier
from invoke.distributed.runner import PoolRunner, SeedBook
from invoke.distributed.worker import Outcome
from invoke.errors import InvokeError
from invoke.events import Step
from invoke.line.parse import parse_line
from tests.test_hardening import run_cli

# -- the parts, without Ray ------------------------------------------------------------------


def test_without_ray_workers_say_how_to_install_it_and_exit_2(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: import ray fails
    for switch in (["--workers", "2"], ["--cluster", "auto"]):
        ran = run_cli(["--model", str(tiny_model_dir), *switch], "a cat -s 1\n")
        assert ran.status == 2
        assert ran.err.strip().splitlines() == ["invoke: " + INSTALL_HINT.format(switch=switch[0])]
    assert not (isolated / "outputs").exists()


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--workers", "2", "a cat"], None, "--workers runs a batch"),
        (["--workers", "0"], "a cat\n", "'0' is not a count of workers"),
        (["--workers", "many"], "a cat\n", "'many' is not a count of workers"),
        (["--workers", "2", "--dry-run"], "a cat\n", "--dry-run draws nothing"),
    ],
)
def test_workers_are_refused_where_they_cannot_help(
    isolated: Path, args: list[str], stdin: str | None, says: str
) -> None:
    ran = run_cli(args, stdin)
    assert ran.status == 2
    assert says in ran.err
    assert "Traceback" not in ran.err


def test_a_line_naming_an_earlier_result_is_not_planned_ahead() -> None:
    def request(text: str):
        return parse_line(text)

    assert not depends_on_earlier(request("a cat -S 3 -n 2"))
    for text in (
        "a cat -S -1",
        "a cat -I -1",
        "a cat --controlnet edges --control_image -1",
        "a cat -I x.png --latents -1",
    ):
        assert depends_on_earlier(request(text)), text


def test_the_seed_book_gives_a_running_line_the_seeds_its_planning_drew() -> None:
    book = SeedBook()
    with book.planning(3):
        drawn = [book.take(), book.take()]
    with book.planning(4):
        other = book.take()
    book.running(3)
    assert [book.take(), book.take()] == drawn
    third = book.take()  # more than planned: a fresh one
    assert 0 <= third < 2**32
    book.running(4)
    assert book.take() == other


def test_worker_counts_and_threads() -> None:
    assert auto_count(gpus=4, cpus=64) == 4
    assert auto_count(gpus=0, cpus=16) == 4
    assert auto_count(gpus=0, cpus=2) == 1
    assert threads_each(None, cpus=16, count=4) == 4
    assert threads_each(None, cpus=2, count=4) == 1
    assert threads_each(3, cpus=16, count=4) == 3


class FakePool:
    """Records what the lookahead plans and what the session asks, as Pool would be asked."""

    def __init__(self, outcome: Outcome | None = None) -> None:
        self.submitted: list[tuple[int, str, object]] = []
        self.forgotten: list[int] = []
        self.asked: list[int] = []
        self.slots = [object(), object()]
        self.device_type = "cpu"
        self._outcome = outcome or Outcome()

    def submit(self, tag: int, model: str, job: object) -> None:
        self.submitted.append((tag, model, job))

    def backlog(self) -> int:
        return len(self.submitted) - len(self.asked)

    def forget(self, through: int) -> None:
        self.forgotten.append(through)

    def outcome(self, tag: int, model: str, job: object, *, take: bool = False) -> Outcome:
        self.asked.append(tag)
        return self._outcome

    def has_started(self, model: str, job: object) -> bool:
        return True

    def unwritten(self) -> bool:
        return False


class FakeSession:
    """What the lookahead uses of the session: plan_jobs (one Job a line: its prompt)."""

    def __init__(self, pool: FakePool) -> None:
        from types import SimpleNamespace

        self.models = SimpleNamespace(entry=SimpleNamespace(name="a"))
        self.jobs = PoolRunner(pool, self.models)  # type: ignore[arg-type]
        self.planned: list[str] = []

    def recent_seeds(self) -> list[int]:
        return []

    def plan_jobs(self, request):
        if request.prompt == "broken":
            raise InvokeError("broken")
        self.planned.append(request.prompt)
        return [request.prompt]


def test_the_lookahead_plans_ahead_but_never_past_a_command_that_has_not_run() -> None:
    pool = FakePool()
    session = FakeSession(pool)
    lines = ["one -S 1", "", "# two", "broken", "three -I -1", "!switch b", "four -S 4"]
    ahead = iter(Lookahead(lines, session, pool, SeedBook(), window=10))  # type: ignore[arg-type]
    time.sleep(0.2)  # the reader thread has queued every line
    assert next(ahead) == "one -S 1"
    # Lines 1-5 planned (a blank, a comment, a line that fails, one naming -1: nothing sent);
    # not line 7, behind the !switch.
    assert session.planned == ["one"]
    assert [tag for tag, _, _ in pool.submitted] == [1]
    given = [next(ahead) for _ in range(5)]
    assert given == lines[1:6]
    assert session.planned == ["one"]  # !switch b is handed over, not yet run
    assert next(ahead) == "four -S 4"  # asked for after !switch ran: planned then
    assert session.planned == ["one", "four"]
    assert pool.submitted[-1][0] == 7
    assert list(ahead) == []
    assert pool.forgotten == [1, 2, 3, 4, 5, 6, 7]


def test_a_job_from_a_worker_tells_the_session_what_it_would_have_seen_here() -> None:
    steps = [Step(0, 2, 999.0), Step(1, 2, 500.0), Step(2, 2, 1.0)]
    pool = FakePool(Outcome(images=["picture"], steps=steps, events=["tokens"], notes=["n"]))
    runner = FakeSession(pool).jobs
    seen: list[object] = []
    assert runner.prepare("job") == ["n"]  # type: ignore[arg-type]
    assert runner.run("job", seen.append, seen.append) == ["picture"]  # type: ignore[arg-type]
    assert seen == [*steps, "tokens"]
    failing = FakeSession(FakePool(Outcome(error="-s: too many", stage="prepare"))).jobs
    with pytest.raises(InvokeError, match="-s: too many"):
        failing.prepare("job")  # type: ignore[arg-type]


# -- the real thing: a private Ray instance, the CLI in subprocesses -----------------------------

TWELVE = """\
a red circle -s 4 -S 1
a blue square -s 4 -S 2 -n 2
a green circle -s 4 -S 3 -I -1 -f 0.6

a loop -s 4 -S 4 -I -1 -f 0.5 -n 3 -v 0.3
this line is bad -s -4
!switch b
a picture on b -s 4 -S 5 -n 2
an img2img on b -s 4 -S 6 -I -1 -f 0.7
!switch a
the same seed again -s 4 -S -1
a last one -s 4 -S 7 -n 2
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    from tests.fixtures.tiny_models import build_test_model

    second = build_test_model(tmp_path_factory.mktemp("models") / "second", seed=1)
    config = tmp_path_factory.mktemp("config") / "models.yaml"
    entries = {
        "a": {"description": "first", "path": str(tiny_model_dir), "default": True},
        "b": {"description": "second", "path": str(second)},
    }
    config.write_text(yaml.safe_dump(entries, sort_keys=False), encoding="utf-8")
    return config


def _env(where: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("OMP_NUM_THREADS", None)
    env["HOME"] = str(where / "home")  # Ray must leave nothing in it
    env["XDG_CACHE_HOME"] = env["XDG_CONFIG_HOME"] = str(where / "home")
    # The private instance's session files go here; short, for Ray's Unix sockets in it.
    env["TMPDIR"] = _short_tmp(where)
    (where / "home").mkdir(parents=True, exist_ok=True)
    return env


def _short_tmp(where: Path) -> str:
    """A short temporary folder of the test's own (linked from `where / "tmp"`)."""
    link = where / "tmp"
    if not link.is_symlink():
        link.symlink_to(tempfile.mkdtemp(prefix="w", dir="/tmp"))
    return os.readlink(link)


def _start(where: Path, config: Path, batch: str, *workers: str) -> subprocess.Popen[bytes]:
    where.mkdir(parents=True, exist_ok=True)
    (where / "batch.txt").write_text(batch)
    command = [sys.executable, "-m", "invoke", "--config", str(config), "--threads", "1"]
    return subprocess.Popen(
        [*command, "-o", "out", *workers, "--from_file", "batch.txt"],
        cwd=where,
        env=_env(where),
        stdout=subprocess.PIPE,
        stderr=(where / "stderr.txt").open("wb"),
    )


def _finish(process: subprocess.Popen[bytes], timeout: float = 300) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out.decode()


def _files(where: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((where / "out").iterdir()) if p.is_file()}


def _errors(where: Path) -> list[str]:
    text = (where / "stderr.txt").read_text()
    return [line for line in text.splitlines() if re.match(r"line \d+:|\d+ lines run", line)]


def _worker_pids(where: Path) -> list[int]:
    text = (where / "stderr.txt").read_text()
    return [int(pid) for pid in re.findall(r"worker \d+ \(pid (\d+) on .*\) ready", text)]


def _command_lines() -> dict[int, str]:
    """Every process's command line (Linux's /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdecimal():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # gone meanwhile
    return {pid: text.decode(errors="replace") for pid, text in found.items()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has stopped; its parent has not reaped it yet


def _ray_left(where: Path) -> list[str]:
    """Processes still running from the private instance (their command lines name its
    folder under TMPDIR), and what it left on disk."""
    tmp = os.readlink(where / "tmp")
    left = [text[:200] for pid, text in _command_lines().items() if tmp in text and _alive(pid)]
    return (
        left
        + [str(p) for p in Path(tmp).iterdir()]
        + [str(p) for p in (where / "home").rglob("*") if ".ray" in p.parts]
    )


# 127.0.0.1, ::ffff:127.0.0.1 and ::1, as /proc/net writes them
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening() -> set[tuple[str, str]]:
    """Every listening TCP socket on the machine: (address, port) in /proc/net's hex."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":  # LISTEN
                found.add(tuple(fields[1].split(":")))
    return found


def _assert_gone(where: Path, pids: list[int]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _alive(pid)]
        if not alive and not _ray_left(where):
            return
        time.sleep(0.2)
    assert not alive, f"workers still running: {alive}"
    assert not _ray_left(where)


@pytest.mark.e2e
def test_twelve_lines_on_two_workers_write_what_one_process_writes(
    tmp_path: Path, two_models: Path
) -> None:
    one = _start(tmp_path / "one", two_models, TWELVE)
    status_one, out_one = _finish(one)
    two = _start(tmp_path / "two", two_models, TWELVE, "--workers", "2")
    status_two, out_two = _finish(two)
    err_two = (tmp_path / "two" / "stderr.txt").read_text()
    assert status_one == status_two == 1, err_two  # line 6 failed, in both
    files_one, files_two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert len([n for n in files_one if n.endswith(".png")]) == 13
    assert list(files_two) == list(files_one)
    for name, data in files_one.items():  # the pictures, their PNG chunks, both logs
        assert files_two[name] == data, name
    assert out_two == out_one  # the Outputs: blocks, in input-line order
    assert _errors(tmp_path / "two") == _errors(tmp_path / "one")
    assert _errors(tmp_path / "one")[0].startswith("line 6: -s/--steps: -4")
    assert len(_worker_pids(tmp_path / "two")) == 2
    assert "Traceback" not in err_two
    _assert_gone(tmp_path / "two", _worker_pids(tmp_path / "two"))


SLOW = "".join(f"picture {k} -s 12 -S {k} -W 128 -H 128\n" for k in range(1, 13))


def _wait_for(path: Path, process: subprocess.Popen[bytes], what: str, count: int = 1) -> None:
    deadline = time.monotonic() + 180  # a loaded CI machine: Ray's start and two model loads
    while len(list(path.parent.glob(path.name))) < count:
        assert process.poll() is None, (path.parent.parent / "stderr.txt").read_text()
        assert time.monotonic() < deadline, f"{what} never appeared"
        time.sleep(0.05)


@pytest.mark.e2e
def test_a_killed_worker_is_replaced_and_every_picture_is_written_once(
    tmp_path: Path, two_models: Path
) -> None:
    where = tmp_path / "killed"
    process = _start(where, two_models, SLOW, "--workers", "2")
    _wait_for(where / "out" / "*.png", process, "the first picture")
    pids = _worker_pids(where)
    os.kill(pids[0], signal.SIGKILL)
    status, _ = _finish(process)
    err = (where / "stderr.txt").read_text()
    assert status == 0, err
    assert re.search(r"worker 1 \(pid \d+ .*\) died \(\w+\); a new worker takes its place", err)
    names = sorted(p.name for p in (where / "out").glob("*.png"))
    assert names == [f"{k:06d}.{k}.png" for k in range(1, 13)]  # each line's, exactly once
    logged = (where / "out" / "invoke_log.txt").read_text().splitlines()
    assert sorted(Path(line.split(":")[0]).name for line in logged) == names
    assert not list((where / "out").rglob(".tmp-*"))
    assert "12 lines run, 0 failed" in err
    _assert_gone(where, _worker_pids(where))


@pytest.mark.e2e
def test_ctrl_c_writes_what_workers_are_drawing_then_stops_and_leaves_no_ray_behind(
    tmp_path: Path, two_models: Path
) -> None:
    """The first Ctrl-C: no Job starts, the ones being drawn (both workers busy: the batch has
    12 lines) are written in their lines' order, the batch stops; nothing half-written, the
    private Ray instance gone, and it listened on loopback only."""
    where = tmp_path / "stopped"
    before = _listening()
    process = _start(where, two_models, SLOW, "--workers", "2")
    _wait_for(where / "out" / "*.png", process, "the first picture")
    opened = _listening() - before  # Ray's servers, and nothing else of ours
    assert opened, "the private Ray instance listens somewhere"
    assert {address for address, _ in opened} <= LOOPBACK, opened
    written = len(list((where / "out").glob("*.png")))
    process.send_signal(signal.SIGINT)
    status, out = _finish(process)
    err = (where / "stderr.txt").read_text()
    assert status == 130, err
    assert "being drawn are written, in their lines' order, then the batch stops" in err
    assert re.search(r"stopped by Ctrl-C (after|at) line \d+; finished images were kept", err)
    names = sorted(p.name for p in (where / "out").glob("*.png"))
    assert written + 2 <= len(names) < 12  # both workers' Jobs, and no new one
    assert names == [f"{k:06d}.{k}.png" for k in range(1, len(names) + 1)]
    logged = (where / "out" / "invoke_log.txt").read_text().splitlines()
    assert sorted(Path(line.split(":")[0]).name for line in logged) == names
    for name in names:
        assert f"out/{name}: " in out  # named in its Outputs block
    assert not list((where / "out").rglob(".tmp-*"))
    assert "Traceback" not in err
    _assert_gone(where, _worker_pids(where))


# -- the pool's bookkeeping, on a stand-in for Ray ---------------------------------------------


class FakeRay:
    """Just enough of Ray for Pool: actors whose `draw` answers at once from `script`, a list
    of what each successive draw does ("ok" or "die")."""

    class exceptions:  # as ray.exceptions is spelled
        class RayError(Exception):
            pass

        class RayTaskError(RayError):
            pass

        class ActorDiedError(RayError):
            pass

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.started = 0
        self.drawn: list[str] = []  # each Job's prompt, in the order workers got them

    def remote(self, **options):
        ray = self

        class Ref:
            def __init__(self, value=None, error=None) -> None:
                self.value, self.error = value, error

        class Method:
            def __init__(self, run) -> None:
                self.run = run

            def remote(self, *args):
                return self.run(*args)

        class Actor:
            def __init__(self, number: int) -> None:
                from invoke.distributed.worker import Where

                self.where = Method(lambda: Ref(Where(1000 + number, "host", "cpu")))
                self.draw = Method(self._draw)

            def _draw(self, model: str, job) -> Ref:
                ray.drawn.append(job.prompt)
                if ray.script.pop(0) == "die":
                    return Ref(error=FakeRay.exceptions.ActorDiedError("gone"))
                return Ref(Outcome(images=[f"{job.prompt}"], seconds=0.001))

        class ActorClass:
            def remote(self, settings, threads, number):
                ray.started += 1
                return Actor(number)

        self.Ref = Ref
        return lambda cls: ActorClass()

    def get(self, refs):
        if isinstance(refs, list):
            return [self.get(r) for r in refs]
        if refs.error is not None:
            raise refs.error
        return refs.value

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def kill(self, actor, no_restart=True) -> None:
        pass


def _pool(script: list[str], notes: list[str], workers: int = 1):
    from types import SimpleNamespace

    from invoke.distributed.pool import Pool
    from invoke.shell.report import NoWorkersProgress

    ray = FakeRay(script)
    cluster = SimpleNamespace(ray=ray)
    pool = Pool(
        cluster,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        count=workers,
        threads=1,
        gpus_each=0,
        note=notes.append,
        progress=NoWorkersProgress(),
    )
    return pool, ray


def _job(prompt: str):
    from types import SimpleNamespace

    return SimpleNamespace(prompt=prompt, noises=(1,))


def test_a_job_whose_workers_keep_dying_fails_its_line_and_the_rest_go_on() -> None:
    notes: list[str] = []
    pool, ray = _pool(["die", "die", "die", "ok"], notes)
    failed = pool.outcome(1, "a", _job("doomed"))
    assert "the workers drawing it died 3 times (last: ActorDiedError)" in failed.error
    assert ray.started == 4  # the first worker and three in the places of the dead
    assert sum("died (ActorDiedError); a new worker takes its place" in n for n in notes) == 3
    assert pool.outcome(2, "a", _job("next")).images == ["next"]


def test_a_dead_workers_job_is_drawn_again_and_its_result_comes_once() -> None:
    notes: list[str] = []
    pool, ray = _pool(["ok", "die", "ok", "ok"], notes)
    for tag, prompt in enumerate(("one", "two", "three"), start=1):
        pool.submit(tag, "a", _job(prompt))
    assert pool.outcome(2, "a", _job("two")).images == ["two"]
    assert pool.outcome(3, "a", _job("three")).images == ["three"]
    assert ray.drawn == ["one", "two", "two", "three"]  # "two" again, on the new worker
    assert pool.done == 3  # images received: "two" counted once
    assert ray.started == 2


def test_a_job_asked_for_but_not_planned_goes_first() -> None:
    pool, ray = _pool(["ok"] * 4, [])
    pool.submit(5, "a", _job("planned"))  # drawn at once: the worker is free
    pool.submit(6, "a", _job("later"))
    pool.outcome(4, "a", _job("needed now"))
    assert ray.drawn[:2] == ["planned", "needed now"]


@pytest.mark.e2e
def test_a_live_producer_gets_its_first_picture_before_stdin_closes(
    tmp_path: Path, two_models: Path
) -> None:
    """Planning ahead takes the lines already read and never waits for the next one."""
    where = tmp_path / "live"
    where.mkdir()
    command = [sys.executable, "-m", "invoke", "--config", str(two_models), "--threads", "1"]
    process = subprocess.Popen(
        [*command, "-o", "out", "--workers", "2"],
        cwd=where,
        env=_env(where),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(where / "stderr.txt").open("wb"),
    )
    assert process.stdin is not None
    process.stdin.write(b"a red circle -s 4 -S 1\n")
    process.stdin.flush()
    _wait_for(where / "out" / "000001.1.png", process, "the first picture, with stdin open")
    process.stdin.write(b"a blue square -s 4 -S 2\n")
    process.stdin.close()
    assert process.stdout is not None
    process.stdout.read()
    status = process.wait(timeout=300)
    assert status == 0, (where / "stderr.txt").read_text()
    assert sorted(p.name for p in (where / "out").glob("*.png")) == ["000001.1.png", "000002.2.png"]
    _assert_gone(where, _worker_pids(where))


def test_only_the_cluster_module_imports_ray() -> None:
    """Ray is an optional extra: nothing else may need it (the pool reaches it through the
    Cluster), and `invoke --help` never loads it."""
    import ast

    package = Path(__file__).resolve().parent.parent / "invoke"
    importers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(name == "ray" or name.startswith("ray.") for name in names):
                importers.add(path.relative_to(package).as_posix())
    assert importers == {"distributed/cluster.py"}
    check = "import sys; from invoke.__main__ import cli; print('ray' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", check],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "False"
