"""Two real `invoke` processes writing into one output folder at the same time.

Both run the same 25 lines (the same seeds, so the same names but for the prefix): every prefix
must be reserved once, every file written once under its own name, every log line kept.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

IMAGES = 25


def _start(tmp_path: Path, model: Path, outdir: Path, batch: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["XDG_CACHE_HOME"] = env["XDG_CONFIG_HOME"] = str(tmp_path / "home")
    command = [sys.executable, "-m", "invoke", "--model", str(model), "--outdir", str(outdir)]
    return subprocess.Popen(
        [*command, "--from_file", str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )


def test_two_processes_make_fifty_distinct_files_and_fifty_log_lines(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    outdir = tmp_path / "shared"
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"image {n} -s 1 -S {n}\n" for n in range(IMAGES)))
    processes = [_start(tmp_path, tiny_model_dir, outdir, batch) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err

    # What each process says it wrote: 25 each, no path claimed twice.
    claimed: dict[Path, str] = {}
    for out, _ in results:
        written = re.findall(r"^\[\d+\] (.+?\.png): (.+)$", out, flags=re.MULTILINE)
        assert len(written) == IMAGES
        for path, command in written:
            assert Path(path) not in claimed, f"{path} written by both processes"
            claimed[Path(path)] = command

    files = sorted(outdir.glob("*.png"))
    assert len(files) == 2 * IMAGES
    assert set(files) == set(claimed)
    assert len({f.name.split(".")[0] for f in files}) == 2 * IMAGES  # one prefix per line
    assert not list(outdir.glob(".tmp-*"))
    # No file was overwritten: each holds exactly the command its writer printed for it.
    for path in files:
        with Image.open(path) as image:
            image.load()
            assert image.text["Dream"] == claimed[path]

    log = (outdir / "invoke_log.txt").read_text().splitlines()
    assert len(log) == 2 * IMAGES
    logged = {line.split(": ", 1)[0] for line in log}
    assert {Path(name).name for name in logged} == {f.name for f in files}
