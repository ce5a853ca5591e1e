"""Prompts past CLIP's 77 tokens: encoded in chunks of 75, as compel (InvokeAI 3+) and
AUTOMATIC1111 do. compel is the oracle: `truncate_long_prompts=False`, cut at every 75 tokens
(SplitLongTextMode.BRUTAL: its default looks back for a sentence end, A1111's for a comma)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.backend.prompts import encode_prompt, text_length
from invoke.events import Tokens
from invoke.line.prompt_syntax import parse_prompt

compel = pytest.importorskip("compel")
from compel.embeddings_provider import DownweightMode, SplitLongTextMode  # noqa: E402

# 14 * 7 = 98 words of one token each: two chunks (75 + 23)
LONG = " ".join(["a red circle on a blue background"] * 14)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


def _compel(model: Model, downweight: DownweightMode = DownweightMode.MASK) -> compel.Compel:
    return compel.Compel(
        tokenizer=model.tokenizer,
        text_encoder=model.text_encoder,
        truncate_long_prompts=False,
        split_long_text_mode=SplitLongTextMode.BRUTAL,
        downweight_mode=downweight,
    )


def _theirs(oracle: compel.Compel, prompt: str, negative: str) -> list[torch.Tensor]:
    with torch.no_grad():
        both = [oracle(prompt), oracle(negative)]
        return oracle.pad_conditioning_tensors_to_same_length(both)


def test_the_tiny_tokenizer_has_clips_77(model: Model) -> None:
    assert model.tokenizer.model_max_length == 77
    assert len(model.tokenizer(LONG).input_ids) == 2 + 98


def test_a_long_prompt_and_its_short_negative_equal_compels(model: Model) -> None:
    cond, uncond = encode_prompt(model, parse_prompt(f"{LONG} [green square]"))
    theirs, theirs_negative = _theirs(_compel(model), LONG, "green square")
    assert cond.shape == uncond.shape == theirs.shape == (1, 154, 32)
    assert torch.allclose(cond, theirs, atol=1e-5)
    assert torch.allclose(uncond, theirs_negative, atol=1e-5)
    # not the cut prompt followed by padding: the second chunk carries the words past 75
    cut, _ = encode_prompt(model, parse_prompt(" ".join(LONG.split()[:75])))
    assert torch.equal(cond[:, :77], cut)
    assert not torch.allclose(cond[:, 77:], uncond[:, 77:], atol=1e-3)


def test_a_long_negative_pads_a_short_prompt(model: Model) -> None:
    cond, uncond = encode_prompt(model, parse_prompt(f"green square [{LONG}]"))
    theirs, theirs_negative = _theirs(_compel(model), "green square", LONG)
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert torch.allclose(cond, theirs, atol=1e-5)
    assert torch.allclose(uncond, theirs_negative, atol=1e-5)


def test_weights_in_either_chunk_equal_compels(model: Model) -> None:
    # "(blue)1.3" reads the same in both syntaxes; "circle+" is compel's 1.1 too
    weighted = LONG.replace("blue", "(blue)1.3", 1) + " (red)1.5 circle+"
    cond, uncond = encode_prompt(model, parse_prompt(f"{weighted} [green]"))
    theirs, theirs_negative = _theirs(_compel(model), weighted, "green")
    assert cond.shape == (1, 154, 32)
    assert torch.allclose(cond, theirs, atol=1e-5)
    assert torch.allclose(uncond, theirs_negative, atol=1e-5)
    plain, _ = encode_prompt(model, parse_prompt(LONG + " red circle"))
    assert not torch.allclose(cond[:, 77:], plain[:, 77:], atol=1e-3)  # the weights did act


def test_a_down_weighted_word_equals_compels_prompt_without_it(model: Model) -> None:
    # ours pulls toward the prompt without the words (compel's REMOVE); at 0.5 the two agree
    weighted = LONG + " (green)0.5 square"
    cond, _ = encode_prompt(model, parse_prompt(weighted))
    theirs, _ = _theirs(_compel(model, DownweightMode.REMOVE), weighted, "")
    assert torch.allclose(cond, theirs, atol=1e-5)


def test_weight_zero_on_the_token_past_75_leaves_one_chunk_and_padding(model: Model) -> None:
    cond, _ = encode_prompt(model, parse_prompt(" ".join(["red"] * 74) + " (green)0 square"))
    without, _ = encode_prompt(model, parse_prompt(" ".join(["red"] * 74) + " square"))
    empty, _ = encode_prompt(model, parse_prompt(""))
    assert cond.shape == (1, 154, 32)
    assert torch.allclose(cond, torch.cat([without, empty], dim=1), atol=1e-4)


@pytest.mark.parametrize(("words", "length"), [(75, 77), (76, 154), (150, 154), (151, 231)])
def test_chunks_start_past_75_tokens(model: Model, words: int, length: int) -> None:
    prompt = parse_prompt(" ".join(["red"] * words))
    cond, uncond = encode_prompt(model, prompt)
    assert cond.shape[1] == uncond.shape[1] == length
    assert text_length(prompt, model.tokenizer) == length  # what a compiled UNet is picked by


def test_text_length_counts_and_parts_and_blends_as_they_are_encoded(model: Model) -> None:
    for text in [
        f'("{LONG}", "a red circle").and() [green]',
        f'("{LONG}", "a red circle").blend(1, 1)',
        f"a red circle:1 {LONG}:1",
        f"a red circle [{LONG}]",
    ]:
        prompt = parse_prompt(text)
        cond, uncond = encode_prompt(model, prompt)
        assert cond.shape == uncond.shape
        assert text_length(prompt, model.tokenizer) == cond.shape[1], text


def test_log_tokenization_shows_the_chunks(model: Model) -> None:
    events: list[object] = []
    text = " ".join(["red"] * 74 + ["(blue)1.5", "green", "square"])
    encode_prompt(model, parse_prompt(text), log_tokenization=True, on_event=events.append)
    first = " ".join(["red"] * 74 + ["blue(1.5)"])
    assert events == [Tokens(77, f"[chunk 1/2] {first} [chunk 2/2] green square")]
    events.clear()
    short = parse_prompt("a red circle")
    encode_prompt(model, short, log_tokenization=True, on_event=events.append)
    assert events == [Tokens(3, "a red circle")]  # one chunk: shown as before


# -- SDXL: both encoders chunked alike, the pooled embedding the first chunk's ---------------------


def test_sdxl_long_prompt_equals_compels(tiny_sdxl_dir: Path) -> None:
    from compel import ReturnedEmbeddingsType

    from invoke.backend.families.sdxl import encode_prompt as sdxl_encode

    sdxl = load_model(tiny_sdxl_dir, device="cpu")
    assert sdxl.tokenizer_2.model_max_length == 77
    oracle = compel.Compel(
        tokenizer=[sdxl.tokenizer, sdxl.tokenizer_2],
        text_encoder=[sdxl.text_encoder, sdxl.text_encoder_2],
        returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
        requires_pooled=[False, True],
        truncate_long_prompts=False,
        split_long_text_mode=SplitLongTextMode.BRUTAL,
    )
    weighted = LONG.replace("blue", "(blue)1.3", 1) + " (red)1.5 circle"
    cond, uncond, _, pooled_uncond = sdxl_encode(sdxl, parse_prompt(f"{weighted} [green]"))
    with torch.no_grad():
        theirs, _ = oracle(weighted)
        negative, negative_pooled = oracle("green")
        empty = oracle("")[0]  # its multi-encoder form has no empty_z of its own
        theirs, negative = oracle.pad_conditioning_tensors_to_same_length([theirs, negative], empty)
    assert cond.shape == uncond.shape == theirs.shape
    assert cond.shape[1] == 154
    assert torch.allclose(cond, theirs, atol=1e-5)
    assert torch.allclose(uncond, negative, atol=1e-5)
    assert torch.allclose(pooled_uncond, negative_pooled, atol=1e-5)
    # compel pools the text as typed, "(blue)1.3" and all; ours the words: alike when plain
    _, _, plain_pooled, _ = sdxl_encode(sdxl, parse_prompt(LONG))
    with torch.no_grad():
        assert torch.allclose(plain_pooled, oracle(LONG)[1], atol=1e-5)
