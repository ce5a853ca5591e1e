"""The switch kinds: how each kind of line switch reads its text, checks its value and writes it
back (an int, a seed, a float, a choice, a path, a `-V` chain, --outcrop, -U, --fnformat...), and
the limits and helpers they share. The table of switches a line takes is table.py.
"""

from __future__ import annotations

import difflib
import math
import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

from invoke.errors import ParseError

INTERMEDIATE_KINDS: tuple[str, ...] = ("preview", "decode")
# What --control_processor can make of a control image first (invoke/processors.py).
CONTROL_PROCESSORS: tuple[str, ...] = ("canny", "invert")
# The axes --seamless can wrap around, in their canonical order: x (left-right), y (top-bottom).
SEAMLESS_AXES: tuple[str, ...] = ("x", "y")
# The sides --outcrop extends, in the order the canonical line names them (InvokeAI's docs wrote
# `top 128 right 64 bottom 64`); the order given does not change the picture, so it is normalised.
OUTCROP_DIRECTIONS: tuple[str, ...] = ("top", "right", "bottom", "left")
SIZE_MAX = 4096  # pixels: the largest -W/-H, and the largest picture an outcrop may make
OUTCROP_MAX = SIZE_MAX  # pixels per side, as -W/-H allow
# -U FACTOR [STRENGTH]: the factors Stable Diffusion's upscalers make (sd-x2-latent-upscaler and
# stable-diffusion-x4-upscaler), and InvokeAI's default strength for its -U.
UPSCALE_FACTORS: tuple[int, ...] = (2, 4)
UPSCALE_STRENGTH = 0.75

MAX_LINE = 20000  # characters; a line longer than this is almost surely a paste accident
SEED_MAX = 2**32 - 1
SEED_REUSE_MIN = -1_000_000  # `-S -N`: the N-th previous seed; nobody has a longer history
FNFORMAT_FIELDS: tuple[str, ...] = (
    "prefix",
    "seed",
    "steps",
    "cfg_scale",
    "sampler",
    "width",
    "height",
    "iteration",
)
# The types outputs.py passes when it fills a --fnformat template (used to try a template out).
_FNFORMAT_SAMPLE: dict[str, Any] = {
    "prefix": "000001",
    "seed": 42,
    "steps": 20,
    "cfg_scale": 7.5,
    "sampler": "k_lms",
    "width": 512,
    "height": 512,
    "iteration": 1,
}
# Format specs are limited to padding/precision so a template cannot ask for a 100 MB name.
_FNFORMAT_SPEC = re.compile(r"0?[0-9]{0,2}(?:\.[0-9]{1,2})?[dfs]?")

# What the parser takes for a switch rather than a value: `-s`, `--seed`, but not `-1`.
SWITCH_LIKE = re.compile(r"--?[A-Za-z]")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def shorten(text: str, limit: int = 40) -> str:
    """Text cut to `limit` characters for a message (a value may be 20000 characters long)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_value(text: str) -> str:
    """A value as an error message shows it: quoted when blank or spaced, cut when huge."""
    text = shorten(text)
    # control characters shown as escapes: never sent raw to a terminal
    text = "".join(f"\\x{ord(ch):02x}" if ord(ch) < 32 and ch != "\t" else ch for ch in text)
    if text == "" or any(ch in " \t" for ch in text):
        return f"'{text}'"
    return text


def bad_character(text: str) -> tuple[int, str] | None:
    """The first character no command line may hold (controls other than tab, lone surrogates)."""
    for index, ch in enumerate(text):
        if ch == "\t":
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return index, ch
    return None


def describe_character(ch: str) -> str:
    if unicodedata.category(ch) == "Cs":
        return "bytes that are not UTF-8 text"
    return f"a control character U+{ord(ch):04X}"


def quote_prompt(text: str) -> str:
    """The prompt in double quotes, escaped so that shlex (posix) reads back exactly `text`."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def closest(word: str, choices: tuple[str, ...] | list[str]) -> str | None:
    """The choice a typo most likely meant (`k_eulr` -> k_euler, `euler` -> k_euler), or None."""
    key = word.lower()
    for prefixed in (key, "k_" + key):  # the k_ samplers are often typed without their k_
        if prefixed in choices and prefixed != word:
            return prefixed
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def _range_text(lo: float, hi: float, open_lo: bool = False) -> str:
    return f"{'(' if open_lo else '['}{number_text(lo)}, {number_text(hi)}]"


