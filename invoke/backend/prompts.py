"""Prompt text -> CLIP embeddings: sub-prompts, the negative prompt, weights, long prompts.

The prompt comes read (line/prompt.py's Prompt, made by line/prompt_syntax.py): its `[negative]`
groups and `text:0.5` sub-prompts split off, each piece's `word+`, `(words)1.3`, `.blend()` and
`.and()` read into weighted fragments. Here the pieces become embeddings:

- A weight w on a token scales how far that token's embedding lies from the empty prompt's at the
  same position (empty + w * (token - empty)): above 1 the concept is pushed harder, as if the
  guidance scale were raised for that token alone.
- Below 1, scaling is not enough: CLIP's attention has already spread "red" into the tokens
  around it. So the result is also moved toward the embedding of the prompt with that fragment
  left out, by 1 - w: `(red)0` is the prompt without "red", `(red)0.5` halfway there.
- A prompt with no weights is encoded exactly as diffusers' pipelines do (one pass, no
  arithmetic), so plain prompts give the same pictures as they always did.
- A textual inversion embedding's `<name>` (backend/embeddings.py) is the ids of its vectors'
  rows in the token table, put where the text says `<name>`; weights act on them as on words.
- A prompt longer than CLIP's 77 tokens is encoded in chunks, as AUTOMATIC1111 and compel
  (InvokeAI 3+) do: every 75 tokens, wrapped in the start and end tokens and padded to 77, go
  through the encoder on their own, and the chunks' embeddings are put one after another (the
  UNet's cross-attention takes any length). Weights act on each token in its chunk; SDXL's pooled
  embedding is the first chunk's. A prompt of up to 75 tokens is one chunk: as it always was.
- `.and()` puts each part's embedding side by side; embeddings of different lengths
  (a conjunction beside a plain sub-prompt, or beside the negative prompt) are padded with the
  empty prompt's embedding, which the UNet's cross-attention takes as "nothing more".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from invoke.backend.embeddings import load_embeddings, text_encoders
from invoke.events import Tokens
from invoke.line.prompt import Fragment, Parts, Prompt, Sequence, split_triggers

if TYPE_CHECKING:
    from invoke.backend.job import EmbeddingFile
    from invoke.backend.model import OnEvent

# (hidden states (1, 77 * k, dim), pooled (1, proj) or None)
Embedding = tuple[torch.Tensor, "torch.Tensor | None"]


def chunks(ids: list[int], room: int) -> list[list[int]]:
    """A prompt's token ids in chunks of `room` (75 for CLIP: 77 = start + 75 + end), at least
    one (the empty prompt's)."""
    return [ids[start : start + room] for start in range(0, len(ids), room)] or [[]]


def _ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, truncation=False, verbose=False).input_ids[1:-1]


@dataclass(frozen=True)
class TextEncoder:
    """One tokenizer and its encoder, and how to read its output: padded ids (1, 77) ->
    (hidden states (1, 77, dim), pooled (1, proj) or None). `triggers`: the job's embeddings,
    name -> the ids of its vectors' rows in this encoder (backend/embeddings.py)."""

    tokenizer: Any
    run: Callable[[torch.Tensor], Embedding]
    triggers: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def ids(self, text: str) -> list[int]:
        """The text's token ids, an embedding's `<name>` giving its vectors' ids."""
        if not self.triggers:
            return _ids(self.tokenizer, text)
        ids: list[int] = []
        for piece, is_trigger in split_triggers(text, self.triggers):
            ids += self.triggers[piece] if is_trigger else _ids(self.tokenizer, piece)
        return ids

    def text(self, ids: list[int], weights: list[float] | None = None) -> str:
        """Tokens as -t shows them: an embedding's are <name>, <name>_1, ... (diffusers' names)."""
        names = {
            i: f"<{name}>" + (f"_{k}" if k else "")
            for name, rows in self.triggers.items()
            for k, i in enumerate(rows)
        }
        words = [
            names[i] if i in names else self.tokenizer.convert_ids_to_tokens(i).removesuffix("</w>")
            for i in ids
        ]
        if weights is not None:
            words = [w if x == 1.0 else f"{w}({x:g})" for w, x in zip(words, weights, strict=True)]
        return " ".join(words)


