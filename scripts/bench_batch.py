"""A batch in one process against the same batch on workers (--workers), in one run.

    python scripts/bench_batch.py [--lines 40] [--workers 2] [--steps 20] [--model PATH]

Both runs are the real CLI on the same file (the default model unless --model), each from a
fresh process: one `invoke --from_file` and one `invoke --from_file --workers N`. It prints,
for each, the images per second while pictures were coming (first picture to last: model
loads and Ray's start are left out, and printed apart as the time to the first picture), the
ratio, and the per-Job overhead of dispatch and result shipping that the driver measured (a
Job's round trip less the worker's own time on it). Scaling to more GPUs can be reasoned about
from overhead / job time.

Threads: the one process gets every CPU (--threads = the CPU count), each worker its share
(CPUs / N, as --workers does by default), so on a CPU the two runs use the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ("a red circle on a blue background", "a green square", "a yellow star", "a grey cat")


def batch(lines: int, steps: int) -> str:
    return "".join(f"{PROMPTS[k % len(PROMPTS)]} -s {steps} -S {k + 1}\n" for k in range(lines))


def run(folder: Path, args: list[str], text: str) -> dict[str, float | str]:
    """One CLI run with --json: when each picture came, the last stderr lines."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batch.txt").write_text(text)
    command = [sys.executable, "-m", "invoke", "--json", "-o", "out", *args]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--from_file", "batch.txt"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TMPDIR": "/tmp"},
    )
    times = []
    assert process.stdout is not None
    for line in process.stdout:
        if json.loads(line).get("type") == "picture":
            times.append(time.perf_counter() - started)
    err = process.stderr.read() if process.stderr else ""
    if process.wait() != 0 or not times:
        raise SystemExit(f"{' '.join(args) or 'one process'} failed:\n{err[-2000:]}")
    rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    overhead = re.search(r"dispatch and shipping ([0-9.]+) ms a job", err)
    return {
        "images": len(times),
        "first": times[0],
        "total": time.perf_counter() - started,
        "rate": rate,
        "overhead_ms": float(overhead.group(1)) if overhead else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default=None, help="a model folder [the default model]")
    options = parser.parse_args()
    cpus = os.cpu_count() or 1
    model = ["--model", options.model] if options.model else []
    text = batch(options.lines, options.steps)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as temp:
        one = run(Path(temp) / "one", [*model, "--threads", str(cpus)], text)
        each = max(1, cpus // options.workers)
        spread = run(
            Path(temp) / "workers",
            [*model, "--threads", str(each), "--workers", str(options.workers)],
            text,
        )
    load = os.getloadavg()[0]
    print(f"{options.lines} lines x {options.steps} steps, {cpus} CPUs, load {load:.1f}")
    for name, result in (("one process", one), (f"--workers {options.workers}", spread)):
        print(
            f"{name:>12}: {result['rate']:.2f} images/s "
            f"(first picture after {result['first']:.1f}s, all {result['images']} "
            f"in {result['total']:.1f}s)"
        )
    ratio = spread["rate"] / one["rate"] if one["rate"] else float("nan")
    print(f"       ratio: {ratio:.2f}x (workers / one process, images/s)")
    print(f"    overhead: {spread['overhead_ms']:.1f} ms a job (dispatch and result shipping)")
    job_s = options.workers / spread["rate"] if spread["rate"] else float("nan")
    print(
        f"     per job: {1000 * job_s:.0f} ms on a worker; overhead / job time = "
        f"{spread['overhead_ms'] / (1000 * job_s):.3f}"
    )


if __name__ == "__main__":
    main()