def number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


@dataclass(frozen=True, kw_only=True)
class Switch:
    """One line switch. `names` are every spelling the parser accepts; `canonical` is what
    `to_command()` writes. `complete` tells the shell's completer what may follow:
    "path", "sampler", "seed" or None."""

    field: str
    names: tuple[str, ...]
    canonical: str
    help: str
    complete: str | None = None
    metavar: str = ""

    @property
    def takes_value(self) -> bool:
        return True

    @property
    def many(self) -> bool:
        """True for a switch followed by a run of words (`--outcrop top 64 right 32`): the parser
        hands `read` those words joined by spaces, and the canonical line writes them unquoted."""
        return False

    @property
    def long(self) -> str:
        return next(n for n in self.names if n.startswith("--"))

    @property
    def label(self) -> str:
        """`-f/--strength`: how error messages and help name the switch."""
        short = [n for n in self.names if len(n) == 2]
        return f"{short[0]}/{self.long}" if short else self.long

    @property
    def expects(self) -> str:
        """What a value looks like, for "needs a value" messages and help."""
        return self.metavar

    def fail(self, value: str, allowed: str) -> ParseError:
        return ParseError(self.label, show_value(value), allowed)

    def read(self, text: str) -> Any:
        """Text from the command line -> the request field's value; raises ParseError."""
        raise NotImplementedError

    def check(self, value: Any) -> None:
        """Raise ParseError unless `value` is allowed in the request field."""
        raise NotImplementedError

    def show(self, value: Any) -> str:
        """The value as the canonical line writes it (before shell quoting)."""
        return str(value)


@dataclass(frozen=True, kw_only=True)
class FlagSwitch(Switch):
    @property
    def takes_value(self) -> bool:
        return False

    def read(self, text: str) -> Any:
        raise self.fail(text, "takes no value")

    def check(self, value: Any) -> None:
        if not isinstance(value, bool):
            raise self.fail(repr(value), "is not True or False")


