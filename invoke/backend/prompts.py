"""Prompt text -> CLIP embeddings: weighted sub-prompts, the negative prompt, the 77-token limit."""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)


def token_ids(tokenizer: Any, text: str) -> tuple[list[int], list[int]]:
    """(the prompt's tokens that fit, those past the limit), without the start/end tokens."""
    room = tokenizer.model_max_length - 2  # 77 = start + 75 + end
    ids = tokenizer(text, truncation=False, verbose=False).input_ids[1:-1]
    return ids[:room], ids[room:]


def _text(tokenizer: Any, ids: list[int]) -> str:
    return " ".join(t.removesuffix("</w>") for t in tokenizer.convert_ids_to_tokens(ids))


def embed_text(model: Any, text: str, log_tokenization: bool = False) -> torch.Tensor:
    """The text encoder's last hidden state (1, 77, dim) for one piece of text."""
    tokenizer = model.tokenizer
    kept, dropped = token_ids(tokenizer, text)
    if log_tokenization:
        # -t is output the user asked for, so it is printed, as InvokeAI did.
        print(f">> Tokens ({len(kept)}): {_text(tokenizer, kept)}")
        if dropped:
            print(f">> Tokens dropped ({len(dropped)}): {_text(tokenizer, dropped)}")
    if dropped:
        log.warning(
            "prompt is longer than CLIP's %d tokens; dropped: %s",
            tokenizer.model_max_length,
            _text(tokenizer, dropped),
        )
    # Padded as diffusers' pipelines do it: start, tokens, end, then pad to the full length.
    ids = [tokenizer.bos_token_id, *kept, tokenizer.eos_token_id]
    ids += [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(ids))
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
