"""The request: one command line as a frozen value, and its canonical text.

`parse(req.to_command()) == req` holds for every valid request, so the canonical line that is
printed, logged and stored in each PNG is also the line that remakes the image.

The switch kinds are switches.py and the table of switches table.py; the parser, validate()
and to_command() all read that one table.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from invoke.errors import ParseError
from invoke.line.prompt import Prompt
from invoke.line.prompt_syntax import parse_prompt
from invoke.line.switches import (
    MAX_LINE,
    SWITCH_LIKE,
    Switch,
    Variation,
    bad_character,
    describe_character,
    number_text,
    quote_prompt,
    show_value,
)
from invoke.line.table import SWITCHES

# The switches of one ControlNet unit. Each --controlnet NAME starts a unit; the others belong to
# the latest --controlnet before them (to the first unit when no --controlnet came yet).
CONTROL_FIELDS = (
    "controlnet",
    "control_image",
    "control_processor",
    "control_weight",
    "control_start",
    "control_end",
)


@dataclass(frozen=True)
class ControlUnit:
    """A second or later ControlNet unit of a line: the same switches as the first one's."""

    controlnet: str | None = None
    control_image: str | None = None
    control_processor: str | None = None
    control_weight: float | None = None
    control_start: float | None = None
    control_end: float | None = None


