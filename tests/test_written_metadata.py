"""What we write, read back by the other tools' rules (tests/fixtures/foreign_rules.py: our
re-implementation of AUTOMATIC1111's `parse_generation_parameters` and emphasis parser, and of
InvokeAI 2.3's `metadata_loads` and legacy blend split), gives our values."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from invoke import outputs, plan
from invoke.__main__ import cli
from invoke.line.prompt_syntax import parse_prompt
from invoke.line.request import Request
from invoke.line.samplers import SAMPLER_TABLE, SAMPLERS, from_a1111
from invoke.line.switches import Variation
from tests.fixtures.foreign_rules import (
    a1111_conjunction,
    a1111_emphasis,
    a1111_hires,
    a1111_parse,
    a1111_schedule_run,
    invokeai_legacy_blend,
    invokeai_metadata_loads,
)

BASE = {"steps": 20, "seed": 42, "width": 512, "height": 384, "cfg_scale": 7.5}


def request(prompt: str = "a kitten's toy [blurry, dark]", **fields) -> Request:
    return Request(prompt=prompt, **{"sampler": "k_lms", **BASE, **fields})


def chunks(req: Request, first_pass: tuple[int, int] | None = None) -> dict[str, str]:
    return outputs.png_chunks(
        req, model_id="tiny-test", model_hash="0123456789abcdef", first_pass=first_pass
    )


def in_a1111(req: Request, first_pass: tuple[int, int] | None = None) -> dict:
    return a1111_parse(chunks(req, first_pass)["parameters"])


def words(runs) -> list[tuple[str, float]]:
    """(word, weight) for every word of weighted runs: how the text encoder weights each (CLIP's
    tokenizer lowercases: `AND` is written `and`, so A1111 does not split the prompt there)."""
    return [(w.lower(), round(weight, 4)) for text, weight in runs for w in text.split()]


# -- AUTOMATIC1111 ------------------------------------------------------------------------------


def test_a1111_reads_our_txt2img_settings() -> None:
    res = in_a1111(request())
    assert (res["Prompt"], res["Negative prompt"]) == ("a kitten's toy", "blurry, dark")
    assert (res["Steps"], res["CFG scale"], res["Seed"]) == ("20", "7.5", "42")
    assert (res["Size-1"], res["Size-2"]) == ("512", "384")
    assert res["Model"] == "tiny-test" and res["Model hash"] == "0123456789"
    assert from_a1111(res["Sampler"], res["Schedule type"]) == "k_lms"
    assert a1111_hires(res) == (False, (512, 384))
    assert "Denoising strength" not in res and "Tiling" not in res


def _runs(name: str) -> tuple[object, ...]:
    """What a sampler runs: twins (k_lms and lms, InvokeAI 2.3's and 5's names) run the same."""
    row = SAMPLER_TABLE[name]
    return row.scheduler, sorted(row.options.items()), row.schedule


# A1111 ignores the Schedule type for UniPC (and DDIM, PLMS): nothing there runs UniPC on Karras
# sigmas, so its pictures read back as plain UniPC. The label still says what ran here.
_A1111_CANNOT_RUN = {"unipc_k"}


def _unless_a1111_cannot_run(names: tuple[str, ...]) -> list[object]:
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=True, reason="A1111 has no UniPC on Karras sigmas"),
        )
        if name in _A1111_CANNOT_RUN
        else name
        for name in names
    ]


@pytest.mark.parametrize("sampler", _unless_a1111_cannot_run(SAMPLERS))
def test_a1111_reads_each_sampler_and_schedule_back_to_what_ran(sampler: str) -> None:
    res = in_a1111(request(sampler=sampler))
    back = from_a1111(res["Sampler"], res["Schedule type"])
    assert back is not None and _runs(back) == _runs(sampler)


@pytest.mark.parametrize("sampler", _unless_a1111_cannot_run(SAMPLERS))
def test_a1111_runs_the_schedule_that_ran_here(sampler: str) -> None:
    res = in_a1111(request(sampler=sampler))
    assert a1111_schedule_run(res) == (SAMPLER_TABLE[sampler].schedule or "Uniform")


def test_a1111_reads_our_hires_fix_as_its_two_pass_txt2img() -> None:
    req = request(width=1024, height=768, hires_fix=True, strength=0.6)
    first = plan.first_pass(req, (512, 512), 8)
    assert first == (584, 440)  # the model's area at the picture's aspect ratio
    res = in_a1111(req, first)
    # A1111's Size is the first pass; the hires fields give the final size and the second pass.
    assert (int(res["Size-1"]), int(res["Size-2"])) == first
    assert a1111_hires(res) == (True, (1024, 768))
    assert res["Denoising strength"] == "0.6"
    assert res["Hires steps"] == "12"  # our second pass: int(0.6 * 20) steps, as A1111 runs them
    assert res["Hires upscaler"] == "Latent"  # bilinear on the latents


def test_a1111_hires_upscale_when_one_factor_gives_both_sides() -> None:
    req = request(width=1024, height=768, hires_fix=True, strength=0.5)
    res = in_a1111(req, (512, 384))
    assert res["Hires upscale"] == "2" and "Hires resize" not in res
    assert a1111_hires(res) == (True, (1024, 768))
    assert res["Hires steps"] == "10"


def test_a1111_one_pass_picture_has_no_hires_fields() -> None:
    # --hires_fix on a picture no larger than the model's: drawn in one pass, said so
    res = in_a1111(request(hires_fix=True, strength=0.6), None)
    assert a1111_hires(res) == (False, (512, 384)) and "Denoising strength" not in res


def test_a1111_reads_img2img_variations_and_tiling() -> None:
    req = request(
        init_img="in.png", strength=0.7, with_variations=(Variation(99, 0.25),), seamless=True
    )
    res = in_a1111(req)
    assert res["Denoising strength"] == "0.7"
    assert (res["Variation seed"], res["Variation seed strength"]) == ("99", "0.25")
    assert res["Tiling"] == "True"
    one_axis = in_a1111(request(seamless=True, seamless_axes=("x",)))
    assert "Tiling" not in one_axis  # A1111 tiles both axes or none


def test_a1111_quoted_values_read_back_whole() -> None:
    req = request(prompt="a cat", controlnet="org/canny", control_processor="canny")
    text = outputs.a1111_parameters(req, model_id="org/model: v1, fp16")
    res = a1111_parse(text)
    assert res["Model"] == "org/model: v1, fp16"
    assert res["ControlNet 0"].startswith("Module: canny, Model: org/canny")
    assert res["Steps"] == "20"  # the fields after a quoted value are read too


@pytest.mark.parametrize(
    "prompt",
    [
        "a (red)1.3 ball++ on (grass)- [blurry]",
        "a ((big)1.2 house)1.5 [(ugly)1.4, dark]",
        "a photo (2024) of cats AND dogs, BREAK dance, [x]",
        "(a red ball:1.3) and a \\(plain\\) box",
        "sunset (16:9) poster",
    ],
)
def test_a1111_reads_our_prompt_weights_as_ours(prompt: str) -> None:
    req = request(prompt=prompt)
    res = in_a1111(req)
    parsed = parse_prompt(prompt)
    ours = [(f.text, f.weight) for f in parsed.positive[0].fragments]
    assert words(a1111_emphasis(res["Prompt"])) == words(ours)
    negative = [(f.text, f.weight) for f in parsed.negative.fragments]
    assert words(a1111_emphasis(res["Negative prompt"])) == words(negative)
    assert len(a1111_conjunction(res["Prompt"])) == 1  # our "AND" is a word, not A1111's AND
    assert "Invoke prompt" not in res


def test_a1111_reads_and_as_its_break() -> None:
    req = request(prompt='("a cat", "playing with a ball").and(1, 0.5)')
    runs = a1111_emphasis(in_a1111(req)["Prompt"])
    breaks = [i for i, (text, weight) in enumerate(runs) if weight == -1]
    assert len(breaks) == 1
    assert words(runs[: breaks[0]]) == [("a", 1.0), ("cat", 1.0)]
    assert words(runs[breaks[0] + 1 :]) == [(w, 0.5) for w in ["playing", "with", "a", "ball"]]


@pytest.mark.parametrize(
    "prompt", ["a cat:0.7 a dog:0.3", '("a cat", "a dog").blend(0.7, 0.3) [ugly]']
)
def test_a1111_gets_the_words_of_a_blend_and_the_blend_in_a_field(prompt: str) -> None:
    # A1111 mixes no embeddings: no weight it would misread, the words, and our prompt named
    res = in_a1111(request(prompt=prompt))
    assert words(a1111_emphasis(res["Prompt"])) == [
        ("a", 1.0), ("cat,", 1.0), ("a", 1.0), ("dog", 1.0)
    ]  # fmt: skip
    assert ":0." not in res["Prompt"]
    assert res["Invoke prompt"] == prompt


def test_a1111_reads_our_lora_reference() -> None:
    res = in_a1111(request(prompt="a cat withLora(ink, 0.8) [blurry]"))
    assert res["Prompt"] == "a cat <lora:ink:0.8>"


# -- InvokeAI 2.3 -------------------------------------------------------------------------------


def test_invokeai_reads_our_txt2img_settings() -> None:
    req = request(hires_fix=True, strength=0.6, seamless=True, skip_normalize=True)
    (opt,) = invokeai_metadata_loads(chunks(req))
    assert (opt.seed, opt.steps, opt.cfg_scale, opt.sampler_name) == (42, 20, 7.5, "k_lms")
    assert (opt.width, opt.height) == (512, 384)
    assert opt.prompt == "a kitten's toy [blurry, dark]"
    assert opt.hires_fix is True and opt.strength == 0.6 and opt.seamless is True
    assert opt.skip_normalize is True  # -x
    assert opt.type == "txt2img"


def test_invokeai_reads_our_img2img_settings_and_web_ui_paths() -> None:
    req = request(
        init_img="in.png",
        init_mask="mask.png",
        strength=0.7,
        fit=True,
        with_variations=(Variation(99, 0.25), Variation(7, 0.5)),
    )
    (opt,) = invokeai_metadata_loads(chunks(req))
    assert opt.type == "img2img" and opt.strength == 0.7 and opt.fit is True
    assert (opt.init_img, opt.init_mask) == ("in.png", "mask.png")
    assert (opt.init_image_path, opt.mask_image_path) == ("in.png", "mask.png")
    assert opt.variations == "99:0.25,7:0.5"
    assert " --fit" in chunks(req)["Dream"]  # Dream writes it as InvokeAI 2.3's did


@pytest.mark.parametrize(
    ("prompt", "loras"),
    [
        ("a photo: city at night [text: none]", ""),
        ("a cat <lora:ink:0.5> [ugly]", " withLora(ink, 0.5)"),
        ("a (red:1.3) ball, time: noon", ""),
    ],
)
def test_invokeai_reads_a_colon_or_lora_as_no_blend(prompt: str, loras: str) -> None:
    (opt,) = invokeai_metadata_loads(chunks(request(prompt=prompt)))
    assert len(invokeai_legacy_blend(opt.prompt)) == 1
    assert opt.prompt.endswith(loras)
    # and we read what we wrote as the prompt we had
    back, ours = parse_prompt(opt.prompt), parse_prompt(prompt)
    assert [p.fragments for p in back.positive] == [p.fragments for p in ours.positive]
    assert (back.negative.fragments, back.loras) == (ours.negative.fragments, ours.loras)


def test_invokeai_reads_our_blend_as_its_blend() -> None:
    (opt,) = invokeai_metadata_loads(chunks(request(prompt="ratio 16\\:9 poster:0.5 a dog:0.5")))
    parts = invokeai_legacy_blend(opt.prompt)
    assert [(text.strip(" ,"), weight) for text, weight in parts] == [
        ("ratio 16:9 poster", 0.5),
        ("a dog", 0.5),
    ]


def test_a_saved_hires_picture_reads_in_a1111_as_its_two_passes(tmp_path, tiny_model_dir) -> None:
    # Through the whole program: the Saver gives the first pass's size to `parameters`.
    out = tmp_path / "out"
    line = "a house -W 128 -H 96 --hires_fix -f 0.5 -s 4 -S 3"
    result = CliRunner().invoke(cli, ["--model", str(tiny_model_dir), "--outdir", str(out), line])
    assert result.exit_code == 0, result.stderr
    (path,) = out.glob("*.png")
    with Image.open(path) as image:
        image.load()
        res = a1111_parse(image.text["parameters"])
    assert image.size == (128, 96)
    assert a1111_hires(res) == (True, (128, 96))
    assert (int(res["Size-1"]), int(res["Size-2"])) == plan.first_pass(
        Request(prompt="a", width=128, height=96, hires_fix=True), (64, 64), 8
    )
    assert (res["Denoising strength"], res["Hires steps"]) == ("0.5", "2")
