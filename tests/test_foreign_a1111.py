"""!fetch of AUTOMATIC1111 pictures (invoke/outputs/a1111.py): each `parameters` text, laid out as
A1111's create_infotext writes it, read back to the command that remakes its settings here, and
what has no equivalent named in a note. The emphasis is checked against A1111's own rules
(parse_prompt_attention, re-implemented below from reading it) through our prompt parser."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from invoke import outputs, plan
from invoke.config.settings import Settings
from invoke.errors import MetadataError
from invoke.line.parse import parse_request
from invoke.line.prompt_syntax import parse_prompt
from invoke.line.samplers import SAMPLER_TABLE, from_a1111
from invoke.outputs import read_command
from invoke.outputs.a1111 import command_from_a1111, prompt_from_a1111
from invoke.session import Session
from invoke.shell.report import TerminalReporter
from tests.fixtures.foreign_rules import a1111_hires, a1111_parse, a1111_schedule_run
from tests.helpers import batch
from tests.hypothesis_budget import examples

# -- A1111's emphasis rules, as its parse_prompt_attention applies them (the oracle) -------------

_A1111_TOKEN = re.compile(
    r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:"
)


def a1111_attention(text: str) -> list[tuple[str, float]]:
    """Straight from the rules: each group multiplies the runs it encloses (quadratic, fine for
    the short prompts here)."""
    res: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for run in res[start:]:
            run[1] *= factor

    for m in _A1111_TOKEN.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            rounds.append(len(res))
        elif token == "[":
            squares.append(len(res))
        elif weight is not None and rounds:
            multiply(rounds.pop(), float(weight))
        elif token == ")" and rounds:
            multiply(rounds.pop(), 1.1)
        elif token == "]" and squares:
            multiply(squares.pop(), 1 / 1.1)
        else:
            res.append([token, 1.0])
    for start in rounds:
        multiply(start, 1.1)
    for start in squares:
        multiply(start, 1 / 1.1)
    # Neighbours of one weight are one run, as in A1111 (here to 4 places: A1111 keeps 1.21 and
    # 1.1 ** 3 / 1.1 apart by float noise alone).
    merged: list[tuple[str, float]] = []
    for t, w in res:
        if merged and round(merged[-1][1], 4) == round(w, 4):
            merged[-1] = (merged[-1][0] + t, w)
        else:
            merged.append((t, w))
    return merged


def test_a_lora_in_the_negative_prompt_is_no_lora() -> None:
    """A1111 loads extra networks named in the prompt alone."""
    assert prompt_from_a1111("a cat <lora:ink:0.5>", "blurry <lora:bad:1>") == (
        "a cat [blurry] <lora:ink:0.5>",
        ["<lora:bad:1> in the negative prompt (words to A1111, not a network)"],
    )


def test_square_brackets_that_are_text_are_named_in_a_note() -> None:
    """Our [...] is the negative prompt: A1111's literal brackets cannot be written."""
    for text in (r"a \[b\] c", "a stray ] here"):
        prompt, notes = prompt_from_a1111(text)
        assert "[" not in prompt and "]" not in prompt
        assert notes == [
            "literal square brackets, read as spaces (our [...] is the negative prompt)"
        ]


