"""A CLIP-format BPE tokenizer folder built offline from a word list.

The tiny test model and the trained default model need a tokenizer that `CLIPTokenizer` loads
without the network. Real CLIP vocabularies are 49k entries; ours holds CLIP's 256 byte-level base
symbols (plain and with `</w>`, so any text tokenizes, unknown words falling back to characters),
one merged token per word we were given, and the two special tokens.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, normalizers, pre_tokenizers

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_LENGTH = 77

# CLIPTokenizer's own normalizer and pre-tokenizer: words must be split and byte-mapped exactly
# as the tokenizer will do it, or the merges we write would never apply.
_NORMALIZER = normalizers.Sequence(
    [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
)
_PRE_TOKENIZER = pre_tokenizers.Sequence(
    [
        pre_tokenizers.Split(
            Regex(
                r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
            ),
            behavior="removed",
            invert=True,
        ),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ]
)


def _byte_symbols_clip_order() -> list[str]:
    # CLIP orders the base symbols by the byte they stand for: printable ASCII and Latin-1 first,
    # then the remapped control bytes. The order only fixes ids; any order would load.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def _pieces(text: str) -> list[str]:
    """The byte-mapped pre-tokens of `text`, as CLIPTokenizer will see them."""
    return [piece for piece, _ in _PRE_TOKENIZER.pre_tokenize_str(_NORMALIZER.normalize_str(text))]


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Standard BPE: repeatedly merge the lowest-ranked adjacent pair."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, -1), i) for i, p in enumerate(itertools.pairwise(symbols))]
        candidates = [(r, i) for r, i in pairs if r >= 0]
        if not candidates:
            break
        _, i = min(candidates)
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def build_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Merges under which each word's every piece becomes a single token.

    A new merge goes to the end of the list (lowest priority), so it can only join what the earlier
    merges left apart: words already whole stay whole, and the loop ends.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        for piece in _pieces(word):
            if len(piece) < 2:
                continue
            symbols = [*piece[:-1], piece[-1] + END_OF_WORD]
            tokens = _bpe(symbols, ranks)
            while len(tokens) > 1:
                pair = (tokens[0], tokens[1])
                ranks[pair] = len(merges)
                merges.append(pair)
                tokens = _bpe(tokens, {pair: 0})
    return merges


def build_clip_tokenizer(out_dir: str | Path, words: Iterable[str]) -> int:
    """Write vocab.json, merges.txt and the configs for a CLIP tokenizer; return the vocab size."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merges = build_merges(words)

    base = _byte_symbols_clip_order()
    tokens = [*base, *(s + END_OF_WORD for s in base)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            tokens.append(a + b)
    tokens += [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}

    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return len(vocab)
