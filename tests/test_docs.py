"""The documentation: the tables in docs/ that are generated from the code, and the README.

The switch table (docs/switches.md) is made from the parser's table, `invoke/line/table.py`; the
launch options (docs/switches.md) from `invoke --help`; the `!` commands (docs/shell.md) from the
registry in `invoke/shell/dispatch.py`. Each sits between `<!-- generated: NAME -->` and
`<!-- end generated: NAME -->` in its page; after changing a switch, an option or a command,
rewrite them with

    .venv/bin/python tests/test_docs.py

The tests below fail while a page differs from the code, while a link in README.md or docs/
leads nowhere, and while the README outgrows its 8 KB or its test command differs from CI's.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
README_LIMIT = 8 * 1024  # bytes: the quick start, a transcript, pictures and links; no essays


def _cell(text: str) -> str:
    """Words in a markdown table cell: one line, pipes escaped, `<lora:NAME>` not taken for HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _code(text: str) -> str:
    """Text in a table cell as code: shown exactly, pipes escaped."""
    return "`" + " ".join(text.split()).replace("|", "\\|") + "`"


def switch_defaults() -> dict[str, str]:
    """What each line switch is when a line leaves it out, in words: from the one home that
    `!help` reads too (the default model's, for the docs)."""
    from invoke.config.shown_defaults import switch_defaults as shown

    return shown()


def switch_table() -> str:
    from invoke.line.table import SWITCHES

    defaults = switch_defaults()
    rows = ["| switch | value | default | what it does |", "|---|---|---|---|"]
    for switch in SWITCHES:
        names = ", ".join(_code(name) for name in switch.names)
        value = _cell(switch.expects) if switch.takes_value else "(a flag)"
        default = _cell(defaults[switch.field])
        rows.append(f"| {names} | {value} | {default} | {_cell(switch.help)} |")
    return "\n".join(rows)


def command_table() -> str:
    import invoke.shell  # noqa: F401 - its modules fill the registry
    from invoke.shell.dispatch import COMMANDS, QUIT_WORDS

    rows = ["| command | what it does |", "|---|---|"]
    for cmd in COMMANDS.values():
        rows.append(f"| {_code(cmd.usage)} | {_cell(cmd.help)} |")
    leave = ", ".join(_code(word) for word in QUIT_WORDS)
    rows.append(f"| {leave}, Ctrl-D | Leave the shell. |")
    return "\n".join(rows)


def launch_table() -> str:
    """The launch options as `invoke --help` lists them."""
    import click

    from invoke.__main__ import cli

    ctx = click.Context(cli, info_name="invoke", **cli.context_settings)
    rows = ["| option | what it does |", "|---|---|"]
    for param in cli.get_params(ctx):
        record = param.get_help_record(ctx)
        if isinstance(param, click.Option) and record is not None:
            names, help_text = record
            rows.append(f"| {_code(names)} | {_cell(help_text)} |")
    return "\n".join(rows)


# (page, region name) -> what goes between its markers
REGIONS = {
    ("docs/switches.md", "switches"): switch_table,
    ("docs/switches.md", "launch options"): launch_table,
    ("docs/shell.md", "commands"): command_table,
}


def regenerated(page: str) -> str:
    """The page's text with each of its generated regions made anew from the code."""
    text = (REPO / page).read_text(encoding="utf-8")
    for (region_page, name), make in REGIONS.items():
        if region_page != page:
            continue
        start, end = f"<!-- generated: {name} -->\n", f"<!-- end generated: {name} -->"
        pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
        if not pattern.search(text):
            raise AssertionError(f"{page} has no {start.strip()} ... {end} region")
        body = start + make() + "\n" + end
        text = pattern.sub(lambda _match, body=body: body, text)
    return text


@pytest.mark.parametrize("page", sorted({page for page, _ in REGIONS}))
def test_generated_tables_match_the_code(page: str) -> None:
    current = (REPO / page).read_text(encoding="utf-8")
    assert current == regenerated(page), (
        f"{page} differs from the code: run `.venv/bin/python tests/test_docs.py` and commit it"
    )


def test_switch_table_names_every_switch_with_its_default() -> None:
    # What a reader checks first, read from the page itself: every spelling and a default.
    from invoke.line.table import SWITCHES

    page = (REPO / "docs" / "switches.md").read_text(encoding="utf-8")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in page.splitlines() if "| `-" in line}
    for switch in SWITCHES:
        names = ", ".join(_code(name) for name in switch.names)
        assert names in rows, names
    steps = rows["`-s`, `--steps`"].split(" | ")
    assert steps[1:3] == ["a whole number in 1..1000", "50"]
    assert "the default model's: k_euler" in rows["`-A`, `-m`, `--sampler`"]


def test_command_table_lists_every_command() -> None:
    import invoke.shell  # noqa: F401
    from invoke.shell.dispatch import COMMANDS

    page = (REPO / "docs" / "shell.md").read_text(encoding="utf-8")
    for cmd in COMMANDS.values():
        assert f"| {_code(cmd.usage)} | {_cell(cmd.help)} |" in page, cmd.name


def _links(text: str) -> list[str]:
    """The targets of markdown links and of <img src=...> in a page."""
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    targets += re.findall(r'<img src="([^"]+)"', text)
    return [t for t in targets if not re.match(r"[a-z]+:", t)]  # not https:, mailto:


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # a `# comment` in a code block
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in REPO.glob("docs/*.md"))]
)
def test_links_lead_somewhere(page: str) -> None:
    source = REPO / page
    broken = []
    for target in _links(source.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
            broken.append(target)
    assert broken == []


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move the detail to docs/"


def test_readme_test_command_is_what_ci_runs() -> None:
    # .ci/run runs "exactly the README's test command": one edited without the other would
    # tell a contributor to run something CI does not.
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    blocks = re.findall(r"```sh\n(.*?)\n```", README.read_text(encoding="utf-8"), re.DOTALL)
    (test_command,) = [b for b in blocks if "pytest" in b]
    assert test_command in ci
    (main_job,) = [b for b in blocks if "/bin/invoke " in b]
    assert main_job.startswith("python3 -m venv .venv && .venv/bin/pip install torch==")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run as a script: `invoke` and `tests` from this checkout
    for page in sorted({page for page, _ in REGIONS}):
        text = regenerated(page)
        if text != (REPO / page).read_text(encoding="utf-8"):
            (REPO / page).write_text(text, encoding="utf-8")
            print(f"rewrote {page}")
