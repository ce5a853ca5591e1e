"""Mutation check: does the test suite notice when a rule in the code is broken on purpose?

Each row of MUTATIONS is one deliberate bug from the December 2026 tests audit
(shared/reviews/tests-audit-2026-12.md, "Mutation kill rate"). For each row this script copies
the checkout's files (tracked and untracked-but-not-ignored, as they are in the working tree) into
a temporary folder, makes the row's one edit there, and runs pytest on the row's test files with
that folder first on PYTHONPATH. The real checkout is never written to.

    killed    pytest exit code 1: a test failed, the bug was noticed
    SURVIVED  pytest exit code 0: every test passed with the bug in place
    stale     the row's old text does not occur exactly once (the code moved; update the row)
    error     anything else: timeout, a collection error, no test file of the row exists

Usage (from the checkout's root, with the project's interpreter):

    .venv/bin/python scripts/mutation_check.py                 # every row, 2 at a time
    .venv/bin/python scripts/mutation_check.py --only M3,M7a   # some rows
    .venv/bin/python scripts/mutation_check.py --jobs 1 --timeout 300

Exits 0 whatever the results; 2 on a usage error (an unknown id).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    id: str
    description: str
    file: str  # relative to the checkout's root
    old: str  # must occur exactly once in `file`
    new: str
    tests: tuple[str, ...]  # test files or node ids expected to kill it


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "M1a",
        "float switch range: the upper bound becomes exclusive (-f 1.0 refused)",
        "invoke/line/switches.py",
        "if too_low or value > self.hi:",
        "if too_low or value >= self.hi:",
        ("tests/test_request.py", "tests/test_parse.py"),
    ),
    Mutation(
        "M1b",
        "float switch range: the lower bound becomes inclusive (-f 0 accepted)",
        "invoke/line/switches.py",
        "too_low = value <= self.lo if self.open_lo else value < self.lo",
        "too_low = value < self.lo if self.open_lo else value < self.lo",
        ("tests/test_parse.py", "tests/test_request.py"),
    ),
    Mutation(
        "M2",
        "img2img step count: int(strength * steps) becomes round(...)",
        "invoke/backend/job.py",
        "    return int(strength * steps)",
        "    return round(strength * steps)",
        ("tests/test_img2img.py", "tests/backend/test_backend_generate.py"),
    ),
    Mutation(
        "M3",
        "seed derivation for -n: the k-th seed ignores the base seed -S",
        "invoke/plan.py",
        "random.Random(base * 1_000_003 + k)",
        "random.Random(k)",
        ("tests/test_plan.py", "tests/test_img2img.py"),
    ),
    Mutation(
        "M4",
        "slerp: anti-parallel noises no longer take the linear path (abs dropped)",
        "invoke/backend/noise.py",
        "if abs(dot.item()) > PARALLEL_DOT:",
        "if dot.item() > PARALLEL_DOT:",
        ("tests/backend/test_backend_noise.py",),
    ),
    Mutation(
        "M4b",
        "variation chain: each link slerps from the base seed's noise, not the running result",
        "invoke/backend/noise.py",
        "    for seed, weight in noise.variations:\n"
        "        latents = slerp(weight, latents, seed_noise(seed, shape))",
        "    base = latents\n"
        "    for seed, weight in noise.variations:\n"
        "        latents = slerp(weight, base, seed_noise(seed, shape))",
        ("tests/backend/test_backend_noise.py",),
    ),
    Mutation(
        "M5a",
        "Dream chunk: holds the request's line, not the given command (drops a !fix command)",
        "invoke/outputs/metadata.py",
        '        "Dream": dream,',
        '        "Dream": request.to_command(),',
        (
            "tests/test_outputs.py",
            "tests/test_cli_upscale.py::test_fix_enlarges_a_file_as_the_line_with_u_would_and_its"
            "_command_remakes_it",
        ),
    ),
    Mutation(
        "M5b",
        "parameters chunk: colons in weighted sub-prompts are no longer escaped as \\:",
        "invoke/outputs/metadata.py",
        "t.replace(':', chr(92) + ':')",
        "t",
        ("tests/test_outputs.py",),
    ),
    Mutation(
        "M6",
        "prompt weights: (words:1.5) nested in a weighted group ignores the outer weight",
        "invoke/line/prompt_syntax.py",
        "self.read(i + 1, end, _checked(weight * factor, text[i : close + 1]), depth)",
        "self.read(i + 1, end, _checked(factor, text[i : close + 1]), depth)",
        ("tests/test_prompt_syntax.py",),
    ),
    Mutation(
        "M7a",
        "never overwrite, fallback without hard links: O_EXCL dropped (an old picture is replaced)",
        "invoke/atomic.py",
        "os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644",
        "os.O_WRONLY | os.O_CREAT, 0o644",
        ("tests/test_outputs.py",),
    ),
    Mutation(
        "M7b",
        "never overwrite, main path: os.link becomes os.replace",
        "invoke/atomic.py",
        "            os.link(tmp, final)",
        "            os.replace(tmp, final)",
        ("tests/test_outputs.py",),
    ),
    Mutation(
        "M8a",
        "4-channel inpainting blend: the kept region noised to this step's level, not the next's",
        "invoke/backend/generate.py",
        "scheduler.add_noise(init, noise, timesteps[i + 1 : i + 2])",
        "scheduler.add_noise(init, noise, timesteps[i : i + 1])",
        ("tests/backend/test_backend_generate.py", "tests/backend/test_backend_inpaint_model.py"),
    ),
    Mutation(
        "M8b",
        "4-channel inpainting blend switched off",
        "invoke/backend/generate.py",
        "blend = _known_region_blend(model, scheduler, init, noise, timesteps, job.mask)",
        "blend = None",
        (
            "tests/backend/test_backend_generate.py",
            "tests/backend/test_backend_inpaint_model.py",
        ),
    ),
    Mutation(
        "M9",
        "sampler map: k_euler runs EulerAncestralDiscreteScheduler",
        "invoke/line/samplers.py",
        'Sampler("k_euler", "EulerDiscreteScheduler", "Euler"),',
        'Sampler("k_euler", "EulerAncestralDiscreteScheduler", "Euler"),',
        ("tests/backend/test_backend_schedulers.py", "tests/backend/test_backend_generate.py"),
    ),
    Mutation(
        "M9b",
        "sampler map: k_euler gets use_karras_sigmas",
        "invoke/line/samplers.py",
        'Sampler("k_euler", "EulerDiscreteScheduler", "Euler"),',
        'Sampler("k_euler", "EulerDiscreteScheduler", "Euler", {"use_karras_sigmas": True}),',
        ("tests/backend/test_backend_generate.py", "tests/backend/test_backend_inpaint_model.py"),
    ),
    Mutation(
        "M10",
        "inpainting UNet condition: the masked image's latents are not masked",
        "invoke/backend/generate.py",
        "_encode(model, pixels * (redraw < 0.5))",
        "_encode(model, pixels)",
        ("tests/backend/test_backend_inpaint_model.py", "tests/backend/test_sdxl_inpaint_model.py"),
    ),
    Mutation(
        "M11",
        "VAE encode: the latents are not multiplied by the VAE's scaling factor",
        "invoke/backend/generate.py",
        "(posterior.mean * model.vae.config.scaling_factor)",
        "(posterior.mean)",
        (
            "tests/backend/test_backend_generate.py",
            "tests/backend/test_backend_inpaint_model.py",
            "tests/backend/test_sdxl_inpaint_model.py",
        ),
    ),
    Mutation(
        "M12",
        "-S -N (reuse an earlier seed): counted from the session's first image, not its last",
        "invoke/plan.py",
        "    return seeds[-back]",
        "    return seeds[back - 1]",
        ("tests/test_plan.py", "tests/test_shell_session.py"),
    ),
    Mutation(
        "M13",
        "--invert_mask: the flag is not passed on to load_mask",
        "invoke/prepare.py",
        "load_mask(mask_path, loaded.image.size, request.invert_mask, mask_notes)",
        "load_mask(mask_path, loaded.image.size, False, mask_notes)",
        ("tests/test_img2img.py", "tests/test_images.py"),
    ),
)


@dataclass(frozen=True)
class Result:
    mutation: Mutation
    outcome: str  # killed / SURVIVED / stale / error
    seconds: float
    detail: str  # the first failing test, or why it is stale / an error


def checkout_files(root: Path) -> list[str]:
    """The checkout's files as git sees them: tracked, plus untracked ones not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout  # fmt: skip
    return [name for name in out.decode().split("\0") if name and (root / name).is_file()]


