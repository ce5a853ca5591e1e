"""Textual inversion embeddings: a prompt's `<name>` read as the vectors in name's file.

Textual inversion learns one or more vectors in a text encoder's input space that stand for a new
"word". Each vector becomes a new row of the encoder's token-embedding table, and where the
prompt says `<name>` the token ids get those rows' ids (prompts.TextEncoder.ids), so the encoder
reads the vectors as it reads words: what diffusers' load_textual_inversion does, and the tests
hold the embeddings to it.

Unlike diffusers, the tokenizer is left alone. A token added to it would be matched in the text
of every later prompt, also where `<name>` is no embedding (its file gone, another folder), so a
line would encode differently after another line had used the embedding; here only the job's
own embeddings are put in.

A model reads a file once, the first time a prompt uses it, and keeps its rows; a file changed
on disk (another stamp) gets new rows. Rows are never taken out: a few kB each, and ids already
handed out keep meaning the same vectors.

The files people have:
- AUTOMATIC1111: .pt `{"string_to_param": {"*": (n, dim)}, "name": ..., ...}`, .safetensors
  `{"emb_params": (n, dim)}`;
- diffusers (learned_embeds.safetensors, .bin): `{token: (dim,) or (n, dim)}`;
- SDXL: `{"clip_l": (n, 768), "clip_g": (n, 1280)}`, clip_l for the first text encoder (CLIP
  ViT-L), clip_g for the second (OpenCLIP bigG; the refiner's only one).
Pickles (.pt, .bin) come here only when the session allowed them (--allow-pickle,
settings.find_embedding), and are read with torch.load(weights_only=True).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from invoke.backend.finite import check_weights
from invoke.errors import InvokeError

if TYPE_CHECKING:
    from invoke.backend.job import EmbeddingFile
    from invoke.backend.model import Model

# Token ids of one embedding's vectors, for each of a model's text encoders (prompts.Encoders'
# order: text_encoder, then text_encoder_2).
Ids = tuple[tuple[int, ...], ...]


@dataclass(eq=False)
class _Rows:
    """The embeddings a model has rows for: (path, stamp) -> their ids."""

    ids: dict[tuple[str, tuple[int, int]], Ids] = field(default_factory=dict)


def text_encoders(model: Model) -> list[Any]:
    """The model's text encoders, in the order prompts.Encoders has them."""
    parts = (model.text_encoder, model.text_encoder_2)
    return [part for part in parts if part is not None]


def load_embeddings(model: Model, embeddings: tuple[EmbeddingFile, ...]) -> dict[str, Ids]:
    """name -> its vectors' token ids in each text encoder; files new to the model are read
    (all checked before any row is added) and their vectors added as rows."""
    if model.embedding_rows is None:
        model.embedding_rows = _Rows()
    rows: _Rows = model.embedding_rows
    new = [e for e in embeddings if (e.path, e.stamp) not in rows.ids]
    read = [(e, read_embedding(model, e)) for e in new]
    for embedding, vectors in read:
        ids = tuple(
            _add_rows(encoder, v) for encoder, v in zip(text_encoders(model), vectors, strict=True)
        )
        rows.ids[embedding.path, embedding.stamp] = ids
    return {e.name: rows.ids[e.path, e.stamp] for e in embeddings}


def _add_rows(encoder: Any, vectors: torch.Tensor) -> tuple[int, ...]:
    """Append the vectors to the encoder's token-embedding table; their ids. The rows before
    them stay the same tensors' values, so every other prompt encodes bit for bit as before."""
    table = encoder.get_input_embeddings()
    old = table.weight
    first = old.shape[0]
    grown = torch.cat([old.detach(), vectors.to(old.device, old.dtype)])
    table.weight = nn.Parameter(grown, requires_grad=False)
    table.num_embeddings = grown.shape[0]
    encoder.config.vocab_size = grown.shape[0]
    return tuple(range(first, grown.shape[0]))


# -- reading a file -------------------------------------------------------------------------------


def read_embedding(model: Model, embedding: EmbeddingFile) -> list[torch.Tensor]:
    """The file's vectors (n, width) for each of the model's text encoders, checked against
    them: one line naming the file and both widths when it was made for another kind of model."""
    from invoke.backend.single_file import read_weights

    what = f"embedding <{embedding.name}> ({embedding.path})"
    # The session let a pickle through only with --allow-pickle; it is read as weights only.
    data = read_weights(Path(embedding.path), True, "embedding", what)
    tensors = _tensors(data, what)
    check_weights(what, tensors.values(), again="download it again", noun="value")
    # SD 1.x/2.x files hold one set of vectors; SDXL's one per encoder, by name.
    keys = ["clip_l" if model.text_encoder_2 is not None else "", "clip_g"]
    wanted = [
        (key, encoder.get_input_embeddings().weight.shape[1])
        for key, encoder in zip(keys, (model.text_encoder, model.text_encoder_2), strict=True)
        if encoder is not None
    ]
    if any(key not in tensors or tensors[key].shape[1] != width for key, width in wanted):
        has = _widths((key, t.shape[1]) for key, t in tensors.items())
        raise InvokeError(
            f"{what}: its vectors are {has} wide, model {model.name} ({model.family}) takes "
            f"{_widths(wanted)}; it was made for another kind of model"
        )
    return [tensors[key] for key, _ in wanted]


def _widths(widths: Iterable[tuple[str, int]]) -> str:
    """768, or clip_l 768 + clip_g 1280."""
    return " + ".join(f"{key} {width}".strip() for key, width in widths)


def _tensors(data: Any, what: str) -> dict[str, torch.Tensor]:
    """A file's vectors, each (n, width): {"": ...} for SD 1.x/2.x, {"clip_l": ..., "clip_g":
    ...} for SDXL."""
    if isinstance(data, dict) and isinstance(data.get("string_to_param"), dict):
        data = data["string_to_param"]  # AUTOMATIC1111's .pt: {"*": vectors}
    if isinstance(data, torch.Tensor):
        found = {"": data}
    elif isinstance(data, dict) and ("clip_l" in data or "clip_g" in data):
        found = {key: data[key] for key in ("clip_l", "clip_g") if key in data}
    elif isinstance(data, dict) and len(tensors := _only_tensors(data)) == 1:
        found = {"": next(iter(tensors.values()))}  # emb_params, diffusers' {token: vectors}
    else:
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise InvokeError(
            f"{what}: holds no embedding ({keys}); expected AUTOMATIC1111's emb_params or "
            "string_to_param, diffusers' one {token: vectors}, or SDXL's clip_l and clip_g"
        )
    vectors = {}
    for key, tensor in found.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise InvokeError(f"{what}: {key or 'its tensor'} is not a tensor of numbers")
        if tensor.ndim not in (1, 2) or tensor.numel() == 0:
            raise InvokeError(
                f"{what}: {key or 'its tensor'} has shape {tuple(tensor.shape)}; an embedding is "
                "one vector or a few (vectors x width)"
            )
        vectors[key] = tensor.reshape(-1, tensor.shape[-1]).float()
    return vectors


def _only_tensors(data: dict[Any, Any]) -> dict[Any, torch.Tensor]:
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
