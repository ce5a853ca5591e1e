"""Hostile cases about the files invoke writes: see tests/hostile/__init__.py for what a case is.

Security: a link (or a FIFO, or a folder) planted where invoke writes is refused in one line
naming it, and what it points to is left as it was; a picture's own command never chooses the
output folder or the file names. Loss: `!fetch` never replaces a file, and a run leaves no
temporary file, its own or an earlier run's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.hostile import Hostile, Scenario

SECRET = "the user's own file\n"
ONE = "a cat -s 1 -S 1\n"  # the cheapest line that makes a picture: 000001.1.png
LINKED = "it is a symbolic link, and invoke never writes through one; remove it"
NOT_A_FILE = "it is a folder, FIFO or device, not a plain file; move it away"
OR_ANOTHER = ", or choose another folder with -o/--outdir"
KEPT = "!fetch never replaces a file: give a new name (nothing was written)"


# -- building blocks ---------------------------------------------------------------------------


def _out(d: Path) -> Path:
    (d / "out").mkdir(exist_ok=True)
    return d / "out"


def _secret(d: Path) -> Path:
    (d / "secret.txt").write_text(SECRET)
    return d / "secret.txt"


def _nothing_drawn(d: Path) -> None:
    assert not list((d / "out").glob("*.png"))  # refused before anything was drawn


def _secret_unchanged(d: Path) -> None:
    assert (d / "secret.txt").read_text() == SECRET
    _nothing_drawn(d)


def _linked(name: str, target: str = "secret.txt", stdin: str = ONE):
    """`out/<name>` planted as a link to `d/<target>` (a secret file unless said otherwise)."""

    def prepare(d: Path) -> Scenario:
        _secret(d)
        (_out(d) / name).symlink_to(d / target)
        return Scenario(stdin=stdin)

    return prepare


def _picture(path: Path, command: str) -> None:
    """A small PNG whose `Dream` chunk holds `command`, as a picture from someone else would."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Dream", command)
    Image.new("RGB", (8, 8), "gray").save(path, pnginfo=info)


def _fetching(command: str, line: str):
    """A picture `d/pic.png` carrying `command`; stdin is `line`."""

    def prepare(d: Path) -> Scenario:
        _out(d)
        _picture(d / "pic.png", command)
        return Scenario(stdin=line)

    return prepare


# -- security: links, FIFOs and folders where invoke writes ------------------------------------


def _dangling_log(d: Path) -> Scenario:
    (_out(d) / "invoke_log.txt").symlink_to(d / "made-by-invoke.txt")
    return Scenario(stdin=ONE)


def _nothing_made_through_the_link(d: Path) -> None:
    assert not (d / "made-by-invoke.txt").exists()


def _counter_to_a_folder(d: Path) -> Scenario:
    (d / "elsewhere").mkdir()
    (_out(d) / ".next_prefix").symlink_to(d / "elsewhere")
    return Scenario(stdin=ONE)


def _elsewhere_empty(d: Path) -> None:
    assert list((d / "elsewhere").iterdir()) == []


def _fifo(name: str):
    def prepare(d: Path) -> Scenario:
        os.mkfifo(_out(d) / name)
        return Scenario(stdin=ONE)

    return prepare


def _log_folder(d: Path) -> Scenario:
    (_out(d) / "invoke_log.md").mkdir()
    return Scenario(stdin=ONE)


def _intermediates_elsewhere(d: Path) -> Scenario:
    (d / "elsewhere").mkdir()
    (_out(d) / "intermediates").symlink_to(d / "elsewhere")
    return Scenario(stdin="a cat -s 2 -S 1 --save_intermediates 1\n")


def _picture_name_taken_by_a_link(d: Path) -> Scenario:
    (_out(d) / "000001.1.png").symlink_to(d / "made-by-invoke.png")
    return Scenario(stdin=ONE)


def _picture_beside_the_link(d: Path) -> None:
    assert not (d / "made-by-invoke.png").exists()
    assert (d / "out" / "000001.1-1.png").is_file()


def _models_yaml_linked(d: Path) -> Scenario:
    (d / "secret.yaml").write_text(
        "default:\n  description: the user's own\n  embedded: true\n  default: true\n"
    )
    (d / "config" / "invoke-dream").mkdir(parents=True)
    (d / "config" / "invoke-dream" / "models.yaml").symlink_to(d / "secret.yaml")
    return Scenario(stdin="!edit_model default --description changed --yes\n")


def _models_yaml_unchanged(d: Path) -> None:
    assert "the user's own" in (d / "secret.yaml").read_text()
    assert (d / "config" / "invoke-dream" / "models.yaml").is_symlink()


# -- security: a picture's command never chooses where the next pictures go ---------------------


def _fetched_into_a_file(d: Path) -> None:
    written = (d / "cmds.txt").read_text()
    assert '"a cat" -s 1 -S 1' in written
    assert "-o" not in written and "fnformat" not in written