def copy_checkout(root: Path, files: list[str], dest: Path) -> None:
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def existing_tests(root: Path, tests: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(the row's tests whose file exists, those whose file does not)."""
    present, missing = [], []
    for test in tests:
        (present if (root / test.split("::")[0]).is_file() else missing).append(test)
    return present, missing


def stale_reason(root: Path, mutation: Mutation) -> str | None:
    path = root / mutation.file
    if not path.is_file():
        return f"{mutation.file} does not exist"
    count = path.read_text(encoding="utf-8").count(mutation.old)
    return None if count == 1 else f"old text occurs {count} times in {mutation.file}"


_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)


def first_failure(output: str) -> str:
    found = _FAILED.search(output)
    if found:
        return found.group(1)
    tail = [line for line in output.strip().splitlines() if line.strip()]
    return tail[-1][:160] if tail else ""


def run_one(root: Path, files: list[str], mutation: Mutation, timeout: float) -> Result:
    start = time.monotonic()
    reason = stale_reason(root, mutation)
    if reason is not None:
        return Result(mutation, "stale", 0.0, reason)
    tests, missing = existing_tests(root, mutation.tests)
    if not tests:
        return Result(mutation, "error", 0.0, f"no test file exists: {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix=f"mutation-{mutation.id}-") as tmp:
        work = Path(tmp)
        copy_checkout(root, files, work)
        target = work / mutation.file
        text = target.read_text(encoding="utf-8")
        target.unlink()  # a fresh file, never a write through to anything shared
        target.write_text(text.replace(mutation.old, mutation.new, 1), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(work), PYTHONDONTWRITEBYTECODE="1")
        command = [sys.executable, "-m", "pytest", *tests, "-x", "-q", "-p", "no:cacheprovider"]
        # -n 0: one process (rows already run side by side); the default selection's markers,
        # so a kill counts only when the default `pytest` would see it.
        command += ["-n", "0", "-m", "not slow and not gpu and not e2e"]
        try:
            done = subprocess.run(
                command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return Result(
                mutation, "error", time.monotonic() - start, f"timeout after {timeout:g}s"
            )
    seconds = time.monotonic() - start
    output = done.stdout + done.stderr
    note = f" (missing: {', '.join(missing)})" if missing else ""
    if done.returncode == 1:
        return Result(mutation, "killed", seconds, first_failure(output) + note)
    if done.returncode == 0:
        return Result(mutation, "SURVIVED", seconds, note.strip())
    return Result(
        mutation, "error", seconds, f"pytest exit {done.returncode}: {first_failure(output)}"
    )


def report(result: Result) -> str:
    return f"{result.mutation.id:<4} {result.outcome:<8} {result.seconds:6.1f}s  {result.detail}"


def pick(only: str | None) -> list[Mutation]:
    if not only:
        return list(MUTATIONS)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    known = {m.id.lower(): m for m in MUTATIONS}
    unknown = [name for name in wanted if name.lower() not in known]
    if unknown:
        raise SystemExit(f"unknown mutation id(s): {', '.join(unknown)}; known: "
                         + ", ".join(m.id for m in MUTATIONS))  # fmt: skip
    return [known[name.lower()] for name in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated ids, e.g. M3,M7a")
    parser.add_argument("--jobs", type=int, default=2, help="mutations run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per mutation")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    args = parser.parse_args(argv)
    try:
        chosen = pick(args.only)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.id:<4} {m.file}: {m.description}\n     killers: {', '.join(m.tests)}")
        return 0
    files = checkout_files(ROOT)
    began = time.monotonic()
    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_one, ROOT, files, m, args.timeout) for m in chosen]
        for future in futures:  # in table order, each as soon as it and those above are done
            results.append(future.result())
            print(report(results[-1]), flush=True)
    ran = [r for r in results if r.outcome in ("killed", "SURVIVED")]
    killed = sum(r.outcome == "killed" for r in ran)
    rate = f"{100 * killed / len(ran):.0f}%" if ran else "n/a"
    others = len(results) - len(ran)
    print(f"Kill rate: {killed}/{len(ran)} ({rate}); {others} stale or error; "
          f"{time.monotonic() - began:.0f}s in all")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
