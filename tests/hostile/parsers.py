"""Hostile cases about the parsers of text from outside (the line, the prompt grammar, the
metadata readers): see tests/hostile/__init__.py for what a case is and says.

Lines stay under the parser's 20000-character limit, so that the parser itself reads them;
tests/test_linear_time.py times each parser on 100 KB of the same kinds of text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.hostile import Hostile, Scenario

DIGITS = "9" * 400  # read as a float: infinity
PAREN_RUN = "(" * 19_000  # 143 s to check before issue 18, in the shell at every keystroke


def _line(text: str) -> Scenario:
    return Scenario(stdin=text + "\n")


def _three(text: str) -> Scenario:
    """A batch of three such lines: each took 15 to 30 s to check before issue 18."""
    return Scenario(stdin=(text + "\n") * 3)


def _png(d: Path, name: str, **chunks: str) -> Path:
    """A small PNG in `d` with these text chunks, as another program would write it."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    path = d / name
    Image.new("RGB", (8, 8), "gray").save(path, pnginfo=info)
    return path


def _fetched(name: str, **chunks: str) -> Callable[[Path], Scenario]:
    """A picture with these chunks, made in the case's folder, then `!fetch`ed."""

    def prepare(d: Path) -> Scenario:
        _png(d, name, **chunks)
        return Scenario(stdin=f"!fetch {d / name}\n")

    return prepare


def _sd_metadata(image: object) -> str:
    return json.dumps({"model": "stable diffusion", "image": image})


# An A1111 settings line whose keys never end in a colon: each start tried every shorter key.
A1111_KEYS = "a cat\nSteps: 1, " + ("a" + " " * 8) * 7_000
# ...and a run of spaces that two patterns both take.
A1111_SPACES = "a cat\nSteps: 1," + " " * 60_000 + "x"
# InvokeAI's outcrop !fix command: FILE, then a run of spaces never followed by -s.
OUTCROP_SPACES = "!fix a" + " " * 60_000 + "x -c top 64"


def _wide_picture(d: Path) -> Scenario:
    from PIL import Image

    Image.new("RGB", (4096, 16), "red").save(d / "wide.png")
    return _line(f'!fix {d / "wide.png"} "a red sky" -s 2 -S 1 --outcrop right 64')


def _nothing_drawn(d: Path) -> None:
    out = d / "out"
    assert not out.exists() or not list(out.glob("*.png"))


def _refused(id: str, kind: str, does: str, line: str, message: str) -> Hostile:
    """A line refused before anything is drawn."""
    return Hostile(id, kind, does, lambda d: _line(line), message, check=_nothing_drawn)