@dataclass(frozen=True)
class Request:
    """A command line. `None` means "not given here": settings fill it in later."""

    prompt: str = ""
    steps: int | None = None
    seed: int | None = None  # negative: reuse an earlier seed (-1 = the last image's)
    iterations: int | None = None
    width: int | None = None
    height: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    hires_fix: bool = False  # txt2img in two passes when larger than the model's native size
    init_img: str | None = None  # "-1" = the previous output
    strength: float | None = None
    fit: bool = False
    init_mask: str | None = None
    invert_mask: bool = False
    # --latents FILE: img2img starts from a previous picture's saved final latents instead of
    # encoding -I's pixels ("-1" = the previous picture's); --save_latents saves each picture's.
    latents: str | None = None
    save_latents: bool = False
    # --outcrop: (side, pixels) pairs in OUTCROP_DIRECTIONS order; () = no extension
    outcrop: tuple[tuple[str, int], ...] = ()
    controlnet: str | None = None  # a ControlNet name, folder or hub id
    control_image: str | None = None  # "-1" = the previous output
    control_processor: str | None = None  # one of CONTROL_PROCESSORS; None = the image as it is
    control_weight: float | None = None  # None = 1
    control_start: float | None = None  # None = 0: from the first step
    control_end: float | None = None  # None = 1: to the last step
    # The units of a second, third... --controlnet, in the line's order (the fields above are
    # the first unit's, so a one-unit line is what it always was).
    more_controls: tuple[ControlUnit, ...] = ()
    ip_adapter: str | None = None  # an IP-Adapter's name or .safetensors path
    ip_image: str | None = None  # its image prompt; "-1" = the previous output
    ip_weight: float | None = None  # None = 1
    refiner: str | None = None  # an SDXL refiner: a models.yaml name or a path
    refiner_start: float | None = None  # None = 0.8 (with --refiner)
    variation_amount: float | None = None
    with_variations: tuple[Variation, ...] = ()
    seamless: bool = False
    seamless_axes: tuple[str, ...] = ()  # ("x",), ("y",) or ("x", "y"); () = both
    upscale: tuple[()] | tuple[int, float] = ()  # -U: (factor, strength); () = not upscaled
    upscaler: str | None = None  # an upscaler name, folder or hub id; None = the factor's own
    grid: bool = False
    outdir: str | None = None
    log_tokenization: bool = False
    skip_normalize: bool = False
    save_intermediates: int | None = None
    intermediates: str | None = None  # "preview" | "decode"
    fnformat: str | None = None
    png_compression: int | None = None

    @cached_property
    def parsed_prompt(self) -> Prompt:
        """The prompt read once (prompt_syntax.parse_prompt): what the session, the backend and
        outputs use of it. ParseError for a LoRA reference or .blend() it cannot use."""
        return parse_prompt(self.prompt, self.skip_normalize)

    def validate(self) -> Request:
        """Raise ParseError (naming the switch, value and what is allowed) unless every field is
        in range and the canonical line fits in MAX_LINE; return self for chaining."""
        if not isinstance(self.prompt, str):
            raise ParseError("prompt", show_value(repr(self.prompt)), "is not text")
        bad = bad_character(self.prompt)
        if bad:
            raise ParseError(
                "prompt", "", f"contains {describe_character(bad[1])} at position {bad[0] + 1}"
            )
        # A LoRA reference or a .blend()/.and() that cannot be used is refused now, not when the
        # model runs.
        self.parsed_prompt  # noqa: B018 - read now, so a bad prompt fails here
        for switch in SWITCHES:
            value = getattr(self, switch.field)
            if not _given(switch, value):
                continue
            switch.check(value)
        if self.hires_fix and self.init_img is not None:
            # The second pass already is img2img, on the first pass's latents: an init image
            # would have to replace one of the two, and silently dropping either surprises.
            raise ParseError(
                "--hires_fix",
                "",
                "makes a new picture in two passes and cannot start from an init image; "
                "drop -I or --hires_fix",
            )
        if self.outcrop:
            self._check_outcrop()
        if self.latents is not None and (self.init_img is None or self.outcrop or self.init_mask):
            raise ParseError(
                "--latents",
                "",
                "replaces the -I picture's pixels by its saved latents: add -I FILE (the picture "
                "they belong to), without -M or --outcrop",
            )
        if self.save_latents and self.upscale:
            raise ParseError(
                "--save_latents", "", "keeps the drawn latents, not -U's enlarged picture; drop -U"
            )
        self._check_control()
        self._check_image_prompt()
        self._check_refiner()
        if self.upscaler is not None and not self.upscale:
            raise ParseError(
                "--upscaler", "", "only means something with -U FACTOR, e.g. -U 4 --upscaler NAME"
            )
        if self.upscale and self.variation_amount is not None and self.init_img is not None:
            # -v with -I feeds each output back in: enlarged, the pictures would double each time
            raise ParseError(
                "-U/--upscale",
                "",
                "cannot be combined with -v and -I: each output is fed back as the next init "
                "image, and would grow each time; use -n for several versions, or -U afterwards "
                "on the line you like",
            )
        length = len(self.to_command())
        if length > MAX_LINE:
            raise ParseError(
                "line", "", f"would be {length} characters long; the limit is {MAX_LINE}"
            )
        return self

    def _check_outcrop(self) -> None:
        """--outcrop builds its canvas and mask from the init image alone: say what it does not
        combine with, rather than let one of the two silently lose."""
        if self.init_img is None:
            raise ParseError(
                "-c/--outcrop",
                "",
                "extends an init image; add -I FILE, or use !fix FILE --outcrop SIDE PIXELS",
            )
        for given, switch, why in (
            (self.init_mask is not None, "-M/--init_mask", "it makes its own mask"),
            (self.invert_mask, "--invert_mask", "it makes its own mask"),
            (self.fit, "--fit", "the new size is the image's own plus the pixels added"),
            (
                self.variation_amount is not None,
                "-v/--variation_amount",
                "-v with -I feeds each output back in, which would extend it again; "
                "use -n for several versions",
            ),
        ):
            if given:
                raise ParseError("-c/--outcrop", "", f"cannot be combined with {switch}: {why}")

    @property
    def controls(self) -> tuple[ControlUnit, ...]:
        """Every ControlNet unit of the line, the first one's switches first; () when none."""
        first = ControlUnit(**{f: getattr(self, f) for f in CONTROL_FIELDS})
        return ((first,) if first != ControlUnit() else ()) + self.more_controls

    def _check_control(self) -> None:
        """A ControlNet needs its image and the image its ControlNet; the other control switches
        need both, and the part of the steps they give must not be empty. With several units,
        a message names the unit (2 = the second --controlnet)."""
        for number, unit in enumerate(self.more_controls, 2):
            for field in CONTROL_FIELDS:
                value = getattr(unit, field)
                switch = _CONTROL_SWITCHES[field]
                if _given(switch, value):
                    switch.check(value)
            _check_unit(unit, f" (unit {number}: --controlnet {unit.controlnet})")
        first = ControlUnit(**{f: getattr(self, f) for f in CONTROL_FIELDS})
        if first.controlnet is None and first.control_image is None:
            for field in CONTROL_FIELDS[2:]:
                if getattr(first, field) is not None:
                    raise ParseError(
                        _CONTROL_SWITCHES[field].canonical,
                        "",
                        "only means something with --controlnet NAME --control_image FILE",
                    )
            return
        _check_unit(
            first, "" if not self.more_controls else f" (unit 1: --controlnet {first.controlnet})"
        )

    def _check_image_prompt(self) -> None:
        """An IP-Adapter needs its picture and the picture its adapter; --ip_weight both."""
        if self.ip_adapter is not None and self.ip_image is None:
            raise ParseError(
                "--ip_adapter", "", "needs --ip_image FILE: the picture it shows the model"
            )
        if self.ip_image is not None and self.ip_adapter is None:
            raise ParseError(
                "--ip_image", "", "needs --ip_adapter NAME: the IP-Adapter that reads it"
            )
        if self.ip_weight is not None and self.ip_adapter is None:
            raise ParseError(
                "--ip_weight",
                "",
                "only means something with --ip_adapter NAME --ip_image FILE",
            )
        if self.ip_adapter is not None and self.refiner is not None:
            raise ParseError(
                "--ip_adapter",
                "",
                "acts on one model's UNet, and --refiner hands the picture to another; "
                "drop --refiner or --ip_adapter",
            )

    def _check_refiner(self) -> None:
        """--refiner_start needs --refiner, and a split that leaves both models a part."""
        if self.refiner_start is None:
            return
        if self.refiner is None:
            raise ParseError(
                "--refiner_start", "", "only means something with --refiner NAME (an SDXL refiner)"
            )
        if not 0 < self.refiner_start < 1:
            raise ParseError(
                "--refiner_start",
                number_text(self.refiner_start),
                "must be between 0 and 1 (not either): the base runs that fraction of the "
                "schedule, the refiner the rest; e.g. 0.8",
            )

    def to_fix_command(self) -> str:
        """An --outcrop request, or a -U request that only enlarges its init image, as the
        `!fix` line that makes it again: the init image first, then the prompt and switches,
        less -I and -W/-H (which !fix works out from the file). InvokeAI recorded such a line in
        sd-metadata's `postprocessing`; so does outputs.py."""
        if self.init_img is None or not (self.outcrop or self.upscale):
            raise ParseError("!fix", "", "needs an init image and --outcrop or -U")
        rest = replace(self, init_img=None, width=None, height=None, outcrop=())
        words = [f"!fix {shlex.quote(self.init_img)} {rest.to_command()}"]
        if self.outcrop:
            outcrop = next(s for s in SWITCHES if s.field == "outcrop")
            words.append(f"{outcrop.canonical} {outcrop.show(self.outcrop)}")
        return " ".join(words)

    def to_command(self) -> str:
        """The canonical line: `"prompt" -s 20 -S 42 ...`, switches in SWITCHES order, fields that
        are None / False / () left out."""
        words = [quote_prompt(self.prompt)]
        self.parsed_prompt  # noqa: B018 - ParseError for a LoRA or .blend() it cannot use
        for switch in SWITCHES:
            value = getattr(self, switch.field)
            if _given(switch, value):
                words += _switch_words(switch, value)
            if switch.field == CONTROL_FIELDS[-1]:  # the first unit written: then the others
                for unit in self.more_controls:
                    words += _unit_words(unit)
        return " ".join(words)


