"""Hostile cases about what invoke reads: batch files and stdin, special files (FIFOs, devices),
encodings, and models.yaml. See tests/hostile/__init__.py for what a case is and says.

A case that needs stdin kept open (a live producer) cannot be one of these: that is
tests/test_reading.py's."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.hostile import Hostile, Scenario

GOOD = "a good line -s 1 -S 7\n"  # after a bad line: the batch must still make it
FIFO_REASON = "is a named pipe (FIFO), not a file"
IMAGE_HINT = "give the path of a PNG, JPEG, WebP or GIF file"
# The shipped model's ControlNet: found by name, so that the control image is what is refused.
CONTROLNETS = Path(__file__).resolve().parents[2] / "invoke" / "default_model" / "controlnets"


def _made(*names: str):
    """A check: the outdir holds exactly these pictures (by seed: `*.7.png`)."""

    def check(d: Path) -> None:
        made = sorted(p.name for p in (d / "out").glob("*.png")) if (d / "out").is_dir() else []
        assert [name.split(".")[-2] for name in made] == list(names), made

    return check


def _stdin(text: str | bytes):
    def prepare(d: Path) -> Scenario:
        return Scenario(stdin=text.replace("{d}", str(d)) if isinstance(text, str) else text)

    return prepare


def _fifo(name: str, *, line: str = "", args: tuple[str, ...] = ()):
    """A FIFO `name` (nobody ever writes to it: opening it to read would wait forever), then
    `line` on stdin or `args` on the command line ({d} = the case's folder)."""

    def prepare(d: Path) -> Scenario:
        Image.new("RGB", (64, 64), "red").save(d / "good.png")
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(d / name)
        words = [a.replace("{d}", str(d)) for a in args]
        return Scenario(args=words, stdin=line.replace("{d}", str(d)) + GOOD if line else None)

    return prepare


def _file(name: str, data: str | bytes, *, args: tuple[str, ...] = (), line: str = ""):
    """A file `name` holding `data`, then `args` and `line` on stdin."""

    def prepare(d: Path) -> Scenario:
        path = d / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data.replace("{d}", str(d)), encoding="utf-8")
        words = [a.replace("{d}", str(d)) for a in args]
        return Scenario(args=words, stdin=line.replace("{d}", str(d)) if line else None)

    return prepare


def _picture_with_a_command(d: Path) -> Path:
    info = PngInfo()
    info.add_text("Dream", '"a fetched cat" -s 1 -S 3')
    Image.new("RGB", (64, 64), "red").save(d / "fetched.png", pnginfo=info)
    return d / "fetched.png"


def _fetch_pattern_with_a_fifo(d: Path) -> Scenario:
    _picture_with_a_command(d)
    os.mkfifo(d / "pipe.png")
    return Scenario(stdin=f"!fetch '{d}/*.png' {d}/commands.txt\n")


def _bom_then_fetch(d: Path) -> Scenario:
    _picture_with_a_command(d)
    return Scenario(stdin=f"\ufeff!fetch {d}/fetched.png\n")


def _picture_as_batch(d: Path) -> Scenario:
    Image.new("RGB", (64, 64)).save(d / "picture.png")
    return Scenario(args=["--from_file", "picture.png"])


def _link_loop(name: str, *, args: tuple[str, ...] = (), yaml: str = ""):
    """`name` a link to itself; `yaml` (if any) written to models.yaml."""

    def prepare(d: Path) -> Scenario:
        (d / name).symlink_to(d / name)
        if yaml:
            (d / "models.yaml").write_text(yaml.replace("{d}", str(d)))
        return Scenario(args=[a.replace("{d}", str(d)) for a in args], stdin=GOOD)

    return prepare


def _config(text: str | bytes):
    return _file("models.yaml", text, args=("--config", "{d}/models.yaml"), line=GOOD)


