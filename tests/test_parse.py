"""The invoke> line parser: InvokeAI spellings, the bad-input catalogue, prompts, and fuzzing."""

from __future__ import annotations

import math
import shlex
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invoke.errors import ParseError
from invoke.line.parse import (
    SWITCHES,
    ShellCommand,
    join_args,
    parse_line,
    parse_request,
)
from invoke.line.request import Request
from invoke.line.samplers import SAMPLERS, listing
from invoke.line.switches import (
    FNFORMAT_FIELDS,
    MAX_LINE,
    OUTCROP_DIRECTIONS,
    OUTCROP_MAX,
    SEED_MAX,
    UPSCALE_FACTORS,
    AxesSwitch,
    ChoiceSwitch,
    FloatSwitch,
    FnformatSwitch,
    IntSwitch,
    OutcropSwitch,
    PathSwitch,
    Switch,
    UpscaleSwitch,
    Variation,
    VariationsSwitch,
)
from tests.hypothesis_budget import examples

# --- lines users type, as InvokeAI accepted them -------------------------------------------

FNFORMAT_HINT = "use a file name template ending in .png, e.g. {prefix}.{seed}.png"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "a red circle on a blue background -s 20 -S 42 -C 7.5",
            Request(prompt="a red circle on a blue background", steps=20, seed=42, cfg_scale=7.5),
        ),
        # attached values, InvokeAI style
        ("a cat -s20 -S42 -Ak_lms -C7.5", Request("a cat", 20, 42, cfg_scale=7.5, sampler="k_lms")),
        ("a cat -mK_EULER_A", Request("a cat", sampler="k_euler_a")),  # -m, any case
        ("a cat --seed=42 --steps=20", Request("a cat", steps=20, seed=42)),
        ("a cat -S=42", Request("a cat", seed=42)),
        ("a cat -steps 20 -outdir shots", Request("a cat", steps=20, outdir="shots")),
        ("a cat --str 0.5 -I x.png", Request("a cat", init_img="x.png", strength=0.5)),
        # -V chains
        (
            "a cat -S 7 -V 12:0.1,34:0.2",
            Request("a cat", seed=7, with_variations=(Variation(12, 0.1), Variation(34, 0.2))),
        ),
        (
            "a cat -V ' 12:0.1 , 34:1'",
            Request("a cat", with_variations=(Variation(12, 0.1), Variation(34, 1.0))),
        ),
        # negative values where they mean something
        ("a cat -S -1", Request("a cat", seed=-1)),
        ("a cat -I -1 -f 0.5", Request("a cat", init_img="-1", strength=0.5)),
        ("a cat --init_img=-foo.png", Request("a cat", init_img="-foo.png")),
        # flags in all spellings
        ("a cat -T", Request("a cat", fit=True)),
        ("a cat -fit", Request("a cat", fit=True)),
        (
            "a cat --fit -g -t -x --invert_mask",
            Request(
                "a cat",
                fit=True,
                grid=True,
                log_tokenization=True,
                skip_normalize=True,
                invert_mask=True,
            ),
        ),
        # the prompt ends at the first whitespace + -letter, not before
        ("a half-moon -s 5", Request("a half-moon", steps=5)),
        ("a cat -1 year old", Request("a cat -1 year old")),
        ("a cat - dog", Request("a cat - dog")),
        ('a kitten\'s toy -o "my dir"', Request("a kitten's toy", outdir="my dir")),
        ('a "big" cat', Request('a "big" cat')),
        ("  a cat   -s 5  ", Request("a cat", steps=5)),
        # quoted prompts: the first shell word
        ('"a cat -s 20" -n 2', Request("a cat -s 20", iterations=2)),
        ("'a cat # not a comment' -n 2", Request("a cat # not a comment", iterations=2)),
        ('"  spaced  "', Request("  spaced  ")),
        ('"" -I x.png', Request("", init_img="x.png")),
        # no prompt at all: -I's metadata supplies it later
        ("-I x.png -s 10", Request("", steps=10, init_img="x.png")),
        ("--seed 3", Request("", seed=3)),
        # comments
        ("a cat -s 5 # a comment", Request("a cat", steps=5)),
        ("a cat # -s 5", Request("a cat")),
        ('"a #1 cat" -o out#1 # c', Request("a #1 cat", outdir="out#1")),
        ("a cat#1 -s 5", Request("a cat#1", steps=5)),
        ("a cat -o 'x # y'", Request("a cat", outdir="x # y")),
        # the later of two values wins; a flag twice is the flag
        ("a cat -s 5 -s 6 --steps 7", Request("a cat", steps=7)),
        ("a cat -g -g", Request("a cat", grid=True)),
        # unicode and tabs
        ("猫 🐱 über -s 5", Request("猫 🐱 über", steps=5)),
        ("a\tcat\t-s\t5", Request("a\tcat", steps=5)),
        ("a cat -s 5\n", Request("a cat", steps=5)),
        ("a cat -s 5\r\n", Request("a cat", steps=5)),
        # batch input decoded with errors="replace": U+FFFD is text (the batch echoes it)
        ("a cat \ufffd -s 3", Request("a cat \ufffd", steps=3)),
        # +sign and leading zeros are numbers
        ("a cat -s +007 -C .5", Request("a cat", steps=7, cfg_scale=0.5)),
        (
            "a cat --intermediates DECODE --save_intermediates 0",
            Request("a cat", save_intermediates=0, intermediates="decode"),
        ),
        (
            "a cat --fnformat '{prefix}-{seed:06d}.png'",
            Request("a cat", fnformat="{prefix}-{seed:06d}.png"),
        ),
        # --seamless and its axes, spelled as InvokeAI 2.3 took them
        ("a brick wall --seamless", Request("a brick wall", seamless=True)),
        (
            "a brick wall --seamless --seamless_axes x",
            Request("a brick wall", seamless=True, seamless_axes=("x",)),
        ),
        (
            "a wall --seamless_axes=Y --seamless",
            Request("a wall", seamless=True, seamless_axes=("y",)),
        ),
        ("a wall --seamless_axes y,x", Request("a wall", seamless_axes=("x", "y"))),
        ("a wall --seamless_axes xy", Request("a wall", seamless_axes=("x", "y"))),
        # --hires_fix, and `--hires` as InvokeAI's web server wrote it (a unique prefix)
        (
            "a cat -W 1024 -H 768 --hires_fix",
            Request("a cat", width=1024, height=768, hires_fix=True),
        ),
        ("a cat --hires -f 0.6", Request("a cat", strength=0.6, hires_fix=True)),
        # --outcrop / -c as InvokeAI 2.2/2.3 took it: SIDE PIXELS pairs up to the next switch, in
        # any order and case; kept in one order so equal extensions are equal requests
        (
            "a cat -I x.png --outcrop top 64 right 32 -s 5",
            Request("a cat", init_img="x.png", outcrop=(("top", 64), ("right", 32)), steps=5),
        ),
        (
            "a cat -I x.png -c Left 8 bottom 16 top 24",
            Request("a cat", init_img="x.png", outcrop=(("top", 24), ("bottom", 16), ("left", 8))),
        ),
        (
            "a cat -I x.png --outcrop=right 8",
            Request("a cat", init_img="x.png", outcrop=(("right", 8),)),
        ),
        (
            "a cat -I x.png --outc right 8",
            Request("a cat", init_img="x.png", outcrop=(("right", 8),)),
        ),
        # words that are shell commands, when they are not alone
        ("q -s 5", Request("q", steps=5)),
        ('"q"', Request("q")),
    ],
)
def test_lines_users_type(line: str, expected: Request) -> None:
    assert parse_line(line) == expected