def _replayed_here(d: Path) -> None:
    assert not (d / "elsewhere").exists()
    assert [p.name for p in (d / "out").glob("*.png")] == ["000001.1.png"]


# -- loss: !fetch OUTFILE, leftovers ------------------------------------------------------------


def _fetch_over_a_file(d: Path) -> Scenario:
    _out(d)
    _picture(d / "pic.png", '"a cat" -s 1 -S 1')
    _secret(d)
    return Scenario(stdin="!fetch 'pic*.png' secret.txt\n")


def _secret_kept(d: Path) -> None:
    assert (d / "secret.txt").read_text() == SECRET
    assert not list(d.glob(".tmp-*"))


def _fetch_over_the_log(d: Path) -> Scenario:
    _out(d)
    return Scenario(stdin=ONE + "!fetch 'out/*.png' out/invoke_log.md\n")


def _log_kept(d: Path) -> None:
    log = (d / "out" / "invoke_log.md").read_text()
    assert log.startswith("## 000001.1.png\n") and "# out/" not in log


def _fetch_through_a_dangling_link(d: Path) -> Scenario:
    _out(d)
    _picture(d / "pic.png", '"a cat" -s 1 -S 1')
    (d / "cmds.txt").symlink_to(d / "made-by-invoke.txt")
    return Scenario(stdin="!fetch 'pic*.png' cmds.txt\n")


OLD_PART = ".tmp-k2x9q0ab.part"  # as write_new names its temporary files
NEW_PART = ".tmp-zz81mc3p.part"
NOT_OURS = [".tmp-notours.part", ".tmp-k2x9q0ab.part.txt", "draft.part"]


def _leftovers(d: Path) -> Scenario:
    out = _out(d)
    for name in [OLD_PART, NEW_PART, *NOT_OURS]:
        (out / name).write_bytes(b"\x89PNG half a picture")
    (out / ".tmp-linked00.part").symlink_to(_secret(d))  # a link, even one named like ours
    an_hour_ago = time.time() - 3600
    for name in [OLD_PART, *NOT_OURS]:
        os.utime(out / name, (an_hour_ago, an_hour_ago))
    os.utime(out / ".tmp-linked00.part", (an_hour_ago, an_hour_ago), follow_symlinks=False)
    return Scenario(stdin=ONE)


def _only_old_leftovers_removed(d: Path) -> None:
    out = d / "out"
    assert not (out / OLD_PART).exists()
    for name in [NEW_PART, *NOT_OURS]:  # a write under way elsewhere; names that are not ours
        assert (out / name).is_file(), name
    assert (out / ".tmp-linked00.part").is_symlink()
    assert (d / "secret.txt").read_text() == SECRET


def _no_temporary_file_left(d: Path) -> None:
    assert not list((d / "out").rglob(".tmp-*"))