@dataclass
class Encoders:
    """A model's text encoders (SDXL has two, side by side), with the empty prompt cached."""

    encoders: list[TextEncoder]
    device: Any
    log_tokenization: bool = False
    on_event: OnEvent | None = None  # -t's Tokens go there
    _empty: list[tuple[Embedding, list[torch.Tensor]]] = field(default_factory=list)

    def embed(self, parsed: Sequence | Parts, skip_normalize: bool = False) -> Embedding:
        """One sub-prompt (or the negative prompt) as parsed by prompt_syntax."""
        if not isinstance(parsed, Parts):
            return self._sequence(parsed)
        if parsed.combine == "and":
            scaled = [
                tuple(Fragment(f.text, f.weight * weight) for f in sequence)
                for sequence, weight in parsed.parts
            ]
            embeddings = [self._sequence(sequence) for sequence in scaled]
            pooled = [p for _, p in embeddings if p is not None]
            hidden = torch.cat([h for h, _ in embeddings], dim=1)
            return hidden, (sum(pooled) / len(pooled) if pooled else None)
        weights = [weight for _, weight in parsed.parts]
        total = 1.0 if skip_normalize else sum(weights)
        return self.mix(
            [(self._sequence(sequence), weight / total) for sequence, weight in parsed.parts]
        )

    def mix(self, weighted: list[tuple[Embedding, float]]) -> Embedding:
        """The weighted sum of embeddings, the shorter ones padded to the longest."""
        length = max(hidden.shape[1] for (hidden, _), _ in weighted)
        hidden = sum(weight * self.pad(h, length) for (h, _), weight in weighted)
        pooled = [(p, weight) for (_, p), weight in weighted if p is not None]
        return hidden, (sum(weight * p for p, weight in pooled) if pooled else None)  # type: ignore[return-value]

    def pad(self, hidden: torch.Tensor, length: int) -> torch.Tensor:
        """Append the empty prompt's embedding until the sequence is `length` tokens long."""
        empty = self._empty_encoded()[0][0].to(hidden.dtype)
        while hidden.shape[1] < length:
            hidden = torch.cat([hidden, empty], dim=1)
        return hidden

    def _empty_encoded(self) -> tuple[Embedding, list[torch.Tensor]]:
        if not self._empty:
            self._empty.append(self._encode([[] for _ in self.encoders]))
        return self._empty[0]

    # -- one sequence of weighted fragments -------------------------------------------------------

    def _sequence(self, fragments: Sequence) -> Embedding:
        fragments = fragments or (Fragment(""),)
        tokens = [self._tokens(e, fragments) for e in self.encoders]
        self._report(tokens[0], fragments)
        (hidden, pooled), raw = self._encode([ids for ids, _ in tokens])
        if all(f.weight == 1.0 for f in fragments):
            return hidden, pooled
        hidden = self._scaled(raw, [weights for _, weights in tokens])
        # Each down-weighted fragment pulls toward the prompt without it (see the module's note).
        total, norm = hidden, 1.0
        for index, fragment in enumerate(fragments):
            if fragment.weight >= 1.0:
                continue
            rest = fragments[:index] + fragments[index + 1 :] or (Fragment(""),)
            rest_tokens = [self._tokens(e, rest) for e in self.encoders]
            _, rest_raw = self._encode([ids for ids, _ in rest_tokens])
            pull = (1.0 - fragment.weight) / max(fragment.weight, 1e-6)
            rest = self._scaled(rest_raw, [weights for _, weights in rest_tokens])
            total = total + pull * self.pad(rest, hidden.shape[1])  # it may have fewer chunks
            norm += pull
        return total / norm, pooled

    def _tokens(self, encoder: TextEncoder, fragments: Sequence) -> tuple[list[int], list[float]]:
        """The fragments' token ids, one after another, and each token's weight (all of them:
        _encode cuts them in chunks)."""
        ids: list[int] = []
        weights: list[float] = []
        for fragment in fragments:
            piece = encoder.ids(fragment.text)
            ids += piece
            weights += [fragment.weight] * len(piece)
        return ids, weights

    def _report(self, tokens: tuple[list[int], list[float]], fragments: Sequence) -> None:
        """-t: the tokens as the first encoder reads them, chunk by chunk when there are more
        than one (`[chunk 1/2] ... [chunk 2/2] ...`)."""
        if not (self.log_tokenization and self.on_event is not None):
            return
        encoder = self.encoders[0]
        room = encoder.tokenizer.model_max_length - 2
        ids, weights = tokens
        weighted = any(f.weight != 1.0 for f in fragments)
        pieces = chunks(ids, room)
        shown = [
            encoder.text(piece, weights[k * room : k * room + len(piece)] if weighted else None)
            for k, piece in enumerate(pieces)
        ]
        if len(pieces) > 1:
            shown = [f"[chunk {k}/{len(pieces)}] {text}" for k, text in enumerate(shown, 1)]
        self.on_event(Tokens(len(ids), " ".join(shown)))

    def _encode(self, ids: list[list[int]]) -> tuple[Embedding, list[torch.Tensor]]:
        """Each encoder on its ids, chunk by chunk (each chunk's start, end and padding as
        diffusers' pipelines do it for a whole prompt; every encoder as many chunks as the
        longest, the others' extra ones empty) -> (the features side by side with the last
        pooled output, the first chunk's; each encoder's own)."""
        count = max(
            len(chunks(piece, e.tokenizer.model_max_length - 2))
            for e, piece in zip(self.encoders, ids, strict=True)
        )
        hidden: list[torch.Tensor] = []
        pooled = None
        for encoder, piece in zip(self.encoders, ids, strict=True):
            tokenizer = encoder.tokenizer
            pieces = chunks(piece, tokenizer.model_max_length - 2)
            pieces += [[] for _ in range(count - len(pieces))]
            outputs = []
            for chunk in pieces:
                padded = [tokenizer.bos_token_id, *chunk, tokenizer.eos_token_id]
                padded += [tokenizer.pad_token_id] * (tokenizer.model_max_length - len(padded))
                outputs.append(encoder.run(torch.tensor([padded], device=self.device)))
            hidden.append(torch.cat([h for h, _ in outputs], dim=1) if count > 1 else outputs[0][0])
            pooled = outputs[0][1] if outputs[0][1] is not None else pooled
        return (torch.cat(hidden, dim=-1), pooled), hidden

    def _scaled(self, raw: list[torch.Tensor], weights: list[list[float]]) -> torch.Tensor:
        """Each encoder's tokens moved from the empty prompt's by their weights, chunk by chunk,
        side by side."""
        _, empty_raw = self._empty_encoded()
        out = []
        for encoder, hidden, empty, token_weights in zip(
            self.encoders, raw, empty_raw, weights, strict=True
        ):
            length = encoder.tokenizer.model_max_length
            room = length - 2
            scale: list[float] = []
            for k in range(hidden.shape[1] // length):
                row = [1.0, *token_weights[k * room : (k + 1) * room]]
                scale += row + [1.0] * (length - len(row))
            factor = torch.tensor(scale, device=hidden.device, dtype=hidden.dtype)[None, :, None]
            empty = empty.repeat(1, hidden.shape[1] // length, 1)
            out.append(empty + (hidden - empty) * factor)
        return torch.cat(out, dim=-1)


def sd_encoders(
    model: Any,
    log_tokenization: bool = False,
    embeddings: tuple[EmbeddingFile, ...] = (),
    on_event: OnEvent | None = None,
) -> Encoders:
    """SD 1.x/2.x: one CLIP text encoder, its last hidden state."""

    def run(ids: torch.Tensor) -> Embedding:
        return model.text_encoder(ids, return_dict=False)[0], None

    (triggers,) = embedding_triggers(model, embeddings)
    encoder = TextEncoder(model.tokenizer, run, triggers)
    return Encoders([encoder], model.device, log_tokenization, on_event)


def embedding_triggers(
    model: Any, embeddings: tuple[EmbeddingFile, ...]
) -> list[dict[str, tuple[int, ...]]]:
    """For each text encoder: the embeddings' names -> their vectors' ids in it (the files are
    loaded into the model the first time)."""
    loaded = load_embeddings(model, embeddings) if embeddings else {}
    return [
        {name: ids[index] for name, ids in loaded.items()}
        for index in range(len(text_encoders(model)))
    ]


def embed_text(model: Any, text: str, log_tokenization: bool = False) -> torch.Tensor:
    """The text encoder's last hidden state (1, 77, dim) for one piece of plain text."""
    return sd_encoders(model, log_tokenization).embed((Fragment(text),))[0]


def encode_parts(
    encoders: Encoders, prompt: Prompt, zeros_for_empty_negative: bool = False
) -> tuple[Embedding, Embedding]:
    """(conditional, unconditional) embeddings of a whole prompt, of the same length.

    `a:0.5 b:0.5` sub-prompts are the weighted sum of their embeddings (weights normalized by
    the parser unless -x); the `[negative]` text, or "", is the unconditional input of CFG
    (zeros for SDXL base models when there is no negative text, as diffusers does)."""
    skip_normalize = prompt.skip_normalize
    weighted = [
        (encoders.embed(part.fragments, skip_normalize), part.weight) for part in prompt.positive
    ]
    if len(weighted) == 1 and weighted[0][1] == 1.0:
        cond = weighted[0][0]
    else:
        cond = encoders.mix(weighted)
    if not prompt.negative.text and zeros_for_empty_negative:
        hidden, pooled = cond
        uncond: Embedding = (
            torch.zeros_like(hidden),
            None if pooled is None else torch.zeros_like(pooled),
        )
        return cond, uncond
    log_negative = encoders.log_tokenization
    encoders.log_tokenization = log_negative and bool(prompt.negative.text)
    uncond = encoders.embed(prompt.negative.fragments, skip_normalize)
    encoders.log_tokenization = log_negative
    length = max(cond[0].shape[1], uncond[0].shape[1])
    return (encoders.pad(cond[0], length), cond[1]), (encoders.pad(uncond[0], length), uncond[1])


def text_length(prompt: Prompt, tokenizer: Any = None) -> int:
    """How many tokens the UNet's cross-attention will see for this prompt, as encode_parts pads
    it: 77 per chunk of 75 tokens, the chunks of an `.and()`'s parts one after another, of the
    longest sub-prompt or negative prompt. Known before anything is encoded, so a compiled graph
    can be picked for it (without a tokenizer: one chunk per part; an embedding's `<name>` is
    counted as its text, not its vectors)."""
    length = 77 if tokenizer is None else tokenizer.model_max_length

    def count(sequence: Sequence) -> int:
        if tokenizer is None:
            return 1
        ids = [i for fragment in sequence for i in _ids(tokenizer, fragment.text)]
        return len(chunks(ids, length - 2))

    def size(parsed: Sequence | Parts) -> int:
        if not isinstance(parsed, Parts):
            return count(parsed)
        sizes = [count(sequence) for sequence, _ in parsed.parts]
        return sum(sizes) if parsed.combine == "and" else max(sizes)

    return length * max(size(part.fragments) for part in (*prompt.positive, prompt.negative))


@torch.no_grad()
def encode_prompt(
    model: Any,
    prompt: Prompt,
    log_tokenization: bool = False,
    embeddings: tuple[EmbeddingFile, ...] = (),
    on_event: OnEvent | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(conditional, unconditional) embeddings, each (1, 77 * k, dim), computed once per job;
    -t's tokens go to `on_event` as events.Tokens."""
    encoders = sd_encoders(model, log_tokenization, embeddings, on_event)
    cond, uncond = encode_parts(encoders, prompt)
    return cond[0].to(model.dtype), uncond[0].to(model.dtype)