def _billion_laughs() -> str:
    text = 'lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for n in range(1, 10):
        text += f"lol{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]\n"
    return text + "tiny:\n  embedded: true\n  description: *l9\n"


def _user_copy_is_a_fifo(d: Path) -> Scenario:
    # conftest's `isolated` points XDG_CONFIG_HOME at d/config.
    (d / "config" / "invoke-dream").mkdir(parents=True)
    os.mkfifo(d / "config" / "invoke-dream" / "models.yaml")
    return Scenario(stdin=GOOD)


NOT_TEXT = (
    "has bytes that are not UTF-8 text at column {column} (byte {byte}); stopped reading: a "
    "batch is a text file of command lines, saved as UTF-8"
)
DEEP_BLOCK = "tiny:\n" + "".join(" " * (n + 1) + f"k{n}:\n" for n in range(200))

CASES: tuple[Hostile, ...] = (
    # -- hangs: reads that never end, or never start ---------------------------------------------
    Hostile(
        "--from_file /dev/zero",
        "hangs",
        "`--from_file /dev/zero` (bytes forever, never a line end)",
        lambda d: Scenario(args=["--from_file", "/dev/zero"]),
        "invoke: --from_file: /dev/zero: is a device, not a file; give a file of command lines …",
        status=2,
    ),
    Hostile(
        "--from_file /dev/urandom",
        "hangs",
        "`--from_file /dev/urandom`",
        lambda d: Scenario(args=["--from_file", "/dev/urandom"]),
        "invoke: --from_file: /dev/urandom: is a device, not a file; give a file of command "
        "lines (a stream goes on stdin: ... | invoke)",
        status=2,
    ),
    Hostile(
        "--from_file FIFO",
        "hangs",
        "`--from_file` names a FIFO nobody writes to",
        _fifo("lines.txt", args=("--from_file", "lines.txt")),
        f"invoke: --from_file: lines.txt: {FIFO_REASON}; give a file of command lines …",
        status=2,
    ),
    Hostile(
        "!replay /dev/zero",
        "hangs",
        "`!replay /dev/zero` in a batch",
        _stdin("!replay /dev/zero\n" + GOOD),
        "!replay: /dev/zero: is a device, not a file; give a text file of command lines",
        check=_made("7"),
    ),
    Hostile(
        "!replay FIFO",
        "hangs",
        "`!replay` of a FIFO",
        _fifo("lines.txt", line="!replay {d}/lines.txt\n"),
        f"!replay: {{d}}/lines.txt: {FIFO_REASON}; give a text file of command lines",
        check=_made("7"),
    ),
    Hostile(
        "init image FIFO",
        "hangs",
        "`-I` names a FIFO",
        _fifo("pipe.png", line="a cat -s 2 -I {d}/pipe.png\n"),
        f"…{{d}}/pipe.png: {FIFO_REASON}; give the path of a PNG…",
        check=_made("7"),
    ),
    Hostile(
        "mask FIFO",
        "hangs",
        "`-M` names a FIFO",
        _fifo("mask.png", line="a cat -s 2 -I {d}/good.png -M {d}/mask.png\n"),
        f"mask {{d}}/mask.png: {FIFO_REASON}; {IMAGE_HINT}",
        check=_made("7"),
    ),
    Hostile(
        "control image FIFO",
        "hangs",
        "`--control_image` names a FIFO",
        _fifo(
            "edges.png",
            line="a cat -s 2 --controlnet silhouette --control_image {d}/edges.png\n",
            args=("--controlnet_dir", str(CONTROLNETS)),
        ),
        f"control image {{d}}/edges.png: {FIFO_REASON}; {IMAGE_HINT}",
        check=_made("7"),
    ),
    Hostile(
        "!fix FIFO",
        "hangs",
        "`!fix` of a FIFO",
        _fifo("pipe.png", line="!fix {d}/pipe.png --outcrop top 32\n"),
        f"!fix: {{d}}/pipe.png {FIFO_REASON}; give the path of an image",
        check=_made("7"),
    ),
    Hostile(
        "!fetch FIFO",
        "hangs",
        "`!fetch` of a FIFO",
        _fifo("pipe.png", line="!fetch {d}/pipe.png\n"),
        f"{{d}}/pipe.png: {FIFO_REASON}; give the path of a PNG file",
        check=_made("7"),
    ),
    Hostile(
        "!fetch pattern with a FIFO",
        "hangs",
        "`!fetch 'DIR/*.png' commands.txt` where one match is a FIFO",
        _fetch_pattern_with_a_fifo,
        "wrote 1 command to …commands.txt…",
        status=0,
        outcome="shown",
        check=_made(),
    ),
    Hostile(
        "!fetch /dev/zero",
        "hangs",
        "`!fetch /dev/zero`",
        _stdin("!fetch /dev/zero\n" + GOOD),
        "/dev/zero: is a device, not a file; give the path of a PNG file",
        check=_made("7"),
    ),
    Hostile(
        "stdin of NULs",
        "hangs",
        "`head -c 3M /dev/zero | invoke` (no line end ever)",
        _stdin(b"\0" * 3_000_000),
        "has no end in its first 1000000 characters; stopped reading: this is not a file of "
        "command lines",
        check=_made(),
    ),
    Hostile(
        "30000-character line",
        "hangs",
        "a 30000-character line, then a good line",
        _stdin("a" * 30_000 + "\n" + GOOD),
        "line: is 30000 characters long; the limit is 20000",
        check=_made("7"),
    ),
    Hostile(
        "models.yaml billion laughs",
        "hangs",
        "`--config` of a models.yaml whose aliases expand to 10⁹ values",
        _config(_billion_laughs()),
        "invoke: {d}/models.yaml: has more than 100000 values once its aliases (*name) are "
        "expanded (line 6); a model list needs far fewer",
        status=2,
    ),
    Hostile(
        "models.yaml of 2 MB",
        "hangs",
        "`--config` of a 2 MB models.yaml",
        _config("tiny:\n  embedded: true\n" + "# padding\n" * 210_000),
        "invoke: {d}/models.yaml: is 2.1 MB, more than the 1.0 MB allowed; a model list is a "
        "few KB",
        status=2,
    ),
    Hostile(
        "models.yaml nested 200 deep",
        "hangs",
        "`--config` of a models.yaml nested 200 levels deep",
        _config(DEEP_BLOCK),
        "invoke: {d}/models.yaml: is nested more than 32 levels deep (line 33); a model list is "
        "names, each with its settings under it",
        status=2,
    ),
    Hostile(
        "models.yaml of 100000 [",
        "hangs",
        "`--config` of a models.yaml holding 100000 `[`",
        _config("tiny: " + "[" * 100_000 + "]" * 100_000 + "\n"),
        "invoke: {d}/models.yaml: …nest…",
        status=2,
    ),
    Hostile(
        "--config FIFO",
        "hangs",
        "`--config` names a FIFO",
        _fifo("models.yaml", args=("--config", "models.yaml")),
        f"invoke: --config: models.yaml: {FIFO_REASON}; give a models.yaml file",
        status=2,
    ),
    Hostile(
        "own models.yaml a FIFO",
        "hangs",
        "the user's own models.yaml copy is a FIFO",
        _user_copy_is_a_fifo,
        f"invoke: {{d}}/config/invoke-dream/models.yaml: {FIFO_REASON}; your models.yaml must be "
        "a file: fix or remove it",
        status=2,
    ),
    # -- misreads: encodings, and what a file holds -----------------------------------------------
    Hostile(
        "BOM then # comment",
        "misreads",
        "a batch file saved with a UTF-8 byte-order mark, starting with a `# comment`",
        _file("lines.txt", "\ufeff# a comment -s 1\n", args=("--from_file", "lines.txt")),
        "0 lines run, 0 failed",
        status=0,
        outcome="note",
        check=_made(),
    ),
    Hostile(
        "BOM then !fetch",
        "misreads",
        "a byte-order mark, then `!fetch PICTURE`",
        _bom_then_fetch,
        '"a fetched cat" -s 1 -S 3',
        status=0,
        outcome="shown",
        check=_made(),
    ),
    Hostile(
        "UTF-16 batch file",
        "misreads",
        "`--from_file` of a batch saved as UTF-16 (with its byte-order mark)",
        _file("lines.txt", "a cat -s 1 -S 5\n".encode("utf-16"), args=("--from_file", "lines.txt")),
        '[1] …000001.5.png: "a cat" -s 1 -S 5 …',
        status=0,
        outcome="shown",
        check=_made("5"),
    ),
    Hostile(
        "UTF-16 models.yaml",
        "misreads",
        "`--config` of a models.yaml saved as UTF-16",
        _file(
            "models.yaml",
            "tiny:\n  embedded: true\n  description: ünïcode\n".encode("utf-16"),
            args=("--config", "{d}/models.yaml"),
            line=GOOD,
        ),
        '[1] …000001.7.png: "a good line" -s 1 -S 7 …',
        status=0,
        outcome="shown",
        check=_made("7"),
    ),
    Hostile(
        "binary --from_file",
        "misreads",
        "`--from_file picture.png` (a binary file)",
        _picture_as_batch,
        NOT_TEXT.format(column=1, byte="0x89"),
        check=_made(),
    ),
    Hostile(
        "binary on stdin",
        "misreads",
        "`invoke < /dev/urandom` (bytes that are no text, line ends among them)",
        _stdin(GOOD.encode() + bytes(range(128, 256)) * 64 + b"\n" + GOOD.encode()),
        NOT_TEXT.format(column=1, byte="0x80"),
        check=_made("7"),
    ),
    Hostile(
        "Latin-1 batch",
        "misreads",
        "a batch saved as Latin-1 (`café` as one byte 0xE9)",
        _stdin(GOOD.encode() + b"a caf\xe9 -s 1\n" + b"another -s 1 -S 8\n"),
        NOT_TEXT.format(column=6, byte="0xE9"),
        check=_made("7"),
    ),
    Hostile(
        "models.yaml duplicate names",
        "misreads",
        "a models.yaml naming the same model twice",
        _config("tiny:\n  embedded: true\nother:\n  embedded: true\ntiny:\n  path: /elsewhere\n"),
        "invoke: {d}/models.yaml: model name tiny is given twice (lines 1 and 5); give each "
        "model its own name",
        status=2,
    ),
    Hostile(
        "models.yaml duplicate key",
        "misreads",
        "a models.yaml entry with `path:` twice",
        _config("tiny:\n  path: /one\n  description: x\n  path: /two\n"),
        "invoke: {d}/models.yaml: tiny: path is given twice (lines 2 and 4); keep one",
        status=2,
    ),
    Hostile(
        "--config symlink loop",
        "misreads",
        "`--config` of a link to itself",
        _link_loop("models.yaml", args=("--config", "models.yaml")),
        "invoke: --config: models.yaml: is a symlink loop (a link that leads back to itself); "
        "give a models.yaml file",
        status=2,
    ),
    Hostile(
        "models.yaml path symlink loop",
        "misreads",
        "a models.yaml entry whose `path:` is a link to itself",
        _link_loop(
            "loop",
            args=("--config", "{d}/models.yaml"),
            yaml="tiny:\n  path: loop\n  default: true\n",
        ),
        "invoke: {d}/models.yaml: tiny: path loop is a symlink loop; give a real path",
        status=2,
    ),
    Hostile(
        "--config folder",
        "misreads",
        "`--config` of a folder",
        lambda d: Scenario(args=["--config", str(d)], stdin=GOOD),
        "invoke: --config: {d}: is a folder; give a models.yaml file",
        status=2,
    ),
)