CASES: tuple[Hostile, ...] = (
    Hostile(
        "symlinked invoke_log.txt",
        "security",
        "`out/invoke_log.txt` is a link to another file",
        _linked("invoke_log.txt"),
        "{d}/out/invoke_log.txt: " + LINKED + OR_ANOTHER,
        check=_secret_unchanged,
    ),
    Hostile(
        "symlinked invoke_log.md",
        "security",
        "`out/invoke_log.md` is a link to another file",
        _linked("invoke_log.md"),
        "{d}/out/invoke_log.md: " + LINKED + OR_ANOTHER,
        check=_secret_unchanged,
    ),
    Hostile(
        "symlinked .next_prefix",
        "security",
        "`out/.next_prefix` (the prefix counter) is a link to another file",
        _linked(".next_prefix"),
        "{d}/out/.next_prefix: " + LINKED + OR_ANOTHER,
        check=_secret_unchanged,
    ),
    Hostile(
        "dangling log link",
        "security",
        "`out/invoke_log.txt` is a link to a file that does not exist yet",
        _dangling_log,
        "{d}/out/invoke_log.txt: " + LINKED + OR_ANOTHER,
        check=_nothing_made_through_the_link,
    ),
    Hostile(
        ".next_prefix linked to a folder",
        "security",
        "`out/.next_prefix` is a link to a folder",
        _counter_to_a_folder,
        "{d}/out/.next_prefix: " + LINKED + OR_ANOTHER,
        check=_elsewhere_empty,
    ),
    Hostile(
        "log is a FIFO",
        "security",
        "`out/invoke_log.txt` is a FIFO (nobody reads it: opening it to write would wait forever)",
        _fifo("invoke_log.txt"),
        "{d}/out/invoke_log.txt: " + NOT_A_FILE + OR_ANOTHER,
    ),
    Hostile(
        "prefix counter is a FIFO",
        "security",
        "`out/.next_prefix` is a FIFO (reading it would wait forever)",
        _fifo(".next_prefix"),
        "{d}/out/.next_prefix: " + NOT_A_FILE + OR_ANOTHER,
    ),
    Hostile(
        "log is a folder",
        "loss",
        "`out/invoke_log.md` is a folder: the picture could not be logged",
        _log_folder,
        "{d}/out/invoke_log.md: " + NOT_A_FILE + OR_ANOTHER,
        check=_nothing_drawn,
    ),
    Hostile(
        "intermediates linked out",
        "security",
        "`out/intermediates` is a link to another folder, and the line has --save_intermediates",
        _intermediates_elsewhere,
        "{d}/out/intermediates: " + LINKED,
        check=_elsewhere_empty,
    ),
    Hostile(
        "picture name is a dangling link",
        "security",
        "`out/000001.1.png`, the next picture's name, is a link to a file that does not exist",
        _picture_name_taken_by_a_link,
        "[1] {d}/out/000001.1-1.png: …",
        status=0,
        outcome="shown",
        check=_picture_beside_the_link,
    ),
    Hostile(
        "models.yaml is a link",
        "security",
        "your models.yaml is a link to another file, and `!edit_model` would rewrite it",
        _models_yaml_linked,
        "cannot write {d}/config/invoke-dream/models.yaml: "
        + LINKED
        + ", or name the file it points to with --config",
        check=_models_yaml_unchanged,
    ),
    Hostile(
        "fetched -o",
        "security",
        "`!fetch pic.png` of a picture whose command has `-o /etc`",
        _fetching('"a cat" -s 1 -S 1 -o /etc', "!fetch pic.png\n"),
        "pic.png: dropped -o /etc from the picture's command "
        "(the output folder is yours to choose)",
        status=0,
        outcome="note",
    ),
    Hostile(
        "fetched --fnformat",
        "security",
        "`!fetch 'pic*.png' cmds.txt` of a picture whose command has `-o /tmp --fnformat "
        "{seed}.x.png`",
        _fetching(
            '"a cat" -s 1 -S 1 -o /tmp --fnformat {seed}.x.png', "!fetch 'pic*.png' cmds.txt\n"
        ),
        "pic.png: dropped -o /tmp and --fnformat '{seed}.x.png' from the picture's command "
        "(the output folder and the file names are yours to choose)",
        status=0,
        outcome="note",
        check=_fetched_into_a_file,
    ),
    Hostile(
        "fetched --fnformat ../x.png",
        "security",
        "`!fetch pic.png` of a picture whose command has `-o /etc --fnformat ../x.png`",
        _fetching('"a cat" -s 1 -S 1 -o /etc --fnformat ../x.png', "!fetch pic.png\n"),
        "pic.png: no usable command in its metadata (Dream: --fnformat: ../x.png contains a /…)",
    ),
    Hostile(
        "fetch then replay",
        "security",
        "`!fetch 'pic*.png' cmds.txt`, then `!replay cmds.txt`, of a picture whose command has "
        "`-o elsewhere`",
        _fetching(
            '"a cat" -s 1 -S 1 -o elsewhere', "!fetch 'pic*.png' cmds.txt\n!replay cmds.txt\n"
        ),
        "pic.png: dropped -o elsewhere from the picture's command "
        "(the output folder is yours to choose)",
        status=0,
        outcome="note",
        check=_replayed_here,
    ),
    Hostile(
        "fetch onto a file",
        "loss",
        "`!fetch 'pic*.png' secret.txt`: the output file already exists",
        _fetch_over_a_file,
        "!fetch: secret.txt already exists; " + KEPT,
        check=_secret_kept,
    ),
    Hostile(
        "fetch onto the log",
        "loss",
        "`!fetch 'out/*.png' out/invoke_log.md`: the output file is the outdir's own log",
        _fetch_over_the_log,
        "!fetch: out/invoke_log.md already exists; " + KEPT,
        check=_log_kept,
    ),
    Hostile(
        "fetch onto a dangling link",
        "loss",
        "`!fetch 'pic*.png' cmds.txt`: `cmds.txt` is a link to a file that does not exist",
        _fetch_through_a_dangling_link,
        "!fetch: cmds.txt already exists as a link; " + KEPT,
        check=_nothing_made_through_the_link,
    ),
    Hostile(
        "leftover .part",
        "loss",
        "the outdir holds `.tmp-*.part` files: one an hour old (a run killed mid-write), one "
        "being written now, and names that are not ours",
        _leftovers,
        "[1] {d}/out/000001.1.png: …",
        status=0,
        outcome="shown",
        check=_only_old_leftovers_removed,
    ),
    Hostile(
        "no temporary file left",
        "loss",
        "a line with `--save_intermediates 1` and `-n 2`",
        lambda d: Scenario(stdin="a cat -s 2 -S 1 -n 2 --save_intermediates 1\n"),
        "[1.2] {d}/out/000001.…png: …",
        status=0,
        outcome="shown",
        check=_no_temporary_file_left,
    ),
)