def test_single_quotes_follow_shell_rules() -> None:
    assert parse_line("'it'\"'\"'s' -n 2") == Request("it's", iterations=2)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("q", ShellCommand("quit", "")),
        ("quit", ShellCommand("quit", "")),
        ("  exit  ", ShellCommand("quit", "")),
        ("q # bye", ShellCommand("quit", "")),
        ("!fetch a.png", ShellCommand("fetch", "a.png")),
        ("!fetch 'dir/*.png'  out.txt ", ShellCommand("fetch", "'dir/*.png'  out.txt")),
        ("!12", ShellCommand("12", "")),
        ("!history", ShellCommand("history", "")),
        ("!search a # b", ShellCommand("search", "a # b")),  # args are the command's business
    ],
)
def test_shell_commands(line: str, expected: ShellCommand) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    "line",
    ["", "   ", "\t", "# a comment", "  # indented", "// c", "!dream", "!dream # c", "!dream   "],
)
def test_blank_and_comment_lines_are_none(line: str) -> None:
    assert parse_line(line) is None


def test_dream_prefix_is_the_same_line() -> None:
    line = "a cat -s 20 -S 42 -Ak_lms"
    assert parse_line("!dream " + line) == parse_line(line)
    assert parse_line("!dream q") == Request("q")  # !dream says: this is a prompt
    assert parse_line('!dream "a cat" -n 2') == Request("a cat", iterations=2)


def test_parse_request_refuses_what_is_not_a_request() -> None:
    for line, message in [
        ("", "line: is empty; give a prompt and switches, e.g. a cat -s 20"),
        ("# c", "line: is empty; give a prompt and switches, e.g. a cat -s 20"),
        ("q", "q: quits the shell; it is not a prompt"),
        ("!fetch a.png", "!fetch: is a shell command, not a prompt"),
    ]:
        with pytest.raises(ParseError) as err:
            parse_request(line)
        assert str(err.value) == message


def test_line_length_limit_is_exact() -> None:
    longest = '"' + "x" * (MAX_LINE - 2) + '"'
    assert parse_line(longest) == Request("x" * (MAX_LINE - 2))
    with pytest.raises(ParseError, match=r"^line: is 20001 characters long; the limit is 20000$"):
        parse_line(longest + " ")
    # an unquoted prompt that fits, but whose canonical (quoted, escaped) line would not
    with pytest.raises(ParseError, match=r"^line: would be 20002 characters long; the limit"):
        parse_line("x" * MAX_LINE)


# --- the bad-input catalogue: one line each, naming switch, value and what is allowed ------

SAMPLER_LIST = listing()  # a name and its Karras twin as one name[_k]
FIELDS = "{prefix} {seed} {steps} {cfg_scale} {sampler} {width} {height} {iteration}"
QUOTE_HINT = "; if it is part of the prompt, put the prompt in quotes"