def words_and_weights(runs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Each word with its weight (to 4 places): what the text encoder is given."""
    return [(word, round(w, 4)) for text, w in runs for word in text.split()]


EMPHASIS = [
    "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "an (important) word",
    "(unbalanced",
    r"\(literal\) text",
    "(unnecessary)(parens)",
    "masterpiece, ((best quality)), [[blurry]], (red hair:1.2), 1girl",
    "a stray ) here",
    "time 12:30, ratio (16:9), (cat:0.5)",
    "high-quality, word+ and word- and -dash",
    "(a (b:1.5) c)1 2",
    "((x:0.5):2)",
]


@pytest.mark.parametrize("text", EMPHASIS)
def test_a1111_emphasis_gives_each_word_the_weight_a1111_gives_it(text: str) -> None:
    ours, _ = prompt_from_a1111(text)
    fragments = parse_prompt(ours).positive[0].fragments
    assert words_and_weights([(f.text, f.weight) for f in fragments]) == words_and_weights(
        a1111_attention(text)
    )


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet="ab ,()[]:.1+-\\", max_size=40))
def test_any_a1111_emphasis_gives_each_word_a1111s_weight(text: str) -> None:
    """Any mix of A1111's emphasis characters: the words and weights our parser reads from the
    translation are A1111's (square brackets and backslashes that are text are read as spaces,
    and noted)."""
    ours, _ = prompt_from_a1111(text)
    if not ours.strip():
        return
    fragments = parse_prompt(ours).positive[0].fragments
    command, _ = command_from_a1111(f"{text}\nSteps: 20")
    assert parse_request(command).prompt == ours  # the line parser takes what !fetch prints
    try:
        runs = a1111_attention(text)
    except ValueError:  # `(a:.)`: A1111 fails on it, so no picture holds it
        return
    theirs = [(re.sub(r"[\[\]\\]", " ", t), w) for t, w in runs]
    assert words_and_weights([(f.text, f.weight) for f in fragments]) == words_and_weights(theirs)


def test_a1111_emphasis_is_written_in_our_syntax() -> None:
    assert prompt_from_a1111("a (red) ball, ((big)), [dull], (shiny:1.3)") == (
        "a (red)1.1 ball, (big)1.21, (dull)0.9091, (shiny)1.3",
        [],
    )
    assert prompt_from_a1111(r"a \(b\) c:0.5 d+", "ugly, (blurry:1.2)")[0] == (
        r"a \(b\) c\:0.5 d\+ [ugly, (blurry)1.2]"
    )


# -- whole parameters texts -> commands and notes ------------------------------------------------

LONG_PROMPT = ", ".join(f"word{i} detail" for i in range(40))  # about 120 CLIP tokens

FIXTURES: dict[str, tuple[str, str, list[str]]] = {
    "txt2img, A1111 1.9 layout": (
        "a (red) circle on a blue background\n"
        "Negative prompt: blurry, [ugly]\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, "
        "Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.9.4",
        '"a (red)1.1 circle on a blue background [blurry, (ugly)0.9091]" -s 20 -S 1234 '
        "-W 512 -H 512 -C 7.0 -A k_euler_a",
        ["model v1-5-pruned-emaonly (hash 6ce0161689): choose it with !switch if you have it"],
    ),
    "old layout, no Schedule type": (
        "a cat\nSteps: 30, Sampler: DDIM, CFG scale: 5.5, Seed: 7, Size: 640x448",
        '"a cat" -s 30 -S 7 -W 640 -H 448 -C 5.5 -A ddim',
        [],
    ),
    "variation seed, tiling, LoRA with hashes": (
        "a tile <lora:ink:0.8>\n"
        "Steps: 12, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 512x512, Variation seed: 99, "
        'Variation seed strength: 0.25, Tiling: True, Lora hashes: "ink: 0123abcd", '
        "Version: v1.6.0",
        '"a tile <lora:ink:0.8>" -s 12 -S 3 -W 512 -H 512 -C 7.0 -A k_euler -V 99:0.25 --seamless',
        [],
    ),
    "img2img": (
        "a castle\nSteps: 25, Sampler: Heun, CFG scale: 7, Seed: 5, Size: 512x768, "
        "Denoising strength: 0.6",
        '"a castle" -s 25 -S 5 -W 512 -H 768 -C 7.0 -A k_heun',
        [
            "Denoising strength 0.6: an img2img picture; add -I FILE -f 0.6 to draw from its "
            "init image"
        ],
    ),
    "hires fix with a latent upscaler": (
        "a castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, "
        "Denoising strength: 0.55, Hires upscale: 1.5, Hires steps: 0, Hires upscaler: Latent",
        '"a castle" -s 20 -S 5 -W 768 -H 768 -C 7.0 -A k_euler --hires_fix -f 0.55',
        ["hires first pass at 512x512 (here it is drawn at about the model's size)"],
    ),
    "hires resize, own steps, an ESRGAN upscaler": (
        "a castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, "
        "Denoising strength: 0.4, Hires resize: 1024x768, Hires steps: 10, "
        "Hires upscaler: R-ESRGAN 4x+",
        '"a castle" -s 20 -S 5 -W 1024 -H 768 -C 7.0 -A k_euler --hires_fix -f 0.4',
        [
            "hires first pass at 512x512 (here it is drawn at about the model's size)",
            "Hires steps: 10 (the second pass runs -f x -s = 8 here)",
            "Hires upscaler: R-ESRGAN 4x+ (the second pass enlarges latents here)",
        ],
    ),
    "hires resize with one side 0: the first pass's shape": (
        "a castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x768, "
        "Denoising strength: 0.4, Hires resize: 1024x0, Hires upscaler: Latent (nearest-exact)",
        '"a castle" -s 20 -S 5 -W 1024 -H 1536 -C 7.0 -A k_euler --hires_fix -f 0.4',
        ["hires first pass at 512x768 (here it is drawn at about the model's size)"],
    ),
    "hires fix as A1111 before 1.0 wrote it": (
        "a castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 1024x1024, "
        "Denoising strength: 0.7, First pass size: 512x512",
        '"a castle" -s 20 -S 5 -W 1024 -H 1024 -C 7.0 -A k_euler --hires_fix -f 0.7',
        ["hires first pass at 512x512 (here it is drawn at about the model's size)"],
    ),
    "what has no equivalent": (
        "a cat BREAK a hat <hypernet:anime:1> <lora:ink:0.8:0.5>\n"
        "Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Clip skip: 2, "
        'ENSD: 31337, ControlNet 0: "Module: canny, Model: control_sd15_canny [fef5e48e], '
        'Weight: 1", ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3',
        '"a cat a hat <lora:ink:0.8>" -s 20 -S 5 -W 512 -H 512 -C 7.0 -A k_euler',
        [
            "hypernetwork <hypernet:anime:1> (no hypernetworks here)",
            "<lora:ink:0.8:0.5>'s second weight (one weight for the whole LoRA here: 0.8)",
            "BREAK (long prompts are cut into chunks by length here)",
            "Clip skip: 2, ENSD: 31337, ControlNet unit 0 (canny, control_sd15_canny [fef5e48e]; "
            "its control image is not kept), ADetailer model: face_yolov8n.pt, "
            "ADetailer confidence: 0.3 (no such settings here)",
        ],
    ),
    "ours, with the prompt as typed beside A1111's words": (
        "ratio 16:9 poster, a dog\n"
        "Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Denoising strength: "
        "0.5, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, "
        'Invoke prompt: "ratio 16\\\\:9 poster:0.5 a dog:0.5", Version: invoke-dream 0.1.0',
        '"ratio 16\\\\:9 poster:0.5 a dog:0.5" -s 20 -S 5 -W 1024 -H 1024 -C 7.0 -A k_euler '
        "--hires_fix -f 0.5",
        ["hires first pass at 512x512 (here it is drawn at about the model's size)"],
    ),
    "a sampler none here runs": (
        "a cat\nSteps: 8, Sampler: DPM adaptive, CFG scale: 1.5, Seed: 5, Size: 512x512",
        '"a cat" -s 8 -S 5 -W 512 -H 512 -C 1.5',
        ["sampler DPM adaptive (none here runs it; the default sampler is used)"],
    ),
    "a long prompt, kept whole": (
        f"{LONG_PROMPT}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512",
        f'"{LONG_PROMPT}" -s 20 -S 5 -W 512 -H 512 -C 7.0 -A k_euler',
        [],
    ),
}


@pytest.mark.parametrize("name", FIXTURES)
def test_a1111_parameters_read_back_to_the_command_and_notes(name: str) -> None:
    text, command, notes = FIXTURES[name]
    assert command_from_a1111(text) == (command, notes)


def test_a_text_with_no_settings_line_is_refused() -> None:
    with pytest.raises(MetadataError, match="has no 'Steps:' line"):
        command_from_a1111("just a caption")


# -- acceptance 3: DPM++ 2M Karras, hires fix, a 120-token prompt --------------------------------

KARRAS = next(
    (r.name for r in SAMPLER_TABLE.values() if (r.a1111, r.schedule) == ("DPM++ 2M", "Karras")),
    None,
)
SETTINGS = (
    "Steps: 28, {sampler}, CFG scale: 6.5, Seed: 424242, Size: 512x512, "
    "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 0, Hires upscaler: Latent"
)


@pytest.mark.parametrize(
    "sampler", ["Sampler: DPM++ 2M Karras", "Sampler: DPM++ 2M, Schedule type: Karras"]
)
def test_a_karras_hires_long_prompt_picture_remakes_its_settings(sampler: str) -> None:
    text = f"{LONG_PROMPT}\nNegative prompt: blurry\n" + SETTINGS.format(sampler=sampler)
    command, _ = command_from_a1111(text)
    request = parse_request(command)
    assert request.prompt == f"{LONG_PROMPT} [blurry]"
    assert (request.steps, request.cfg_scale, request.seed) == (28, 6.5, 424242)
    assert (request.width, request.height, request.hires_fix, request.strength) == (
        1024,
        1024,
        True,
        0.5,
    )
    assert request.sampler == KARRAS


@pytest.mark.parametrize(
    "sampler", ["Sampler: DPM++ 2M Karras", "Sampler: DPM++ 2M, Schedule type: Karras"]
)
def test_the_picture_we_then_write_reads_back_in_a1111_as_those_settings(sampler: str) -> None:
    """Acceptance 3, the way back: the line !fetch made, drawn here (on a 512 model) and written,
    is read by AUTOMATIC1111's own field rules (tests/fixtures/foreign_rules.py) as the settings
    the A1111 picture had."""
    text = f"{LONG_PROMPT}\nNegative prompt: blurry\n" + SETTINGS.format(sampler=sampler)
    request = parse_request(command_from_a1111(text)[0])
    first = plan.first_pass(request, (512, 512), 8)
    written = outputs.png_chunks(request, model_id="sd-1.5", model_hash="0", first_pass=first)
    res = a1111_parse(written["parameters"])
    assert (res["Steps"], res["CFG scale"], res["Seed"]) == ("28", "6.5", "424242")
    assert from_a1111(res["Sampler"], res["Schedule type"]) == KARRAS
    assert a1111_schedule_run(res) == "Karras"
    assert (res["Size-1"], res["Size-2"]) == ("512", "512")  # A1111's first pass
    assert a1111_hires(res) == (True, (1024, 1024))
    assert res["Denoising strength"] == "0.5"
    assert res["Prompt"] == LONG_PROMPT and res["Negative prompt"] == "blurry"


# -- the whole !fetch path, and --dry-run takes every command it prints --------------------------


def test_fetch_reads_an_a1111_png(tmp_path: Path) -> None:
    text, command, _ = FIXTURES["txt2img, A1111 1.9 layout"]
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert read_command(path) == command


def test_dry_run_accepts_every_command_fetch_prints(tmp_path: Path) -> None:
    commands = [command for _, command, _ in FIXTURES.values()]
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "ink.safetensors").write_bytes(b"")  # the fixtures' LoRA, by name
    session = Session(
        Settings(outdir=tmp_path / "out", lora_dir=tmp_path / "loras"),
        reporter=TerminalReporter(err=io.StringIO(), progress=False),
        dry_run=True,
    )
    status, out, err = batch(session, commands, dry_run=True)
    assert status == 0, err
    # each is canonical already: --dry-run prints it back, with the defaults it left out
    assert all(o.startswith(c) for o, c in zip(out, commands, strict=True))


def test_braces_and_bars_in_an_a1111_prompt_stay_text_not_a_sweep() -> None:
    """A1111 reads `{word}` and `a | b` as text (NovelAI's emphasis): fetched here they must not
    become a sweep of alternatives; the model reads the same characters."""
    from invoke.line.sweep import expand

    command, _ = command_from_a1111("{masterpiece}, a cat | dog\nSteps: 20, Seed: 1, Size: 512x512")
    lines = expand(parse_request(command))
    assert len(lines) == 1
    assert parse_prompt(lines[0].prompt).positive[0].plain == "{masterpiece}, a cat | dog"