@dataclass(frozen=True, kw_only=True)
class IntSwitch(Switch):
    lo: int
    hi: int

    @property
    def expects(self) -> str:
        return f"a whole number in {self.lo}..{self.hi}"

    def read(self, text: str) -> Any:
        if not _INT.fullmatch(text):
            raise self.fail(text, f"is not a whole number; use {self.lo}..{self.hi}")
        # Python refuses int() on >4300 digits; anything that long is out of range anyway.
        if len(text.lstrip("+-0")) > 30:
            raise self.out_of_range(text)
        value = int(text)
        self.check(value, text)
        return value

    def check(self, value: Any, text: str | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(repr(value), f"is not a whole number; use {self.lo}..{self.hi}")
        if not self.lo <= value <= self.hi:
            raise self.out_of_range(str(value) if text is None else text)

    def out_of_range(self, text: str) -> ParseError:
        return self.fail(text, f"is not in {self.lo}..{self.hi}")


@dataclass(frozen=True, kw_only=True)
class SeedSwitch(IntSwitch):
    """A seed, or a list of them (`-S 1,2,3`: a sweep, one line per seed, invoke/line/sweep.py)."""

    @property
    def expects(self) -> str:
        return f"a seed in 0..{self.hi}, a list 1,2,3, or -1 for the last image's"

    def read(self, text: str) -> Any:
        if "," not in text:
            return super().read(text)
        seeds = []
        for part in text.split(","):
            if not _INT.fullmatch(part) or len(part.lstrip("+-0")) > 30:
                raise self.fail(text, f"has {show_value(part)}, not a seed in 0..{self.hi}")
            seeds.append(int(part))
        value = tuple(seeds)
        self.check(value, text)
        return value

    def check(self, value: Any, text: str | None = None) -> None:
        if not isinstance(value, tuple):
            return super().check(value, text)
        for seed in value:
            if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= self.hi:
                shown = text if text is not None else self.show(value)
                raise self.fail(shown, f"has {seed!r}, not a seed in 0..{self.hi}")
        if len(value) < 2:
            raise self.fail(self.show(value), "is a list of one seed; give it without a comma")

    def show(self, value: Any) -> str:
        if isinstance(value, tuple):
            return ",".join(str(seed) for seed in value)
        return str(value)

    def out_of_range(self, text: str) -> ParseError:
        return self.fail(
            text, f"is not in 0..{self.hi} (or {self.lo}..-1 to reuse an earlier seed)"
        )


@dataclass(frozen=True, kw_only=True)
class FloatSwitch(Switch):
    lo: float
    hi: float
    open_lo: bool = False

    @property
    def expects(self) -> str:
        return f"a number in {_range_text(self.lo, self.hi, self.open_lo)}"

    def read(self, text: str) -> Any:
        allowed = _range_text(self.lo, self.hi, self.open_lo)
        if _NOT_FINITE.fullmatch(text):
            raise self.fail(text, f"is not a finite number; use {allowed}")
        if not _FLOAT.fullmatch(text):
            raise self.fail(text, f"is not a number; use {allowed}")
        value = float(text)
        if not math.isfinite(value):  # 1e999
            raise self.fail(text, f"is not in {allowed}")
        self.check(value, text)
        return value

    def check(self, value: Any, text: str | None = None) -> None:
        allowed = _range_text(self.lo, self.hi, self.open_lo)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(repr(value), f"is not a number; use {allowed}")
        shown = repr(value) if text is None else text
        if not math.isfinite(value):
            raise self.fail(shown, f"is not a finite number; use {allowed}")
        too_low = value <= self.lo if self.open_lo else value < self.lo
        if too_low or value > self.hi:
            raise self.fail(shown, f"is not in {allowed}")

    def show(self, value: Any) -> str:
        return repr(float(value))  # shortest text that reads back as the same float


@dataclass(frozen=True, kw_only=True)
class PathSwitch(Switch):
    def read(self, text: str) -> Any:
        self.check(text)
        return text

    def check(self, value: Any) -> None:
        if not isinstance(value, str):
            raise self.fail(repr(value), f"is not text; give {self.metavar}")
        if value.strip(" \t") == "":
            raise self.fail(value, f"is empty; give {self.metavar}")
        bad = bad_character(value)
        if bad:
            raise self.fail(value, f"contains {describe_character(bad[1])}")


@dataclass(frozen=True, kw_only=True)
class ChoiceSwitch(Switch):
    choices: tuple[str, ...]
    listing: str = ""  # the choices as shown, where a plain list would be too long

    @property
    def expects(self) -> str:
        return "one of " + (self.listing or ", ".join(self.choices))

    def read(self, text: str) -> Any:
        value = text.lower()
        self.check(value, text)
        return value

    def check(self, value: Any, text: str | None = None) -> None:
        if value not in self.choices:
            shown = text if text is not None else str(value)
            close = closest(str(value), self.choices)
            hint = f"; did you mean {close}?" if close else ""
            raise self.fail(shown, f"is not {self.expects}{hint}")


@dataclass(frozen=True, kw_only=True)
class VariationsSwitch(Switch):
    @property
    def expects(self) -> str:
        return "seed:weight[,seed:weight...], e.g. 12:0.1,34:0.2"

    def read(self, text: str) -> Any:
        parts = text.split(",")
        chain = []
        for part in parts:
            seed_text, colon, weight_text = part.strip(" \t").partition(":")
            if not (colon and _INT.fullmatch(seed_text) and _FLOAT.fullmatch(weight_text)):
                raise self.fail(
                    part if len(parts) > 1 and part.strip(" \t") else text,
                    f"is not seed:weight; use {self.expects}",
                )
            if len(seed_text.lstrip("+-0")) > 30 or not 0 <= int(seed_text) <= SEED_MAX:
                raise self.fail(part.strip(" \t"), f"has a seed not in 0..{SEED_MAX}")
            weight = float(weight_text)
            if not 0 <= weight <= 1:
                raise self.fail(part.strip(" \t"), "has a weight not in [0, 1]")
            chain.append(Variation(int(seed_text), weight))
        return tuple(chain)

    def check(self, value: Any) -> None:
        if not isinstance(value, tuple) or not value:
            raise self.fail(repr(value), f"is not a chain; use {self.expects}")
        for v in value:
            if not isinstance(v, Variation):
                raise self.fail(repr(v), "is not a Variation")
            if isinstance(v.seed, bool) or not isinstance(v.seed, int):
                raise self.fail(repr(v.seed), f"is not a seed in 0..{SEED_MAX}")
            if not 0 <= v.seed <= SEED_MAX:
                raise self.fail(f"{v.seed}:{v.weight}", f"has a seed not in 0..{SEED_MAX}")
            w = v.weight
            if (
                isinstance(w, bool)
                or not isinstance(w, (int, float))
                or not math.isfinite(w)
                or not 0 <= w <= 1
            ):
                raise self.fail(f"{v.seed}:{w}", "has a weight not in [0, 1]")

    def show(self, value: Any) -> str:
        return ",".join(f"{v.seed}:{float(v.weight)!r}" for v in value)


@dataclass(frozen=True, kw_only=True)
class AxesSwitch(Switch):
    """`--seamless_axes x,y`: which image axes wrap around.

    InvokeAI 2.3 read the value as a list of characters, so `x,y`, `xy` and `y,x` all meant both
    axes; all are taken here too, and kept as a sorted tuple so equal choices are equal values."""

    @property
    def expects(self) -> str:
        return "x, y or x,y"

    def read(self, text: str) -> Any:
        parts = text.lower().split(",")
        letters = "".join(part.strip(" \t") for part in parts)
        if (
            not letters
            or any(not part.strip(" \t") for part in parts)
            or any(ch not in SEAMLESS_AXES for ch in letters)
        ):
            raise self.fail(text, f"is not a list of axes; use {self.expects}")
        return tuple(axis for axis in SEAMLESS_AXES if axis in letters)

    def check(self, value: Any) -> None:
        if not (isinstance(value, tuple) and value and all(isinstance(a, str) for a in value)):
            raise self.fail(repr(value), f"is not a list of axes; use {self.expects}")
        shown = ",".join(value)
        if any(axis not in SEAMLESS_AXES for axis in value):
            raise self.fail(shown, f"is not a list of axes; use {self.expects}")
        if value != tuple(axis for axis in SEAMLESS_AXES if axis in value):
            # What the parser makes of any spelling: equal choices must be equal requests.
            raise self.fail(shown, "must name each axis once, x before y")

    def show(self, value: Any) -> str:
        return ",".join(value)


@dataclass(frozen=True, kw_only=True)
class OutcropSwitch(Switch):
    """`--outcrop top 64 right 32` (`-c`, as InvokeAI spelled it): sides and pixels to extend.

    The value is a tuple of (side, pixels) pairs in OUTCROP_DIRECTIONS order, so equal
    extensions are equal requests whatever order they were typed in."""

    @property
    def many(self) -> bool:
        return True

    @property
    def expects(self) -> str:
        return "SIDE PIXELS pairs, SIDE one of " + ", ".join(OUTCROP_DIRECTIONS) + ", e.g. top 64"

    def read(self, text: str) -> Any:
        words = text.split()
        if not words:
            raise self.fail(text, f"needs {self.expects}")
        given: dict[str, int] = {}
        for index in range(0, len(words), 2):
            side = words[index].lower()
            if side not in OUTCROP_DIRECTIONS:
                raise self.fail(words[index], f"is not a side; use {self.expects}")
            if side in given:
                raise self.fail(side, "is given twice; name each side once")
            if index + 1 == len(words):
                raise self.fail(side, "needs its pixels after it, e.g. " + f"{side} 64")
            pixels = words[index + 1]
            if not _INT.fullmatch(pixels) or len(pixels.lstrip("+-0")) > 30:
                raise self.fail(
                    f"{side} {pixels}", f"needs a whole number of pixels in 1..{OUTCROP_MAX}"
                )
            given[side] = int(pixels)
        value = tuple((side, given[side]) for side in OUTCROP_DIRECTIONS if side in given)
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if not isinstance(value, tuple) or not value:
            raise self.fail(repr(value), f"is not a list of sides; use {self.expects}")
        for pair in value:
            if not (isinstance(pair, tuple) and len(pair) == 2 and pair[0] in OUTCROP_DIRECTIONS):
                raise self.fail(repr(pair), f"is not a side and its pixels; use {self.expects}")
            side, pixels = pair
            if isinstance(pixels, bool) or not isinstance(pixels, int):
                raise self.fail(
                    f"{side} {pixels!r}", f"needs a whole number of pixels in 1..{OUTCROP_MAX}"
                )
            if not 1 <= pixels <= OUTCROP_MAX:
                raise self.fail(
                    f"{side} {pixels}", f"needs a whole number of pixels in 1..{OUTCROP_MAX}"
                )
        order = [side for side, _ in value]
        if order != [side for side in OUTCROP_DIRECTIONS if side in order]:
            # What the parser makes of any spelling: equal extensions must be equal requests.
            raise self.fail(
                self.show(value), "must name each side once, in the order top right bottom left"
            )

    def show(self, value: Any) -> str:
        return " ".join(f"{side} {pixels}" for side, pixels in value)


@dataclass(frozen=True, kw_only=True)
class UpscaleSwitch(Switch):
    """`-U 2 0.75` (InvokeAI's spelling): the factor, then how much of the upscaler's picture
    is kept over a plain enlargement (1 = all of it). The strength is filled in when left out,
    so `-U 2` and `-U 2 0.75` are one request."""

    @property
    def many(self) -> bool:
        return True

    @property
    def expects(self) -> str:
        factors = " or ".join(map(str, UPSCALE_FACTORS))
        return f"FACTOR [STRENGTH]: {factors}, then a strength in [0, 1] [0.75], e.g. -U 2 0.75"

    def read(self, text: str) -> Any:
        words = text.split()
        if not words or len(words) > 2:
            raise self.fail(text, f"needs {self.expects}")
        factors = ", ".join(map(str, UPSCALE_FACTORS))
        factor = words[0]
        # (int() refuses over 4300 digits; anything over 30 is no factor anyway)
        if len(factor) > 30 or not _INT.fullmatch(factor) or int(factor) not in UPSCALE_FACTORS:
            raise self.fail(words[0], f"is not an upscale factor; use {factors}")
        strength = UPSCALE_STRENGTH
        if len(words) == 2:
            if not _FLOAT.fullmatch(words[1]) or not 0 <= float(words[1]) <= 1:
                raise self.fail(words[1], "is not a strength in [0, 1]; e.g. -U 2 0.75")
            strength = float(words[1])
        value = (int(words[0]), strength)
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        if not (isinstance(value, tuple) and len(value) == 2):
            raise self.fail(repr(value), f"is not a factor and a strength; use {self.expects}")
        factor, strength = value
        if isinstance(factor, bool) or factor not in UPSCALE_FACTORS:
            raise self.fail(repr(factor), f"is not an upscale factor; use {self.expects}")
        if (
            isinstance(strength, bool)
            or not isinstance(strength, (int, float))
            or not math.isfinite(strength)
            or not 0 <= strength <= 1
        ):
            raise self.fail(repr(strength), "is not a strength in [0, 1]; e.g. -U 2 0.75")

    def show(self, value: Any) -> str:
        return f"{value[0]} {float(value[1])!r}"


@dataclass(frozen=True, kw_only=True)
class FnformatSwitch(Switch):
    @property
    def expects(self) -> str:
        return "a file name template ending in .png, e.g. {prefix}.{seed}.png"

    def read(self, text: str) -> Any:
        self.check(text)
        return text

    def check(self, value: Any) -> None:
        fields = " ".join("{" + f + "}" for f in FNFORMAT_FIELDS)
        if not isinstance(value, str):
            raise self.fail(repr(value), f"is not text; use {self.expects}")
        for bad, why in (("/", "a /"), ("\\", "a \\"), ("\0", "a NUL"), ("..", "'..'")):
            if bad in value:
                reason = f"contains {why}, which no file name may; use {self.expects}"
                raise self.fail(value, reason)
        bad_char = bad_character(value)
        if bad_char:
            raise self.fail(value, f"contains {describe_character(bad_char[1])}")
        try:
            pieces = list(string.Formatter().parse(value))
        except ValueError as err:
            raise self.fail(value, f"has bad {{}} syntax ({err}); fields: {fields}") from None
        for _literal, name, spec, conversion in pieces:
            if name is None:
                continue
            if name not in FNFORMAT_FIELDS:
                raise self.fail(value, f"uses {{{name}}}; allowed fields: {fields}")
            if conversion or not _FNFORMAT_SPEC.fullmatch(spec or ""):
                raise self.fail(
                    value, f"has a format {{{name}...}} that is not allowed; e.g. {{seed:06d}}"
                )
        try:
            name = value.format(**_FNFORMAT_SAMPLE)
        except (ValueError, TypeError) as err:
            raise self.fail(value, f"cannot be filled in ({err})") from None
        if not value.endswith(".png") or not name.endswith(".png"):
            raise self.fail(value, "must end in .png, e.g. {prefix}.{seed}.png")
        if len(name) <= len(".png"):
            raise self.fail(value, "needs a name before .png, e.g. {prefix}.{seed}.png")


@dataclass(frozen=True)
class Variation:
    """One link of a `-V seed:weight,...` chain."""

    seed: int
    weight: float