BAD_LINES = [
    # unknown switches, with a suggestion when one is close
    ("a cat -q", "-q: unknown switch" + QUOTE_HINT),
    ("a cat -dog", "-dog: unknown switch" + QUOTE_HINT),
    ('"a cat" -dog', "-dog: unknown switch"),
    ("a cat --stesp 20", "--stesp: unknown switch (did you mean -s/--steps?)"),
    ("a cat --Steps 20", "--Steps: unknown switch (did you mean -s/--steps?)"),
    ("a cat --cfg-scale 7", "--cfg-scale: unknown switch (did you mean -C/--cfg_scale?)"),
    ("a cat -w 64", "-w: unknown switch (did you mean -W/--width?)"),
    (
        "a cat --s 20",
        "--s: is ambiguous: it could be --sampler, --save_intermediates, --save_latents,"
        " --seamless, --seamless_axes, --seed, --skip_normalize, --steps, --strength",
    ),
    ("a cat --seam", "--seam: is ambiguous: it could be --seamless, --seamless_axes"),
    # --seamless_axes: only x and y, comma-separated
    (
        "a cat --seamless --seamless_axes z",
        "--seamless_axes: z is not a list of axes; use x, y or x,y",
    ),
    ("a cat --seamless_axes x,z", "--seamless_axes: x,z is not a list of axes; use x, y or x,y"),
    ("a cat --seamless_axes x,", "--seamless_axes: x, is not a list of axes; use x, y or x,y"),
    ("a cat --seamless_axes ''", "--seamless_axes: '' is not a list of axes; use x, y or x,y"),
    ("a cat --seamless_axes", "--seamless_axes: needs a value: x, y or x,y"),
    ("a cat --seamless=1", "--seamless: takes no value (got --seamless=1)"),
    (
        "a cat --hires_fix -I x.png",
        "--hires_fix: makes a new picture in two passes and cannot start from an init image; "
        "drop -I or --hires_fix",
    ),
    ("a cat --hires_fix=1", "--hires_fix: takes no value (got --hires_fix=1)"),
    ("a cat --perlin 0.1", "--perlin: is an InvokeAI switch that this version does not support"),
    # InvokeAI's post-processors: each says why not and what does work instead
    (
        "a cat --embiggen 2",
        "--embiggen: embiggen needs the Real-ESRGAN upscaler, which this program does not "
        "ship and cannot download; for a larger picture use -U 2 or -U 4, -W/-H --hires_fix, "
        "or !fix FILE --outcrop SIDE PIXELS",
    ),
    ("a cat -U 3", "-U/--upscale: 3 is not an upscale factor; use 2, 4"),
    ("a cat -U 2 1.5", "-U/--upscale: 1.5 is not a strength in [0, 1]; e.g. -U 2 0.75"),
    (
        "a cat -U 2 0.5 0.5",
        "-U/--upscale: '2 0.5 0.5' needs FACTOR [STRENGTH]: 2 or 4, then a strength in [0, 1] "
        "[0.75], e.g. -U 2 0.75",
    ),
    (
        "a cat -I x.png -v 0.2 -n 3 -U 2",
        "-U/--upscale: cannot be combined with -v and -I: each output is fed back as the next "
        "init image, and would grow each time; use -n for several versions, or -U afterwards on "
        "the line you like",
    ),
    (
        "a cat --upscaler x4",
        "--upscaler: only means something with -U FACTOR, e.g. -U 4 --upscaler NAME",
    ),
    (
        "a cat --upscale_strength 0.5",
        "--upscale_strength: is -U's second number here: -U 2 0.5 (the factor, then the strength)",
    ),
    (
        "a cat -G 0.8",
        "-G: face restoration needs GFPGAN or CodeFormer models, which this program does not "
        "ship and cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing it does",
    ),
    (
        # `-ft` was read as `-f t` (strength "t"): InvokeAI's facetool gets its own answer
        "a cat -ft codeformer",
        "-ft: face restoration needs GFPGAN or CodeFormer models, which this program does not "
        "ship and cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing it does",
    ),
    (
        "a cat -cf 0.7",
        "-cf: face restoration needs GFPGAN or CodeFormer models, which this program does not "
        "ship and cannot download; !fix FILE --outcrop SIDE PIXELS is the post-processing it does",
    ),
    # --outcrop: sides and pixels, only with an init image, not with what makes its own mask
    (
        "a cat --outcrop top 64",
        "-c/--outcrop: extends an init image; add -I FILE, or use !fix FILE --outcrop SIDE PIXELS",
    ),
    (
        "a cat -I x.png --outcrop up 64",
        "-c/--outcrop: up is not a side; use SIDE PIXELS pairs, SIDE one of top, right, bottom, "
        "left, e.g. top 64",
    ),
    ("a cat -I x.png --outcrop top", "-c/--outcrop: top needs its pixels after it, e.g. top 64"),
    (
        "a cat -I x.png --outcrop top -64",
        "-c/--outcrop: 'top -64' needs a whole number of pixels in 1..4096",
    ),
    (
        "a cat -I x.png -c top 0",
        "-c/--outcrop: 'top 0' needs a whole number of pixels in 1..4096",
    ),
    (
        "a cat -I x.png -c left 6.5",
        "-c/--outcrop: 'left 6.5' needs a whole number of pixels in 1..4096",
    ),
    (
        "a cat -I x.png -c left 5000",
        "-c/--outcrop: 'left 5000' needs a whole number of pixels in 1..4096",
    ),
    (
        "a cat -I x.png -c top 8 left 8 top 16",
        "-c/--outcrop: top is given twice; name each side once",
    ),
    (
        "a cat -I x.png --outcrop -s 3",
        "-c/--outcrop: needs a value: SIDE PIXELS pairs, SIDE one of top, right, bottom, left, "
        "e.g. top 64",
    ),
    (
        "a cat -I x.png -c top 8 -M m.png",
        "-c/--outcrop: cannot be combined with -M/--init_mask: it makes its own mask",
    ),
    (
        "a cat -I x.png -c top 8 --fit",
        "-c/--outcrop: cannot be combined with --fit: the new size is the image's own plus the "
        "pixels added",
    ),
    (
        "a cat -I x.png -c top 8 -v 0.2",
        "-c/--outcrop: cannot be combined with -v/--variation_amount: -v with -I feeds each "
        "output back in, which would extend it again; use -n for several versions",
    ),
    # missing values
    ("a cat -s", "-s/--steps: needs a value: a whole number in 1..1000"),
    ("a cat -s -S 42", "-s/--steps: needs a value: a whole number in 1..1000 (got the switch -S)"),
    ("a cat -m", f"-A/--sampler: needs a value: one of {SAMPLER_LIST}"),
    ("a cat -I", "-I/--init_img: needs a value: a file path"),
    # not numbers
    ("a cat --steps=", "-s/--steps: '' is not a whole number; use 1..1000"),
    ("a cat -s twenty", "-s/--steps: twenty is not a whole number; use 1..1000"),
    ("a cat -s 1.5", "-s/--steps: 1.5 is not a whole number; use 1..1000"),
    ("a cat -s 1e3", "-s/--steps: 1e3 is not a whole number; use 1..1000"),
    ("a cat -S 1_000", "-S/--seed: 1_000 is not a whole number; use -1000000..4294967295"),
    ("a cat -C 7,5", "-C/--cfg_scale: 7,5 is not a number; use [0, 100]"),
    ("a cat -C nan", "-C/--cfg_scale: nan is not a finite number; use [0, 100]"),
    ("a cat -C inf", "-C/--cfg_scale: inf is not a finite number; use [0, 100]"),
    ("a cat -v NaN", "-v/--variation_amount: NaN is not a finite number; use [0, 1]"),
    # out of range
    ("a cat -s 0", "-s/--steps: 0 is not in 1..1000"),
    ("a cat -s 1001", "-s/--steps: 1001 is not in 1..1000"),
    ("a cat -s " + "9" * 50, "-s/--steps: " + "9" * 37 + "... is not in 1..1000"),
    (
        "a cat -S 4294967296",
        "-S/--seed: 4294967296 is not in 0..4294967295 (or -1000000..-1 to reuse an earlier seed)",
    ),
    (
        "a cat -S -1000001",
        "-S/--seed: -1000001 is not in 0..4294967295 (or -1000000..-1 to reuse an earlier seed)",
    ),
    ("a cat -n 0", "-n/--iterations: 0 is not in 1..1000"),
    ("a cat -n 100000", "-n/--iterations: 100000 is not in 1..1000"),
    ("a cat -W 8", "-W/--width: 8 is not in 16..4096"),
    ("a cat -W -64", "-W/--width: -64 is not in 16..4096"),
    ("a cat -H 5000", "-H/--height: 5000 is not in 16..4096"),
    ("a cat -C 1e999", "-C/--cfg_scale: 1e999 is not in [0, 100]"),
    ("a cat -C 101", "-C/--cfg_scale: 101 is not in [0, 100]"),
    ("a cat -C -0.5", "-C/--cfg_scale: -0.5 is not in [0, 100]"),
    ("a cat -f 0", "-f/--strength: 0 is not in (0, 1]"),
    ("a cat -f 1.5", "-f/--strength: 1.5 is not in (0, 1]"),
    ("a cat -v 2", "-v/--variation_amount: 2 is not in [0, 1]"),
    ("a cat --save_intermediates -1", "--save_intermediates: -1 is not in 0..10000"),
    ("a cat -z 10", "-z/--png_compression: 10 is not in 0..9"),
    # choices and paths
    ("a cat -A k_foo", f"-A/--sampler: k_foo is not one of {SAMPLER_LIST}"),
    ("a cat --intermediates full", "--intermediates: full is not one of preview, decode"),
    # a typo gets the choice it most likely meant; a k_ sampler typed without its k_ too
    (
        "a cat -A k_eulr",
        f"-A/--sampler: k_eulr is not one of {SAMPLER_LIST}; did you mean k_euler?",
    ),
    (
        "a cat -A dpmpp2m",
        f"-A/--sampler: dpmpp2m is not one of {SAMPLER_LIST}; did you mean dpmpp_2m?",
    ),
    (
        "a cat --control_processor cany",
        "--control_processor: cany is not one of canny, invert; did you mean canny?",
    ),
    ('a cat -I ""', "-I/--init_img: '' is empty; give a file path"),
    ('a cat -M " "', "-M/--init_mask: ' ' is empty; give a file path"),
    ("a cat -o ''", "-o/--outdir: '' is empty; give a folder path"),
    # variation chains
    (
        "a cat -V 12",
        "-V/--with_variations: 12 is not seed:weight; use seed:weight[,seed:weight...],"
        " e.g. 12:0.1,34:0.2",
    ),
    (
        "a cat -V 12:0.1,x",
        "-V/--with_variations: x is not seed:weight; use seed:weight[,seed:weight...],"
        " e.g. 12:0.1,34:0.2",
    ),
    (
        "a cat -V 4294967296:0.1",
        "-V/--with_variations: 4294967296:0.1 has a seed not in 0..4294967295",
    ),
    ("a cat -V 1:0.5,12:1.5", "-V/--with_variations: 12:1.5 has a weight not in [0, 1]"),
    # flags given values
    ("a cat --grid=yes", "-g/--grid: takes no value (got --grid=yes)"),
    ("a cat -gt", "-g/--grid: takes no value (got -gt)"),
    ("a cat --fit=1", "-T/--fit: takes no value (got --fit=1)"),
    (
        "a cat -g yes",
        "yes: is not a switch or a switch's value; prompt text goes before the first switch",
    ),
    # file name templates
    (
        "a cat --fnformat ../{seed}.png",
        "--fnformat: ../{seed}.png contains a /, which no file name may; " + FNFORMAT_HINT,
    ),
    (
        "a cat --fnformat '..{seed}.png'",
        "--fnformat: ..{seed}.png contains '..', which no file name may; " + FNFORMAT_HINT,
    ),
    (
        "a cat --fnformat 'a\\{seed}.png'",
        "--fnformat: a\\{seed}.png contains a \\, which no file name may; " + FNFORMAT_HINT,
    ),
    (
        "a cat --fnformat {seed}.jpg",
        "--fnformat: {seed}.jpg must end in .png, e.g. {prefix}.{seed}.png",
    ),
    (
        "a cat --fnformat .png",
        "--fnformat: .png needs a name before .png, e.g. {prefix}.{seed}.png",
    ),
    (
        "a cat --fnformat {seed.png",
        "--fnformat: {seed.png has bad {} syntax (expected '}' before end of string);"
        f" fields: {FIELDS}",
    ),
    (
        "a cat --fnformat {foo}.png",
        f"--fnformat: {{foo}}.png uses {{foo}}; allowed fields: {FIELDS}",
    ),
    (
        "a cat --fnformat {seed.__class__}.png",
        f"--fnformat: {{seed.__class__}}.png uses {{seed.__class__}}; allowed fields: {FIELDS}",
    ),
    (
        "a cat --fnformat {seed:9999}.png",
        "--fnformat: {seed:9999}.png has a format {seed...} that is not allowed; e.g. {seed:06d}",
    ),
    (
        "a cat --fnformat {sampler:d}.png",
        "--fnformat: {sampler:d}.png cannot be filled in"
        " (Unknown format code 'd' for object of type 'str')",
    ),
    # stray words
    (
        "a cat -s 20 on a mat",
        "on: is not a switch or a switch's value; prompt text goes before the first switch",
    ),
    (
        "a cat -s 20 -1",
        "-1: is not a switch or a switch's value; prompt text goes before the first switch",
    ),
    (
        '"a cat" on a mat',
        "on: is not a switch or a switch's value; prompt text goes inside the quotes",
    ),
    # quoting and characters
    (
        'a cat -o "out',
        'line: has a " at column 10 that is never closed; close it, or escape it as \\"',
    ),
    ('"a cat', 'line: has a " at column 1 that is never closed; close it, or escape it as \\"'),
    ("  'a cat", "line: has a ' at column 3 that is never closed; close it, or escape it as \\'"),
    ("a cat -o out\\", "line: ends with a \\ that escapes nothing; remove it or write \\\\"),
    ("a cat\x1b[A -s 5", "line: has a control character U+001B at column 6"),
    ("a\x00cat", "line: has a control character U+0000 at column 2"),
    ("a\ncat", "line: has a control character U+000A at column 2"),
    ("a cat\udcff", "line: has bytes that are not UTF-8 text at column 6"),  # surrogateescape'd
    ("x" * 100_000, "line: is 100000 characters long; the limit is 20000"),
    ("!", "!: needs a command name, e.g. !history or !fetch FILE"),
]


