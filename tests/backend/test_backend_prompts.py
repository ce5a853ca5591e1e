"""Prompt text -> embeddings: weights, the negative prompt, -t (long prompts: test_long_prompts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.backend.prompts import embed_text, encode_prompt
from invoke.events import Tokens
from invoke.line.prompt_syntax import parse_prompt


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


def test_weighted_sub_prompts_are_the_weighted_sum(model: Model) -> None:
    cond, uncond = encode_prompt(model, parse_prompt("a red circle:1 a blue square:3"))
    with torch.no_grad():
        red, blue = embed_text(model, "a red circle"), embed_text(model, "a blue square")
    assert torch.allclose(cond, 0.25 * red + 0.75 * blue, atol=1e-5)
    assert cond.shape == (1, 77, 32)
    with torch.no_grad():
        assert torch.allclose(uncond, embed_text(model, ""))


def test_skip_normalize_keeps_raw_weights(model: Model) -> None:
    cond, _ = encode_prompt(
        model, parse_prompt("a red circle:1 a blue square:3", skip_normalize=True)
    )
    with torch.no_grad():
        red, blue = embed_text(model, "a red circle"), embed_text(model, "a blue square")
    assert torch.allclose(cond, red + 3 * blue, atol=1e-5)


def test_negative_prompt_is_the_unconditional_input(model: Model) -> None:
    cond, uncond = encode_prompt(model, parse_prompt("a red circle [blue background]"))
    with torch.no_grad():
        assert torch.allclose(uncond, embed_text(model, "blue background"))
        assert torch.allclose(cond, embed_text(model, "a red circle"))


def test_log_tokenization_reports_the_tokens(model: Model) -> None:
    events: list[object] = []
    encode_prompt(model, parse_prompt("a red zebra"), log_tokenization=True, on_event=events.append)
    assert events == [Tokens(7, "a red z e b r a")]
    # nothing is reported without -t
    encode_prompt(model, parse_prompt("a red zebra"), on_event=events.append)
    assert len(events) == 1


# -- weighting syntax (prompt_syntax parses it; these are the embeddings it becomes) -------------


def _raw(model: Model, text: str) -> torch.Tensor:
    """The text encoder's output for plain text, as diffusers' pipelines compute it."""
    ids = model.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return model.text_encoder(ids)[0]


def test_unweighted_prompts_are_encoded_exactly_as_before(model: Model) -> None:
    for text in ["a red circle", "a (red) circle", "smile :) (oops"]:
        cond, _ = encode_prompt(model, parse_prompt(text))
        assert torch.equal(cond, _raw(model, text)), text


def test_an_upweighted_word_moves_only_its_token_away_from_the_empty_prompt(model: Model) -> None:
    cond, _ = encode_prompt(model, parse_prompt("a (red)1.5 circle"))
    plain, empty = _raw(model, "a red circle"), _raw(model, "")
    red = 2  # start, "a", "red"
    expected = empty[:, red] + 1.5 * (plain[:, red] - empty[:, red])
    assert torch.allclose(cond[:, red], expected, atol=1e-5)
    others = [i for i in range(77) if i != red]
    assert torch.allclose(cond[:, others], plain[:, others], atol=1e-5)
    signed, _ = encode_prompt(model, parse_prompt("a red++ circle"))
    expected = empty[:, red] + 1.21 * (plain[:, red] - empty[:, red])
    assert torch.allclose(signed[:, red], expected, atol=1e-5)


def test_weight_zero_is_the_prompt_without_the_words(model: Model) -> None:
    cond, _ = encode_prompt(model, parse_prompt("a (red)0 circle on a blue background"))
    without = _raw(model, "a circle on a blue background")
    assert torch.allclose(cond, without, atol=1e-4)
    half, _ = encode_prompt(model, parse_prompt("a (red)0.5 circle on a blue background"))
    assert not torch.allclose(half, without, atol=1e-3)


def test_blend_mixes_the_prompts_and_honours_skip_normalize(model: Model) -> None:
    red, blue = _raw(model, "a red circle"), _raw(model, "a blue square")
    blend = '("a red circle", "a blue square").blend(1, 3)'
    cond, _ = encode_prompt(model, parse_prompt(blend))
    assert torch.allclose(cond, 0.25 * red + 0.75 * blue, atol=1e-5)
    raw, _ = encode_prompt(model, parse_prompt(blend, skip_normalize=True))
    assert torch.allclose(raw, red + 3 * blue, atol=1e-5)


def test_and_puts_the_parts_side_by_side_and_pads_the_negative(model: Model) -> None:
    cond, uncond = encode_prompt(
        model, parse_prompt('("a red circle", "on a blue background").and() [green]')
    )
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert torch.allclose(cond[:, :77], _raw(model, "a red circle"), atol=1e-5)
    assert torch.allclose(cond[:, 77:], _raw(model, "on a blue background"), atol=1e-5)
    assert torch.allclose(uncond[:, :77], _raw(model, "green"), atol=1e-5)
    assert torch.allclose(uncond[:, 77:], _raw(model, ""), atol=1e-5)


def test_log_tokenization_shows_the_weights(model: Model) -> None:
    events: list[object] = []
    prompt = parse_prompt("a (red)1.5 zebra-")
    encode_prompt(model, prompt, log_tokenization=True, on_event=events.append)
    assert events == [Tokens(7, "a red(1.5) z(0.9) e(0.9) b(0.9) r(0.9) a(0.9)")]


def test_a_conjunction_runs_through_the_sampling_loop(model: Model) -> None:
    from invoke.backend.job import Job, Noise

    def make(prompt: str) -> Job:
        return Job(parse_prompt(prompt), 3, 7.5, "k_euler", 64, 64, (Noise(1), Noise(2)))

    both = model.generate(make('("a red circle", "on a blue background").and() [green]'))
    first = model.generate(make("a red circle [green]"))
    assert [image.size for image in both] == [(64, 64), (64, 64)]
    assert both[0].tobytes() != first[0].tobytes()
