"""Prompt text -> CLIP embeddings: weighted sub-prompts, the negative prompt, the 77-token limit."""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def token_ids(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """(ids padded to the model's length with BOS/EOS, tokens that did not fit and were dropped)."""
    limit = tokenizer.model_max_length
    ids = tokenizer(text, truncation=False).input_ids
    kept, dropped = ids[: limit - 1], ids[limit - 1 : -1]
    kept = [*kept, tokenizer.eos_token_id]
    kept += [tokenizer.pad_token_id] * (limit - len(kept))
    return kept, dropped


def _text(tokenizer: Any, ids: list[int]) -> str:
    return " ".join(t.removesuffix("</w>") for t in tokenizer.convert_ids_to_tokens(ids))


def embed_text(model: Any, text: str, log_tokenization: bool = False) -> torch.Tensor:
    """The text encoder's last hidden state (1, 77, dim) for one piece of text."""
    ids, dropped = token_ids(model.tokenizer, text)
    if log_tokenization:
        shown = [i for i in ids[1:] if i not in (model.tokenizer.eos_token_id,)]
        # -t is output the user asked for, so it is printed, as InvokeAI did.
        print(f">> Tokens ({len(shown)}): {_text(model.tokenizer, shown)}")
        if dropped:
            print(f">> Tokens dropped past {len(ids)}: {_text(model.tokenizer, dropped)}")
    if dropped:
        log.warning(
            "prompt is longer than %d tokens; dropped: %s",
            len(ids),
            _text(model.tokenizer, dropped),
        )
    tensor = torch.tensor([ids], device=model.device)
    return model.text_encoder(tensor, return_dict=False)[0]


@torch.no_grad()
def encode_prompt(
    model: Any, prompt: str, skip_normalize: bool = False, log_tokenization: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) embeddings, each (1, 77, dim), computed once per job.

    `a:0.5 b:0.5` sub-prompts are the weighted sum of their embeddings (weights normalized by
    split_prompt unless -x); the `[negative]` text, or "", is the unconditional input of CFG.
    """
    from invoke.parse import split_prompt

    parts = split_prompt(prompt, skip_normalize=skip_normalize)
    positive = parts.positive or (("", 1.0),)
    cond = sum(weight * embed_text(model, text, log_tokenization) for text, weight in positive)
    uncond = embed_text(model, parts.negative, log_tokenization and bool(parts.negative))
    return cond.to(model.dtype), uncond.to(model.dtype)
