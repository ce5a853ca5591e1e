"""The defaults file (invoke.init beside models.yaml): launch options applied before the command
line's, each mistake one line naming the file and the line, and `invoke --show-config`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from invoke.__main__ import cli
from invoke.config.models_yaml import SHIPPED_CONFIG
from invoke.config.user_dir import defaults_file_path


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def write_defaults(text: str) -> Path:
    path = defaults_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def rows(out: str) -> dict[str, list[str]]:
    """--show-config's table: option -> [where from, value]."""
    table = out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["setting", "from", "value"]
    found = {}
    for line in table[1:]:
        option, rest = line.split(maxsplit=1)
        source, value = rest.split("  ", 1) if "  " in rest else (rest, "")
        found[option] = [source.strip(), value.strip()]
    return found


def test_the_defaults_file_applies_and_the_command_line_wins(isolated: Path) -> None:
    write_defaults(
        "# my usual settings\n\n--steps 12  # quick drafts\n--sampler ddim --cfg_scale 5\n--fit\n"
    )
    code, out, err = invoke("--dry-run", stdin="a cat -S 3\n")
    assert code == 0, err
    assert out.splitlines()[0] == '"a cat" -s 12 -S 3 -W 64 -H 64 -C 5.0 -A ddim'
    code, out, err = invoke("--steps", "30", "--dry-run", stdin="a cat -S 3\n")
    assert code == 0, err
    assert out.splitlines()[0] == '"a cat" -s 30 -S 3 -W 64 -H 64 -C 5.0 -A ddim'


def test_show_config_names_where_each_setting_came_from(isolated: Path) -> None:
    path = write_defaults("--outdir ~/pictures\n--steps 12\n\n--fit\n")
    code, out, err = invoke("--steps", "30", "--show-config", "a cat")
    assert code == 0, err
    head = out.splitlines()[:3]
    assert head[0] == f"config folder  {path.parent}  ($XDG_CONFIG_HOME)"
    assert head[1] == f"defaults file  {path}  (3 settings)"
    assert head[2] == f"models.yaml    {SHIPPED_CONFIG}  (the shipped list)"
    table = rows(out)
    home = Path(os.environ["HOME"])
    assert table["--outdir"] == ["invoke.init:1", str(home / "pictures")]  # ~ is the home
    assert table["--steps"] == ["command line", "30"]
    assert table["--fit"] == ["invoke.init:4", "on"]
    assert table["--grid"] == ["default", "off"]
    assert table["--precision"] == ["default", "auto"]
    assert table["--cfg_scale"] == ["default", "[7.5]"]  # unset: as --help describes it
    assert "--show-config" not in table and "--from_file" not in table
    assert not (isolated / "outputs").exists()  # nothing ran


def test_show_config_without_a_defaults_file(isolated: Path) -> None:
    code, out, err = invoke("--show-config")
    assert code == 0, err
    assert f"defaults file  {defaults_file_path()}  (none there)" in out.splitlines()
    assert {source for source, _ in rows(out).values()} == {"default"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--device gpu", "Invalid value for '--device': 'gpu' is not one of"),
        ("--outdri pictures", "unknown launch option --outdri; did you mean --outdir?"),
        ("--outdir", "Option '--outdir' requires an argument."),
        ("a red circle", "a red circle is not a launch option: only those go here"),
        ("--sampler k_eular", "-A/--sampler: k_eular is not one of"),
        ("--strength 2", "-f/--strength: 2.0 is not in (0, 1]"),
        ("--from_file prompts.txt", "--from_file is not a setting; give it on the command line"),
        ("--help", "--help is not a setting; give it on the command line"),
        ('--outdir "my pictures', "no closing quotation; close the quote"),
    ],
)
def test_a_bad_line_is_one_line_naming_the_file_and_line(
    isolated: Path, line: str, message: str
) -> None:
    path = write_defaults(f"# defaults\n--steps 12\n{line}\n--fit\n")
    code, out, err = invoke("--dry-run", stdin="a cat\n")
    assert code == 2
    assert out == ""  # nothing ran
    assert err.count("\n") == 1 and err.startswith(f"invoke: {path}:3: "), err
    assert message in err
    # --help still works, so the person can read what the options are
    code, out, _ = invoke("--help")
    assert code == 0 and "--show-config" in out


def test_a_defaults_file_that_is_no_file_is_one_line(isolated: Path) -> None:
    defaults_file_path().mkdir(parents=True)
    code, out, err = invoke("--dry-run", stdin="a cat\n")
    assert code == 2 and out == ""
    assert err == f"invoke: {defaults_file_path()}: is a folder\n"


def test_a_named_pipe_in_place_of_the_defaults_file_is_refused_unread(isolated: Path) -> None:
    path = defaults_file_path()
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # reading it would wait for a writer forever
    code, out, err = invoke("--dry-run", stdin="a cat\n")
    assert code == 2 and out == ""
    assert err == f"invoke: {path}: is a named pipe (FIFO), not a file\n"