_CONTROL_SWITCHES = {s.field: s for s in SWITCHES if s.field in CONTROL_FIELDS}


def _check_unit(unit: ControlUnit, which: str) -> None:
    """One unit's image, net and step range; `which` names the unit in a message."""
    if unit.control_image is None:
        raise ParseError(
            f"--controlnet{which}",
            "",
            "needs --control_image FILE: the image it follows (an edge map, a depth map...)",
        )
    if unit.controlnet is None:
        raise ParseError(
            "--control_image", "", "needs --controlnet NAME: the ControlNet that reads it"
        )
    start = 0.0 if unit.control_start is None else unit.control_start
    end = 1.0 if unit.control_end is None else unit.control_end
    if start >= end:
        raise ParseError(
            f"--control_start{which}",
            number_text(start),
            f"must be less than --control_end {number_text(end)}: "
            "the ControlNet would act on no step",
        )


def _unit_words(unit: ControlUnit) -> list[str]:
    """A second or later unit's switches, as to_command() writes the first one's."""
    words: list[str] = []
    for field in CONTROL_FIELDS:
        switch, value = _CONTROL_SWITCHES[field], getattr(unit, field)
        if _given(switch, value):
            words += _switch_words(switch, value)
    return words


def _switch_words(switch: Switch, value: Any) -> list[str]:
    """One given switch as the canonical line writes it."""
    if not switch.takes_value:
        return [switch.canonical]
    text = switch.show(value)
    if switch.many:
        # plain words (sides and numbers): no quoting, each one word as typed
        return [switch.canonical, *text.split()]
    if SWITCH_LIKE.match(text):
        # `-I -foo` would read as two switches; `--init_img=-foo` cannot.
        return [f"{switch.long}={shlex.quote(text)}"]
    return [switch.canonical, shlex.quote(text)]


def _given(switch: Switch, value: Any) -> bool:
    if not switch.takes_value:
        return value is not False
    return value is not None and value != ()
