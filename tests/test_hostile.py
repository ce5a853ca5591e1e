"""The round-two catalogue (tests/hostile/): each hostile input gets its one line, its exit status
and leaves the disk as promised; run through the real front end with the tiny model."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.hostile import KINDS, Hostile, files, parsers, reads, values
from tests.test_hardening import _params, assert_no_traceback, pattern, run_cli

HOSTILE: tuple[Hostile, ...] = files.CASES + reads.CASES + parsers.CASES + values.CASES

# What a warning from numpy, torch or Python looks like when it reaches the user.
_WARNING = re.compile(r"\w+Warning: |\.py:\d+: ")


@pytest.mark.parametrize("case", _params(HOSTILE))
def test_hostile_input_gets_one_line(case: Hostile, isolated: Path, tiny_model_dir: Path) -> None:
    scenario = case.prepare(isolated)
    started = time.monotonic()
    ran = run_cli(
        ["--model", str(tiny_model_dir), "--outdir", str(isolated / "out"), *scenario.args],
        scenario.stdin,
    )
    took = time.monotonic() - started
    assert_no_traceback(ran)
    assert not _WARNING.search(ran.err), ran.err
    assert ran.status == case.status, ran.err
    expected = pattern(case.message.replace("{d}", str(isolated)))
    if case.outcome == "shown":
        assert any(expected.fullmatch(line) for line in ran.out.splitlines()), ran.out
    else:
        seen = [re.sub(r"^(line \d+: |>> )", "", line) for line in ran.err_lines]
        assert any(expected.fullmatch(line) for line in seen), ran.err_lines
    assert took < 30, f"took {took:.1f} s"  # a hang shows up here, not as a stuck CI
    if case.check is not None:
        case.check(isolated)


def test_every_kind_has_its_own_cases_and_ids_are_unique() -> None:
    assert {c.kind for c in HOSTILE} == set(KINDS)
    assert len({c.id for c in HOSTILE}) == len(HOSTILE)
