"""Request: the canonical command line, validation, and parse(to_command(r)) == r."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoke.errors import ParseError
from invoke.line.parse import parse_request
from invoke.line.request import Request
from invoke.line.samplers import SAMPLERS, listing
from invoke.line.switches import (
    CONTROL_PROCESSORS,
    FNFORMAT_FIELDS,
    INTERMEDIATE_KINDS,
    MAX_LINE,
    OUTCROP_DIRECTIONS,
    SEED_MAX,
    SEED_REUSE_MIN,
    Variation,
    quote_prompt,
)
from invoke.line.table import SWITCHES
from tests.helpers import readme_request
from tests.hypothesis_budget import examples


def test_canonical_line_of_the_readme_example() -> None:
    assert readme_request().to_command() == (
        '"a red circle on a blue background" -s 20 -S 42 -W 64 -H 64 -C 7.5 -A k_lms'
    )


def test_every_switch_in_canonical_order() -> None:
    r = Request(
        prompt="p",
        steps=1,
        seed=2,
        iterations=3,
        width=16,
        height=24,
        cfg_scale=0.5,
        sampler="ddim",
        init_img="in.png",
        strength=0.25,
        fit=True,
        init_mask="m.png",
        invert_mask=True,
        variation_amount=0.1,
        with_variations=(Variation(12, 0.1), Variation(34, 0.2)),
        seamless=True,
        seamless_axes=("y",),
        grid=True,
        outdir="out",
        log_tokenization=True,
        skip_normalize=True,
        save_intermediates=5,
        intermediates="decode",
        fnformat="{prefix}.png",
        png_compression=9,
    )
    assert r.to_command() == (
        '"p" -s 1 -S 2 -n 3 -W 16 -H 24 -C 0.5 -A ddim -I in.png -f 0.25 --fit -M m.png'
        " --invert_mask -v 0.1 -V 12:0.1,34:0.2 --seamless --seamless_axes y -g -o out -t -x"
        " --save_intermediates 5 --intermediates decode --fnformat '{prefix}.png' -z 9"
    )
    assert parse_request(r.to_command()) == r


def test_hires_fix_sits_after_the_sampler_and_keeps_its_strength() -> None:
    r = Request(prompt="p", width=1024, height=768, sampler="ddim", hires_fix=True, strength=0.6)
    assert r.to_command() == '"p" -W 1024 -H 768 -A ddim --hires_fix -f 0.6'
    assert parse_request(r.to_command()) == r


def test_outcrop_sits_after_the_mask_switches_as_plain_words() -> None:
    r = Request(prompt="p", init_img="in.png", strength=0.9, outcrop=(("top", 64), ("left", 8)))
    assert r.to_command() == '"p" -I in.png -f 0.9 --outcrop top 64 left 8'
    assert parse_request(r.to_command()) == r


def test_an_outcrop_request_is_also_the_fix_line_that_makes_it() -> None:
    # InvokeAI stored this `!fix` line in sd-metadata's postprocessing; it must say the same
    # thing as the Dream line: file first, no -I, no -W/-H (the file and the pixels decide)
    r = Request(
        prompt="a red circle",
        steps=20,
        seed=7,
        width=96,
        height=64,
        cfg_scale=7.5,
        sampler="k_euler",
        init_img="my pic.png",
        strength=0.9,
        outcrop=(("right", 32),),
    )
    assert r.to_fix_command() == (
        "!fix 'my pic.png' \"a red circle\" -s 20 -S 7 -C 7.5 -A k_euler -f 0.9 --outcrop right 32"
    )
    with pytest.raises(ParseError):
        Request(prompt="a cat", init_img="x.png").to_fix_command()


def test_unset_fields_are_left_out_and_the_prompt_is_always_quoted() -> None:
    assert Request().to_command() == '""'
    assert Request(prompt="cat").to_command() == '"cat"'
    # zero is a value, not "unset"
    assert Request(prompt="cat", save_intermediates=0).to_command() == (
        '"cat" --save_intermediates 0'
    )


def test_prompt_quotes_and_backslashes_are_escaped() -> None:
    r = Request(prompt='say "hi" \\ there # -s 5 [ugly]')
    assert r.to_command() == '"say \\"hi\\" \\\\ there # -s 5 [ugly]"'
    assert parse_request(r.to_command()) == r
    assert quote_prompt('a"b') == '"a\\"b"'


def test_paths_are_quoted_only_when_needed() -> None:
    assert Request(init_img="dir/a-b_c.png").to_command() == '"" -I dir/a-b_c.png'
    assert Request(init_img="my pic.png").to_command() == "\"\" -I 'my pic.png'"
    assert Request(init_img="-1").to_command() == '"" -I -1'
    assert Request(outdir="it's").to_command() == "\"\" -o 'it'\"'\"'s'"


def test_a_value_that_looks_like_a_switch_uses_the_long_form() -> None:
    # `-I -foo.png` would read as the switch -f; `--init_img=-foo.png` cannot.
    r = Request(prompt="x", init_img="-foo.png", outdir="--out dir")
    assert r.to_command() == "\"x\" --init_img=-foo.png --outdir='--out dir'"
    assert parse_request(r.to_command()) == r


def test_floats_use_the_shortest_text_that_reads_back() -> None:
    r = Request(cfg_scale=0.1 + 0.2, strength=1e-05, variation_amount=1.0)
    assert r.to_command() == '"" -C 0.30000000000000004 -f 1e-05 -v 1.0'
    assert parse_request(r.to_command()) == r
    assert Request(cfg_scale=7).to_command() == '"" -C 7.0'


def test_negative_seeds_round_trip() -> None:
    r = Request(prompt="a", seed=-1, init_img="-1")
    assert r.to_command() == '"a" -S -1 -I -1'
    assert parse_request(r.to_command()) == r


def test_switch_table_covers_every_field_once() -> None:
    # more_controls: the second and later --controlnet units, the same switches again
    fields = [
        f.name for f in dataclasses.fields(Request) if f.name not in ("prompt", "more_controls")
    ]
    assert [s.field for s in SWITCHES] == fields
    names = [n for s in SWITCHES for n in s.names]
    assert len(names) == len(set(names))
    canonical = "-s -S -n -W -H -C -A --hires_fix -I -f --fit -M --invert_mask"
    canonical += " --latents --save_latents --outcrop"
    canonical += " --controlnet --control_image --control_processor --control_weight"
    canonical += " --control_start --control_end"
    canonical += " --ip_adapter --ip_image --ip_weight"
    canonical += " --refiner --refiner_start"
    canonical += " -v -V --seamless"
    canonical += " --seamless_axes -U --upscaler -g -o -t -x"
    canonical += " --save_intermediates --intermediates --fnformat -z"
    assert [s.canonical for s in SWITCHES] == canonical.split(" ")
    kinds = {s.field: s.complete for s in SWITCHES if s.complete}
    assert kinds == {
        "seed": "seed",
        "sampler": "sampler",
        "init_img": "path",
        "init_mask": "path",
        "latents": "path",
        "outdir": "path",
        "controlnet": "controlnet",
        "upscaler": "upscaler",
        "refiner": "model",
        "control_image": "path",
        "ip_adapter": "ip_adapter",
        "ip_image": "path",
    }


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request(steps=0), "-s/--steps: 0 is not in 1..1000"),
        (Request(steps=True), "-s/--steps: True is not a whole number; use 1..1000"),
        (Request(steps=2.0), "-s/--steps: 2.0 is not a whole number; use 1..1000"),
        (
            Request(seed=SEED_MAX + 1),
            "-S/--seed: 4294967296 is not in 0..4294967295 (or -1000000..-1 to reuse an"
            " earlier seed)",
        ),
        (Request(strength=0.0), "-f/--strength: 0.0 is not in (0, 1]"),
        (
            Request(cfg_scale=float("nan")),
            "-C/--cfg_scale: nan is not a finite number; use [0, 100]",
        ),
        (
            Request(sampler="K_LMS"),
            "-A/--sampler: K_LMS is not one of " + listing() + "; did you mean k_lms?",
        ),
        (Request(intermediates="full"), "--intermediates: full is not one of preview, decode"),
        (Request(init_img=""), "-I/--init_img: '' is empty; give a file path"),
        (Request(fit=None), "-T/--fit: None is not True or False"),  # type: ignore[arg-type]
        (Request(seamless=1), "--seamless: 1 is not True or False"),  # type: ignore[arg-type]
        (
            Request(seamless_axes=("z",)),
            "--seamless_axes: z is not a list of axes; use x, y or x,y",
        ),
        # equal choices must be equal values: only the sorted, unrepeated spelling is valid
        (
            Request(seamless_axes=("y", "x")),
            "--seamless_axes: y,x must name each axis once, x before y",
        ),
        (
            Request(seamless_axes=("x", "x")),
            "--seamless_axes: x,x must name each axis once, x before y",
        ),
        (Request(seamless_axes="x"), "--seamless_axes: 'x' is not a list of axes; use x, y or x,y"),  # type: ignore[arg-type]
        (
            Request(with_variations=(Variation(1, 1.5),)),
            "-V/--with_variations: 1:1.5 has a weight not in [0, 1]",
        ),
        (
            Request(with_variations=(Variation(-3, 0.5),)),
            "-V/--with_variations: -3:0.5 has a seed not in 0..4294967295",
        ),
        (Request(prompt="a\nb"), "prompt: contains a control character U+000A at position 2"),
        (
            Request(fnformat="{seed}.jpg"),
            "--fnformat: {seed}.jpg must end in .png, e.g. {prefix}.{seed}.png",
        ),
        (
            Request(prompt="x" * MAX_LINE),
            f"line: would be {MAX_LINE + 2} characters long; the limit is {MAX_LINE}",
        ),
    ],
)
def test_validate_names_the_switch_value_and_range(request_: Request, message: str) -> None:
    with pytest.raises(ParseError) as err:
        request_.validate()
    assert str(err.value) == message


def test_validate_returns_the_request() -> None:
    r = Request(prompt="a", steps=20)
    assert r.validate() is r


# --- the round-trip property over generated valid requests ---------------------------------

_TEXT_CHARS = st.characters(exclude_categories=("Cc", "Cs"), include_characters="\t")
_TRICKY = st.sampled_from(
    [
        '"',
        "'",
        "\\",
        "\\\\",
        '\\"',
        "#",
        " # c",
        " -x ",
        " -s 20",
        "--seed=1",
        "[ugly]",
        "a:0.5",
        "\\:",
        "é",
        "猫",
        "🐱",
        "!dream",
        "q",
        " ",
        "\t",
        "$HOME",
        "`x`",
        "=",
        "-1",
    ]
)
_PROMPTS = st.lists(st.one_of(st.text(_TEXT_CHARS, max_size=8), _TRICKY), max_size=8).map("".join)
_PATHS = st.one_of(
    st.sampled_from(["-1", "-foo", "--bar=1", "#x", "my pic.png", "a/b.png", "it's", '"q"']),
    st.text(_TEXT_CHARS, min_size=1, max_size=20),
).filter(lambda p: p.strip(" \t") != "")
_FNFORMATS = st.builds(
    lambda parts: "".join(parts) + ".png",
    st.lists(
        st.sampled_from(
            ["{" + f + "}" for f in FNFORMAT_FIELDS] + ["{seed:06d}", "-", ".", "_", "x", "{{", " "]
        ),
        min_size=1,
        max_size=5,
    ),
).filter(lambda template: ".." not in template)


def _maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


def _unit(exclude_min: bool = False) -> st.SearchStrategy:
    return st.floats(0, 1, exclude_min=exclude_min, allow_nan=False)


VALID_REQUESTS = st.builds(
    Request,
    prompt=_PROMPTS,
    steps=_maybe(st.integers(1, 1000)),
    seed=_maybe(st.integers(SEED_REUSE_MIN, SEED_MAX)),
    iterations=_maybe(st.integers(1, 1000)),
    width=_maybe(st.integers(16, 4096)),
    height=_maybe(st.integers(16, 4096)),
    cfg_scale=_maybe(st.floats(0, 100, allow_nan=False)),
    sampler=_maybe(st.sampled_from(SAMPLERS)),
    hires_fix=st.booleans(),
    init_img=_maybe(_PATHS),
    strength=_maybe(_unit(exclude_min=True)),
    fit=st.booleans(),
    init_mask=_maybe(_PATHS),
    invert_mask=st.booleans(),
    outcrop=st.lists(
        st.tuples(st.sampled_from(OUTCROP_DIRECTIONS), st.integers(1, 4096)),
        max_size=4,
        unique_by=lambda pair: pair[0],
    ).map(lambda pairs: tuple(sorted(pairs, key=lambda p: OUTCROP_DIRECTIONS.index(p[0])))),
    variation_amount=_maybe(_unit()),
    with_variations=st.lists(
        st.builds(Variation, st.integers(0, SEED_MAX), _unit()), max_size=3
    ).map(tuple),
    seamless=st.booleans(),
    seamless_axes=st.sampled_from([(), ("x",), ("y",), ("x", "y")]),
    grid=st.booleans(),
    outdir=_maybe(_PATHS),
    log_tokenization=st.booleans(),
    skip_normalize=st.booleans(),
    save_intermediates=_maybe(st.integers(0, 10000)),
    intermediates=_maybe(st.sampled_from(INTERMEDIATE_KINDS)),
    fnformat=_maybe(_FNFORMATS),
    png_compression=_maybe(st.integers(0, 9)),
).filter(lambda r: not (r.hires_fix and r.init_img is not None))  # validate() refuses both
# --outcrop only with an init image, and without what would make a mask or size of its own
VALID_REQUESTS = VALID_REQUESTS.filter(
    lambda r: (
        not r.outcrop
        or (
            r.init_img is not None
            and r.init_mask is None
            and not r.invert_mask
            and not r.fit
            and r.variation_amount is None
        )
    )
)
# A ControlNet comes with its image; weight, start and end only with both, start before end.
_CONTROLS = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {"controlnet": _PATHS, "control_image": _PATHS},
        optional={
            "control_processor": st.sampled_from(CONTROL_PROCESSORS),
            "control_weight": st.floats(0, 2, allow_nan=False),
            "control_start": st.floats(0, 0.5, allow_nan=False),
            "control_end": st.floats(0.5, 1, exclude_min=True, allow_nan=False),
        },
    ),
)
VALID_REQUESTS = st.tuples(VALID_REQUESTS, _CONTROLS).map(
    lambda pair: dataclasses.replace(pair[0], **pair[1])
)


@settings(max_examples=examples(500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID_REQUESTS)
def test_every_valid_request_round_trips_through_its_canonical_line(r: Request) -> None:
    r.validate()
    line = r.to_command()
    back = parse_request(line)
    assert back == r
    assert back.to_command() == line
