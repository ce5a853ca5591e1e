"""Prompt text -> embeddings: weights, the negative prompt, the 77-token limit, -t."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from invoke.backend.models import Model, load_model
from invoke.backend.prompts import embed_text, encode_prompt, token_ids


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


def test_weighted_sub_prompts_are_the_weighted_sum(model: Model) -> None:
    cond, uncond = encode_prompt(model, "a red circle:1 a blue square:3")
    with torch.no_grad():
        red, blue = embed_text(model, "a red circle"), embed_text(model, "a blue square")
    assert torch.allclose(cond, 0.25 * red + 0.75 * blue, atol=1e-5)
    assert cond.shape == (1, 77, 32)
    with torch.no_grad():
        assert torch.allclose(uncond, embed_text(model, ""))


def test_skip_normalize_keeps_raw_weights(model: Model) -> None:
    cond, _ = encode_prompt(model, "a red circle:1 a blue square:3", skip_normalize=True)
    with torch.no_grad():
        red, blue = embed_text(model, "a red circle"), embed_text(model, "a blue square")
    assert torch.allclose(cond, red + 3 * blue, atol=1e-5)


def test_negative_prompt_is_the_unconditional_input(model: Model) -> None:
    cond, uncond = encode_prompt(model, "a red circle [blue background]")
    with torch.no_grad():
        assert torch.allclose(uncond, embed_text(model, "blue background"))
        assert torch.allclose(cond, embed_text(model, "a red circle"))


def test_tokens_past_77_are_dropped_with_a_warning(
    model: Model, caplog: pytest.LogCaptureFixture
) -> None:
    long_prompt = " ".join(["red"] * 80 + ["cat", "dog"])
    kept, dropped = token_ids(model.tokenizer, long_prompt)
    assert len(kept) == 75  # with the start and end tokens: CLIP's 77
    assert len(dropped) == 82 - 75
    with caplog.at_level(logging.WARNING):
        encode_prompt(model, long_prompt)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = "prompt is longer than CLIP's 77 tokens; dropped: red red red red red cat dog"
    assert warnings == [expected]


def test_log_tokenization_prints_the_tokens(model: Model, capsys: pytest.CaptureFixture) -> None:
    encode_prompt(model, "a red zebra", log_tokenization=True)
    out = capsys.readouterr().out
    assert ">> Tokens (7): a red z e b r a" in out