CASES: tuple[Hostile, ...] = (
    # -- hangs: text that made a regex or the grammar backtrack ----------------------------------
    Hostile(
        "19 KB of (",
        "hangs",
        "a prompt of 19 000 `(` (none closed, so text)",
        lambda d: _line(PAREN_RUN + " -s 1 -S 1"),
        '[1] …000001.1.png: "(((…" -s 1 -S 1 …',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "three 19 KB lines of (a",
        "hangs",
        "three lines, each a prompt of 9 500 `(a`",
        lambda d: _three("(a" * 9_500 + " -s 1 -S 1"),
        '…000003.1.png: "(a(a(a…(a" -s 1 -S 1 …',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "three 19 KB lines of (a:1",
        "hangs",
        "three lines, each a prompt of 4 700 `(a:1` (AUTOMATIC1111's weight, never closed)",
        lambda d: _three("(a:1" * 4_700 + " -s 1 -S 1"),
        '…000003.1.png: "(a:1(a:1…(a:1" -s 1 -S 1 …',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "three words of 19 000 +",
        "hangs",
        "three lines, each `a`, 19 000 `+` and `x` (signs that end in a letter: text)",
        lambda d: _three("a" + "+" * 19_000 + "x -s 1 -S 1"),
        '…000003.1.png: "a+++…+x" -s 1 -S 1 …',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "three lines of ( before .blend(",
        "hangs",
        "three lines, each 9 000 `(`, then `).blend(`",
        lambda d: _three("(" * 9_000 + ").blend( -s 1 -S 1"),
        '…000003.1.png: "(((…).blend(" -s 1 -S 1 …',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "crafted A1111 chunk: keys",
        "hangs",
        "`!fetch` a PNG whose `parameters` settings line is 7 000 times `a` and 8 spaces",
        _fetched("keys.png", parameters=A1111_KEYS),
        '"a cat" -s 1',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "crafted A1111 chunk: spaces",
        "hangs",
        "`!fetch` a PNG whose `parameters` settings line holds 60 000 spaces",
        _fetched("spaces.png", parameters=A1111_SPACES),
        '"a cat" -s 1',
        status=0,
        outcome="shown",
    ),
    Hostile(
        "crafted InvokeAI outcrop command",
        "hangs",
        "`!fetch` a PNG whose sd-metadata outcrop `dream_command` is `!fix a`, 60 000 spaces, `x`",
        _fetched(
            "outcrop.png",
            **{
                "sd-metadata": _sd_metadata(
                    {
                        "prompt": "a cat",
                        "postprocessing": [{"tool": "outcrop", "dream_command": OUTCROP_SPACES}],
                    }
                )
            },
        ),
        "{d}/outcrop.png: no usable command in its metadata (sd-metadata: image.postprocessing "
        "outcrop: dream_command '!fix a   …' is not InvokeAI's !fix FILE -s STEPS ... -c SIDE "
        "PIXELS)",
    ),
    # -- misreads: RecursionError and OverflowError, each now its own message --------------------
    _refused(
        "150 nested weighted groups",
        "misreads",
        "`(((…(a red sky)1.1…)1.1)1.1` nested 150 deep",
        "(" * 150 + "a red sky" + ")1" * 150 + " -s 1",
        "prompt: nests parentheses more than 100 deep; the limit is 100",
    ),
    _refused(
        "5 000 nested parentheses",
        "misreads",
        "`((((…a red sky…))))` nested 5 000 deep",
        "(" * 5_000 + "a red sky" + ")" * 5_000 + " -s 1",
        "prompt: nests parentheses more than 100 deep; the limit is 100",
    ),
    _refused(
        "8 000 plus signs",
        "misreads",
        "`a` and 8 000 `+` (1.1 to the 8 000th overflows)",
        "a" + "+" * 8_000 + " red sky -s 1",
        "prompt: a+++…... would weigh inf (its groups' weights and signs multiplied); "
        "a weight is at most 100",
    ),
    _refused(
        "-U of 5 000 digits",
        "misreads",
        "`-U 999…`, 5 000 nines (more than int() reads)",
        "a red sky -s 1 -U " + "9" * 5_000,
        "-U/--upscale: 9999999999999999999999999999999999999... is not an upscale factor; use 2, 4",
    ),
    Hostile(
        "sd-metadata nested 30 000 deep",
        "misreads",
        "`!fetch` a PNG whose sd-metadata is `[[[[…` 30 000 deep",
        _fetched("deep.png", **{"sd-metadata": "[" * 30_000 + "]" * 30_000}),
        "{d}/deep.png: no usable command in its metadata "
        "(sd-metadata nests more than 32 levels deep)",
    ),
    Hostile(
        "sd-metadata seed of 400 digits",
        "misreads",
        "`!fetch` a PNG whose sd-metadata seed is a 400-digit number",
        _fetched(
            "seed.png",
            **{"sd-metadata": '{"image": {"prompt": "a cat", "seed": ' + DIGITS + "}}"},
        ),
        "{d}/seed.png: no usable command in its metadata (sd-metadata: image.seed is "
        "9999999999999999999999999999999999999..., too large a number)",
    ),
    Hostile(
        "!fix outcrop past 4096",
        "misreads",
        "`!fix wide.png --outcrop right 64` on a picture 4096 wide (its command would be refused)",
        _wide_picture,
        "-c/--outcrop: wide.png is 4096x16 and right 64 would make it 4160x16; a picture is at "
        "most 4096 pixels a side (as -W/-H allow), so add at most 0 left and right together "
        "and 4080 top and bottom",
        check=_nothing_drawn,
    ),
    # -- garbage: a weight that is no finite number in range, refused when the line is read ------
    _refused(
        ".blend() weight of 400 digits",
        "garbage",
        '`("a cat", "a dog").blend(999…, 1)`, 400 nines',
        f'("a cat", "a dog").blend({DIGITS}, 1) -s 1',
        "prompt: .blend(9999…...) has the weight 9999…...; a weight is in [0, 100]",
    ),
    _refused(
        ".and() weight of 400 digits",
        "garbage",
        '`("a cat", "a dog").and(1, 999…)`, 400 nines',
        f'("a cat", "a dog").and(1, {DIGITS}) -s 1',
        "prompt: .and(1, 999…...) has the weight 9999…...; a weight is in [0, 100]",
    ),
    _refused(
        "(group) weight of 400 digits",
        "garbage",
        "`(a red sky)999…`, 400 nines",
        f"(a red sky){DIGITS} -s 1",
        "prompt: (a red sky)999…... has the weight 999…...; "
        "a group's weight is a plain number in [0, 100]",
    ),
    _refused(
        "(group)1e400",
        "garbage",
        "`(a red sky)1e400`",
        "(a red sky)1e400 -s 1",
        "prompt: (a red sky)1e400 has the weight 1e400; "
        "a group's weight is a plain number in [0, 100]",
    ),
    _refused(
        "(group)nan",
        "garbage",
        "`(a red sky)nan`",
        "(a red sky)nan -s 1",
        "prompt: (a red sky)nan has the weight nan; a group's weight is a plain number in [0, 100]",
    ),
    _refused(
        "groups multiplying past 100",
        "garbage",
        "`(((a red sky)10)10)10`: 1000",
        "(((a red sky)10)10)10 -s 1",
        "prompt: (a red sky)10 would weigh 1000 (its groups' weights and signs multiplied); "
        "a weight is at most 100",
    ),
    _refused(
        "<lora:name:400 digits>",
        "garbage",
        "`<lora:ink:999…>`, 400 nines",
        f"a red sky <lora:ink:{DIGITS}> -s 1",
        "prompt: <lora:ink:999…... has the strength 999…...; a LoRA's strength is in [-10, 10]",
    ),
    _refused(
        "withLora(name, 400 digits)",
        "garbage",
        "`withLora(ink, 999…)`, 400 nines",
        f"a red sky withLora(ink, {DIGITS}) -s 1",
        "prompt: withLora(ink, 999…... has the strength 999…...; a LoRA's strength is in [-10, 10]",
    ),
    _refused(
        "sub-prompt weights that cancel",
        "garbage",
        "`a cat:1 a dog:-0.9999`: scaled to sum 1, 10 000 and -9 999",
        "a cat:1 a dog:-0.9999 -s 1",
        "prompt: has sub-prompt weights that sum to 0.0001: scaled to sum to 1 one would be "
        "1e+04, outside [-100, 100]; give weights that do not cancel out, or -x to use them as "
        "typed",
    ),
)
