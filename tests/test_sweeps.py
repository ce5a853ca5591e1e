"""Sweeps: `{a|b}` alternatives in the prompt, `-S 1,2,3` seed lists and `-I 'dir/*.png'` globs
make one line each, in a stated order, each picture's command the expanded line that remakes it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invoke.config.settings import Settings
from invoke.errors import InvokeError, ParseError
from invoke.line.parse import parse_request
from invoke.line.sweep import SWEEP_LIMIT, alternatives, expand
from invoke.outputs import fetched_command
from invoke.session import Session
from invoke.shell.report import TerminalReporter
from tests.helpers import FakeRunner, batch


def commands(line: str, seeds: list[int] | None = None) -> list[str]:
    return [r.to_command() for r in expand(parse_request(line), seeds)]


def test_groups_expand_first_group_slowest_and_nested_groups_inside_out() -> None:
    assert alternatives("a {red|blue} cat on {grass|sand}") == [
        "a red cat on grass",
        "a red cat on sand",
        "a blue cat on grass",
        "a blue cat on sand",
    ]
    assert alternatives("{a {b|c}|d}!") == ["a b!", "a c!", "d!"]
    assert alternatives("{|very }big") == ["big", "very big"]
    # Escaped braces and bars are literal, and stay escaped so the expanded line stays one line.
    assert alternatives(r"a \{x\|y\} {1|2}") == [r"a \{x\|y\} 1", r"a \{x\|y\} 2"]
    assert alternatives("no groups here") == ["no groups here"]


def test_the_acceptance_line_is_eight_lines_seeds_fastest() -> None:
    made = commands("a {red|blue} circle on a {white|black} background -S 1,2 -s 3")
    assert made == [
        f'"a {c} circle on a {b} background" -s 3 -S {s}'
        for c in ("red", "blue")
        for b in ("white", "black")
        for s in (1, 2)
    ]


def test_a_plain_line_is_itself_and_an_escaped_brace_reaches_the_model_plain() -> None:
    assert commands("a cat -S 5") == ['"a cat" -S 5']
    request = parse_request(r"a \{cat\} -S 5")
    assert expand(request) == [request]
    assert [part.text for part in request.parsed_prompt.positive] == ["a {cat}"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("a {red|blue cat", "never closed"),
        ("a red} cat", "'}' outside"),
        ("a red | cat", "'|' outside"),
        (
            "{a|b}{c|d}{e|f}{g|h}{i|j}{k|l}{m|n}{o|p}{q|r}{s|t}",
            f"1024 pictures, more than the {SWEEP_LIMIT}",
        ),
        ("{a|b} -n 600", f"1200 pictures, more than the {SWEEP_LIMIT}"),
    ],
)
def test_bad_groups_and_too_many_pictures_are_one_line_each(line: str, words: str) -> None:
    with pytest.raises(InvokeError) as caught:
        expand(parse_request(line))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_a_seed_list_reads_back_and_bad_lists_are_refused() -> None:
    assert parse_request("a cat -S 1,2,3").to_command() == '"a cat" -S 1,2,3'
    for bad, shown in (
        ("1,-2", "-2"),
        ("1,x", "x"),
        ("7,", "''"),
        ("1,99999999999", "99999999999"),
    ):
        with pytest.raises(ParseError) as caught:
            parse_request(f"a cat -S {bad}")
        assert shown in str(caught.value), caught.value


def test_n_applies_to_each_seed_and_a_reused_seed_is_fixed_when_typed() -> None:
    assert commands("a {cat|dog} -S 3,4 -n 2") == [
        '"a cat" -S 3 -n 2',
        '"a cat" -S 4 -n 2',
        '"a dog" -S 3 -n 2',
        '"a dog" -S 4 -n 2',
    ]
    # -S -1 in a sweep: the last seed when the line was typed, not the sweep's own pictures.
    assert commands("a {cat|dog} -S -1", [10, 20]) == ['"a cat" -S 20', '"a dog" -S 20']


def test_a_glob_runs_once_per_file_sorted_and_matching_nothing_is_one_line(
    tmp_path: Path,
) -> None:
    for name in ("b.png", "a.png", "c.jpg"):
        Image.new("RGB", (64, 64)).save(tmp_path / name)
    lines = commands(f"a {{cat|dog}} -I '{tmp_path}/*.png' -S 1")
    assert lines == [
        f'"a {animal}" -S 1 -I {tmp_path / name}'
        for name in ("a.png", "b.png")
        for animal in ("cat", "dog")
    ]
    with pytest.raises(InvokeError, match="matches no file"):
        expand(parse_request(f"a cat -I '{tmp_path}/*.webp'"))
    with pytest.raises(InvokeError, match="name the file"):
        expand(parse_request("a {cat|dog} -I -1"))


def test_a_batch_runs_each_expanded_line_and_dry_run_prints_each(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path)
    status, _, _ = batch(runner, ["a {cat|dog} -S 1,2"])
    assert status == 0
    assert [r.to_command() for r in runner.requests] == [
        '"a cat" -S 1',
        '"a cat" -S 2',
        '"a dog" -S 1',
        '"a dog" -S 2',
    ]
    status, out, _ = batch(FakeRunner(tmp_path), ["a {cat|dog} -S 7", "{a|b} -n 999"], dry_run=True)
    assert status == 1
    assert [line for line in out if "-S 7" in line] == ['"a cat" -s 50 -S 7', '"a dog" -s 50 -S 7']


def test_the_acceptance_sweep_makes_eight_pictures_each_remade_by_its_command(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    def session(outdir: Path) -> Session:
        settings = Settings(outdir=outdir, model=str(tiny_model_dir))
        return Session(settings, reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO()))

    line = "a {red|blue} circle on a {white|black} background -S 1,2 -s 2"
    status, _, err = batch(session(tmp_path / "sweep"), [line])
    assert status == 0, err
    made = sorted((tmp_path / "sweep").glob("*.png"))
    assert len(made) == 8
    stored = [fetched_command(path)[0] for path in made]
    assert len(set(stored)) == 8 and all("{" not in c and "-S 1,2" not in c for c in stored)
    again = session(tmp_path / "again")
    for path, command in zip(made, stored, strict=True):
        [remade] = again.generate(parse_request(command))
        with Image.open(path) as a, Image.open(remade) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), command


def test_help_tells_of_sweeps_and_of_the_seed_list() -> None:
    from invoke.shell.help import entry_lines, help_lines

    text = " ".join(" ".join(help_lines()).split())
    assert "{red|blue} in the prompt is one line per alternative" in text
    assert "-I 'dir/*.png' one per file" in text
    seed = " ".join(" ".join(entry_lines("-S", {})).split())
    assert "a list 1,2,3" in seed


def test_the_shell_flags_a_bad_sweep_as_it_is_typed() -> None:
    from prompt_toolkit.document import Document
    from prompt_toolkit.validation import ValidationError

    from invoke.shell.validator import LineValidator

    LineValidator().validate(Document("a {red|blue} cat -S 1,2"))
    for line, words in (("a {red|blue cat", "never closed"), ("{a|b} -n 600", "1200 pictures")):
        with pytest.raises(ValidationError) as caught:
            LineValidator().validate(Document(line))
        assert words in caught.value.message


def test_a_glob_draws_from_each_file_and_each_command_names_and_remakes_it(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("b.png", "blue"), ("a.png", "red")):
        Image.new("RGB", (64, 64), colour).save(photos / name)

    def session(outdir: Path) -> Session:
        settings = Settings(outdir=outdir, model=str(tiny_model_dir))
        return Session(settings, reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO()))

    status, _, err = batch(session(tmp_path / "out"), [f"a circle -I '{photos}/*.png' -s 2 -S 3"])
    assert status == 0, err
    made = sorted((tmp_path / "out").glob("*.png"))
    stored = [fetched_command(path)[0] for path in made]
    assert len(stored) == 2
    assert f"-I {photos / 'a.png'}" in stored[0] and f"-I {photos / 'b.png'}" in stored[1]
    again = session(tmp_path / "again")
    for path, command in zip(made, stored, strict=True):
        [remade] = again.generate(parse_request(command))
        with Image.open(path) as a, Image.open(remade) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), command


def test_fix_upscale_refuses_a_seed_list(tmp_path: Path) -> None:
    runner = FakeRunner(tmp_path)
    status, _, err = batch(runner, ["!fix a.png -U 2 -S 1,2"])
    assert status == 1 and runner.upscaled == []
    assert any("a seed list -S 1,2 is for lines that draw" in line for line in err), err
