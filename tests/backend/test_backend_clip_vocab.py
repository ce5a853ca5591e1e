from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from tests.fixtures.clip_vocab import BOS, EOS, build_clip_tokenizer

WORDS = ["red", "circle", "blue", "background", "ab", "abc", "bc", "circles", "café"]


def _tokenizer(tmp_path: Path, words: list[str]) -> tuple[CLIPTokenizer, int]:
    size = build_clip_tokenizer(tmp_path / "tok", words)
    return CLIPTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True), size


def test_every_given_word_is_one_token_and_round_trips(tmp_path: Path) -> None:
    tokenizer, size = _tokenizer(tmp_path, WORDS)
    assert len(tokenizer) == size
    for word in WORDS:
        ids = tokenizer(word).input_ids
        assert ids[0] == tokenizer.convert_tokens_to_ids(BOS)
        assert ids[-1] == tokenizer.convert_tokens_to_ids(EOS)
        assert len(ids) == 3, (word, tokenizer.convert_ids_to_tokens(ids))
        assert tokenizer.decode(ids, skip_special_tokens=True) == word


def test_unknown_text_falls_back_to_characters(tmp_path: Path) -> None:
    tokenizer, _ = _tokenizer(tmp_path, WORDS)
    ids = tokenizer("Zebra circle!").input_ids
    unk = tokenizer.unk_token_id
    assert unk not in ids[1:-1]
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == [
        "z", "e", "b", "r", "a</w>", "circle</w>", "!</w>",
    ]  # fmt: skip
    assert tokenizer.decode(ids, skip_special_tokens=True) == "zebra circle !"


def test_pads_to_clip_length(tmp_path: Path) -> None:
    tokenizer, _ = _tokenizer(tmp_path, WORDS)
    assert tokenizer.model_max_length == 77
    ids = tokenizer("red circle", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77
    assert ids[3:] == [tokenizer.pad_token_id] * 74


def test_same_words_same_files(tmp_path: Path) -> None:
    build_clip_tokenizer(tmp_path / "a", WORDS)
    build_clip_tokenizer(tmp_path / "b", WORDS)
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    vocab = json.loads((tmp_path / "a" / "vocab.json").read_text(encoding="utf-8"))
    # CLIP's 256 byte symbols, plain and word-final, so any text can be spelled.
    assert sum(1 for t in vocab if len(t) == 1) == 256
    assert sum(1 for t in vocab if len(t) == 5 and t.endswith("</w>")) == 256