@pytest.mark.parametrize(
    ("line", "message"), BAD_LINES, ids=[repr(line[:30]) for line, _ in BAD_LINES]
)
def test_bad_input_gives_one_line_naming_the_problem(line: str, message: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_line(line)
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_own_bad_lines_table_keeps_at_least_25_cases() -> None:
    assert len(BAD_LINES) >= 25


# --- join_args: the launcher's words after its own options ----------------------------------


def test_join_args() -> None:
    line = join_args(["a red circle", "-s", "20", "-I", "my pic.png"])
    assert parse_request(line) == Request("a red circle", steps=20, init_img="my pic.png")
    assert join_args(["a cat -s 20"]) == "a cat -s 20"  # one word is the line
    assert parse_request(join_args(["a", "cat", "-s", "20"])) == Request("a cat", steps=20)
    assert parse_request(join_args(['say "hi" #1', "-o", "x y"])) == Request(
        'say "hi" #1', outdir="x y"
    )
    assert parse_request(join_args(["-s", "20", "-I", "a.png"])) == Request(
        steps=20, init_img="a.png"
    )
    assert join_args([]) == ""


def test_parser_imports_no_torch() -> None:
    code = "import sys, invoke.line.parse; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the switch table, as the shell and docs/switches.md read it ----------------------------


def test_switch_table_for_the_completer() -> None:
    by_label = {s.label: s for s in SWITCHES}
    assert by_label["-A/--sampler"].names == ("-A", "-m", "--sampler")
    assert by_label["-T/--fit"].takes_value is False
    assert by_label["-I/--init_img"].complete == "path"
    assert all(s.help for s in SWITCHES)


# --- fuzzing: any line either parses and round-trips, or is a ParseError -------------------

_WORDS = st.sampled_from(
    [name for s in SWITCHES for name in s.names]
    + ["-q", "--stesp", "--s", "--seed=", "-S42", "-Ak_lms", "-f0.5", "-fit", "-gt", "--grid=1"]
    + ["0", "1", "-1", "20", "7.5", "1.5", "1e3", "nan", "inf", "-inf", "4294967296", "+3"]
    + ["12:0.1,34:0.2", "1:2", "k_lms", "K_EULER", "preview", "{prefix}.{seed}.png", "{x"]
    + ["a", "cat", "a half-moon", "kitten's", '"', "'", '"a cat"', "'x y'", "\\", "\\ ", "#"]
    + ["# c", "#x", "//", "!dream", "!fetch", "q", "[ugly]", "a:0.5", "\\:", "猫", "=", "--"]
)
_SPACES = st.sampled_from([" ", " ", " ", "  ", "\t", ""])
_TOKEN_LINES = st.lists(st.tuples(_WORDS, _SPACES), max_size=10).map(
    lambda pairs: "".join(word + space for word, space in pairs)
)
_RAW_LINES = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
# Mostly-valid lines, so that many accepted lines carry switches: a prompt, then switches with
# values near and past their limits, spelled `-s 5`, `-s5` or `--steps=5`.
_SAMPLE_VALUES = {
    "steps": ["1", "1000", "0", "20"],
    "seed": ["-1", "0", "4294967295", "-1000000", "42"],
    "iterations": ["1", "3", "1001"],
    "width": ["16", "64", "4096", "15"],
    "height": ["16", "512", "4097"],
    "cfg_scale": ["0", "7.5", "100", "1e-3", "-0.0", "100.0000001"],
    "sampler": [*SAMPLERS, "K_LMS", "eulr"],  # eulr: not a sampler
    "init_img": ["-1", "x.png", "'my pic.png'", "'-1'", "''", "a#b", '"q\\"t"', "'x"],
    "strength": ["1", "0.75", "1e-300", "0"],
    "init_mask": ["m.png", "'a b'"],
    "latents": ["-1", "000001.1.latents.safetensors"],
    "variation_amount": ["0", "1", "0.5"],
    "with_variations": ["12:0.1,34:0.2", "1:1", "0:0", "1:0.5,"],
    "outdir": ["out", "'o u t'", "-1"],
    "save_intermediates": ["0", "10000", "5"],
    "intermediates": ["preview", "DECODE", "x"],
    "fnformat": ["{prefix}.{seed}.png", "'{seed:06d} {sampler}.png'", "{seed}.jpg"],
    "png_compression": ["0", "9", "6"],
    "seamless_axes": ["x", "y", "x,y", "Y,X", "xy", "z", "x,", "''"],
    "outcrop": ["top 64", "right 8 TOP 16", "'left 8'", "up 8", "top", "top -5", "left 0", "8"],
    "controlnet": ["canny", "lllyasviel/control_v11p_sd15_canny", "''"],
    "control_image": ["edges.png", "-1", "'a b.png'"],
    "control_processor": ["canny", "CANNY", "depth"],
    "control_weight": ["0", "2", "0.5", "2.5"],
    "control_start": ["0", "0.2", "1"],
    "control_end": ["1", "0.8", "0", "1.5"],
    "ip_adapter": ["ip-adapter_sd15", "/models/ip-adapter_sd15.safetensors", "''"],
    "ip_image": ["face.png", "-1", "'a b.png'"],
    "ip_weight": ["0", "2", "0.6", "2.5", "-1"],
    "refiner": ["sdxl-refiner", "/models/refiner", "''"],
    "refiner_start": ["0.8", "0", "1", "0.5", "1.5"],
    "upscale": ["2", "4", "2 0.5", "4 1", "4 0", "3", "2 1.5", "2 0.5 0.5", "'2 0.25'", "x"],
    "upscaler": ["x4", "stabilityai/stable-diffusion-x4-upscaler", "''", "-1"],
}


@st.composite
def _switch_words(draw: st.DrawFn) -> str:
    switch = draw(st.sampled_from(SWITCHES))
    name = draw(st.sampled_from(switch.names))
    if not switch.takes_value:
        return name
    value = draw(st.sampled_from(_SAMPLE_VALUES[switch.field]))
    form = draw(st.sampled_from(["apart", "apart", "attached", "equals"]))
    if form == "equals":
        return f"{switch.long}={value}"
    if form == "attached" and len(name) == 2:
        return name + value
    return f"{name} {value}"


_PROMPT_WORDS = st.sampled_from(["a cat", '"a cat"', "'x'", "a-b", "猫", "a:0.5 b", "[ugly]", ""])
_SWITCH_LINES = st.builds(
    lambda prompt, switches, tail: " ".join([prompt, *switches]) + tail,
    _PROMPT_WORDS,
    st.lists(_switch_words(), max_size=6),
    st.sampled_from(["", "", " # c", " x", "'"]),
)


# Valid by construction: every value drawn from its switch's own range or choices (the kinds in
# invoke/line/switches.py), in any spelling, and the switches combined as Request.validate()
# allows, so that every line must parse to a Request and round-trip.
_PATH_TEXT = st.text("abcXYZ019._/ '\"#猫", min_size=1, max_size=12).filter(
    lambda text: text.strip(" \t") != "" and not text.startswith("-")
)


def _float_text(lo: float, hi: float, open_lo: bool) -> st.SearchStrategy[str]:
    floats = st.floats(lo, hi, exclude_min=open_lo, allow_nan=False)
    ints = st.integers(math.ceil(lo), math.floor(hi)).filter(lambda n: n > lo or not open_lo)
    return st.one_of(floats.map(repr), floats.map(lambda x: f"{x:.3g}"), ints.map(str)).filter(
        lambda text: (lo < float(text) if open_lo else lo <= float(text)) and float(text) <= hi
    )


def _any_case(words: list[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(words), st.sampled_from([str, str.upper, str.capitalize])).map(
        lambda pair: pair[1](pair[0])
    )


def _int_text(n: int, plus: bool) -> str:
    return f"+{n}" if plus and n >= 0 else str(n)


def _valid_values(switch: Switch) -> st.SearchStrategy[str]:
    """Values `switch` accepts, as a user might type them (before shell quoting)."""
    if not switch.takes_value:
        return st.just("")
    if isinstance(switch, IntSwitch):  # and SeedSwitch
        return st.builds(_int_text, st.integers(switch.lo, switch.hi), st.booleans())
    if isinstance(switch, FloatSwitch):
        return _float_text(switch.lo, switch.hi, switch.open_lo)
    if isinstance(switch, ChoiceSwitch):
        return _any_case(list(switch.choices))
    if isinstance(switch, AxesSwitch):
        return _any_case(["x", "y", "x,y", "y,x", "xy", "x, y"])
    if isinstance(switch, VariationsSwitch):
        link = st.tuples(st.integers(0, SEED_MAX), _float_text(0.0, 1.0, False))
        chain = st.lists(link, min_size=1, max_size=3)
        return chain.map(lambda links: ",".join(f"{seed}:{weight}" for seed, weight in links))
    if isinstance(switch, OutcropSwitch):
        sides = st.lists(
            st.tuples(_any_case(list(OUTCROP_DIRECTIONS)), st.integers(1, OUTCROP_MAX)),
            min_size=1,
            max_size=4,
            unique_by=lambda pair: pair[0].lower(),
        )
        return sides.map(lambda pairs: " ".join(f"{side} {pixels}" for side, pixels in pairs))
    if isinstance(switch, UpscaleSwitch):
        factor = st.sampled_from(UPSCALE_FACTORS).map(str)
        with_strength = st.tuples(factor, _float_text(0.0, 1.0, False)).map(" ".join)
        return factor | with_strength
    if isinstance(switch, FnformatSwitch):
        fields = st.sampled_from(FNFORMAT_FIELDS).map(lambda f: "{" + f + "}")
        pieces = st.lists(
            fields | st.sampled_from(["{seed:06d}", "img", "猫"]), min_size=1, max_size=3
        )
        joined = st.tuples(st.sampled_from([".", "_", "-"]), pieces).map(lambda p: p[0].join(p[1]))
        return joined.map(lambda name: name + ".png")
    assert isinstance(switch, PathSwitch), switch
    return st.just("-1") | _PATH_TEXT


@st.composite
def _switch_word(draw: st.DrawFn, switch: Switch, values: st.SearchStrategy[str]) -> str:
    """`switch` and a value drawn from `values`, spelled `-s 5`, `-s5` or `--steps=5`."""
    name = draw(st.sampled_from(switch.names))
    if not switch.takes_value:
        return name
    value = draw(values)
    if switch.many:  # a run of words, written unquoted
        return f"{name} {value}"
    quoted = shlex.quote(value)
    form = draw(st.sampled_from(["apart", "apart", "attached", "equals"]))
    if form == "equals":
        return f"{switch.long}={quoted}"
    if form == "attached" and len(name) == 2 and not value.startswith("-"):
        return name + quoted
    return f"{name} {quoted}"


# Strategies built once: building them per example makes the property ten times slower.
_VALID_WORDS = {s.field: _switch_word(s, _valid_values(s)) for s in SWITCHES}
_BY_FIELD = {switch.field: switch for switch in SWITCHES}
# --control_start must stay below --control_end (either may be left at its default).
_CONTROL_RANGES = st.sampled_from(
    [(start, end) for start in (None, "0", "0.25", "0.5") for end in (None, "1", "0.75")]
)
_FIXED_WORDS = {
    (field, value): _switch_word(_BY_FIELD[field], st.just(value))
    for field, values in (
        ("control_start", ("0", "0.25", "0.5")),
        ("control_end", ("1", "0.75")),
        ("refiner_start", ("0.5", "0.8")),  # inside (0, 1), and only with --refiner
    )
    for value in values
}
# The switches Request.validate() ties to others, drawn below as groups that go together.
_TIED = {
    "outcrop", "init_img", "init_mask", "invert_mask", "fit", "variation_amount", "hires_fix",
    "controlnet", "control_image", "control_processor", "control_weight", "control_start",
    "control_end", "upscale", "upscaler", "refiner", "refiner_start", "latents", "save_latents",
    "ip_adapter", "ip_image", "ip_weight",
}  # fmt: skip
_FREE = [switch.field for switch in SWITCHES if switch.field not in _TIED]
_IMAGE_MODES = {
    "none": ["variation_amount"],
    "init": ["init_mask", "invert_mask", "fit", "variation_amount", "latents"],
    "outcrop": [],
    "hires": ["hires_fix"],
}


@st.composite
def _valid_switch_words(draw: st.DrawFn) -> list[str]:
    """Switch words one line may combine, each switch at most once, as Request.validate() allows."""
    fields = set(draw(st.lists(st.sampled_from(_FREE), max_size=6, unique=True)))
    image = draw(st.sampled_from(["none", "none", "init", "outcrop", "hires"]))
    if _IMAGE_MODES[image]:
        fields |= set(draw(st.lists(st.sampled_from(_IMAGE_MODES[image]), unique=True)))
    if image in ("init", "outcrop"):
        fields.add("init_img")
    if image == "outcrop":
        fields.add("outcrop")
    words = []
    if draw(st.booleans()):
        fields |= {"controlnet", "control_image"}
        fields |= set(draw(st.lists(st.sampled_from(["control_processor", "control_weight"]))))
        start, end = draw(_CONTROL_RANGES)
        for field, value in (("control_start", start), ("control_end", end)):
            if value is not None:
                words.append(draw(_FIXED_WORDS[field, value]))
    if draw(st.booleans()):
        fields.add("refiner")
        start = draw(st.sampled_from([None, "0.5", "0.8"]))
        if start is not None:
            words.append(draw(_FIXED_WORDS["refiner_start", start]))
    if "refiner" not in fields and draw(st.booleans()):  # an image prompt: never with --refiner
        fields |= {"ip_adapter", "ip_image", *draw(st.sampled_from([[], ["ip_weight"]]))}
    if draw(st.booleans()) and not ("variation_amount" in fields and "init_img" in fields):
        fields |= {"upscale", *draw(st.sampled_from([[], ["upscaler"]]))}
    elif draw(st.booleans()):
        fields.add("save_latents")  # the latents drawn, so not with -U
    if "latents" in fields:
        fields.discard("init_mask")  # --latents replaces the picture, not a masked part
    words += [draw(_VALID_WORDS[field]) for field in sorted(fields)]
    return draw(st.permutations(words))


_VALID_PROMPTS = st.sampled_from(["a cat", '"a cat"', "'x'", "a-b", "猫", "a:0.5 b", "[ugly]"])
VALID_LINES = st.builds(
    lambda prompt, words, tail: " ".join([prompt, *words]) + tail,
    _VALID_PROMPTS,
    _valid_switch_words(),
    st.sampled_from(["", " ", " # c"]),
)


@st.composite
def _near_valid_lines(draw: st.DrawFn) -> str:
    """A valid line with one hostile word (a near-limit switch or any word) put in or swapped
    in: errors found deep in an otherwise good line, and combinations validate() refuses."""
    words = draw(_valid_switch_words())
    at = draw(st.integers(0, len(words)))
    hostile = draw(_switch_words() | _WORDS)
    words[at : at + draw(st.integers(0, 1))] = [hostile]
    return " ".join([draw(_VALID_PROMPTS), *words])


FUZZ_LINES = st.one_of(_TOKEN_LINES, _SWITCH_LINES, _SWITCH_LINES, _RAW_LINES, _near_valid_lines())


def _assert_round_trip(result: Request) -> None:
    assert result.validate() is result
    canonical = result.to_command()
    again = parse_request(canonical)
    assert again == result
    assert again.to_command() == canonical


@settings(max_examples=examples(2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FUZZ_LINES)
def test_fuzz_lines_parse_or_raise_parse_error_and_round_trip(line: str) -> None:
    """Any line, hostile ones included: one clear error, never a crash; a Request round-trips."""
    try:
        result = parse_line(line)
    except ParseError as err:
        assert "\n" not in str(err)
        return
    if not isinstance(result, Request):
        return
    _assert_round_trip(result)


@settings(max_examples=examples(2000), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALID_LINES)
def test_fuzz_valid_lines_parse_and_round_trip(line: str) -> None:
    """Lines valid by construction (values from the switch table's ranges, combined as
    validate() allows): every one is a Request, and its canonical line reads back the same."""
    result = parse_line(line)
    assert isinstance(result, Request), result
    _assert_round_trip(result)
