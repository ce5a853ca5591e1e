"""Textual inversion embeddings in the tiny models, held to diffusers' own loader.

The oracle: diffusers' pipeline on a second copy of the same model, `load_textual_inversion(file,
token="<name>")`, then its `encode_prompt` of the same prompt; our encoders must give the same
embeddings, for AUTOMATIC1111's and diffusers' files, one vector and several, and SDXL's
clip_l/clip_g pairs. Then what a user sees: pictures change, plain prompts stay bit for bit what
they were, `<name>` without the job's embedding is text, and bad files are one line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from invoke.backend import embeddings as embeddings_module
from invoke.backend.families import sdxl
from invoke.backend.job import EmbeddingFile
from invoke.backend.loading import load_model
from invoke.backend.model import Model
from invoke.backend.prompts import encode_prompt
from invoke.errors import InvokeError
from invoke.events import Tokens
from invoke.line.prompt_syntax import parse_prompt
from tests.helpers import (
    embedding_file,
    embedding_vectors,
    make_job,
    pixels,
    sd_pipeline,
    sdxl_pipeline,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

WIDTH = 32  # the tiny models' text encoders (both of SDXL's too)
PROMPT = "a <ink> cat [blurry <ink>]"


vectors = embedding_vectors  # (count, width=32, seed=0)


def embedding(name: str, path: Path) -> EmbeddingFile:
    """As the session makes it: the file's name and its stamp."""
    info = path.stat()
    return EmbeddingFile(name, str(path), (info.st_size, info.st_mtime_ns))


def a1111_safetensors(path: Path, tensor: torch.Tensor) -> Path:
    save_file({"emb_params": tensor}, str(path))
    return path


def a1111_pt(path: Path, tensor: torch.Tensor) -> Path:
    torch.save(
        {
            "string_to_token": {"*": 265},
            "string_to_param": {"*": tensor},
            "name": "ink",
            "step": 3000,
            "sd_checkpoint": "a9263745",
            "sd_checkpoint_name": "v1-5-pruned-emaonly",
        },
        path,
    )
    return path


def diffusers_file(path: Path, tensor: torch.Tensor) -> Path:
    """learned_embeds.safetensors as diffusers' textual inversion training saves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"<ink>": tensor[0] if len(tensor) == 1 else tensor}, str(path))
    return path


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Model:
    return load_model(tiny_model_dir, device="cpu")


# -- the embeddings, against diffusers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "name", "count"),
    [
        (a1111_safetensors, "ink.safetensors", 1),
        (a1111_safetensors, "ink.safetensors", 3),
        (a1111_pt, "ink.pt", 2),
        (diffusers_file, "ink/learned_embeds.safetensors", 1),
        (diffusers_file, "ink/learned_embeds.safetensors", 4),
    ],
    ids=["a1111-1", "a1111-3", "a1111-pt-2", "diffusers-1", "diffusers-4"],
)
def test_sd_embeddings_encode_as_diffusers_loads_them(
    tiny_model_dir: Path, tmp_path: Path, write: Any, name: str, count: int
) -> None:
    file = write(tmp_path / name, vectors(count))
    ours = load_model(tiny_model_dir, device="cpu")
    cond, uncond = encode_prompt(ours, parse_prompt(PROMPT), embeddings=(embedding("ink", file),))

    theirs = load_model(tiny_model_dir, device="cpu")
    pipe = sd_pipeline(theirs)
    pipe.load_textual_inversion(str(file), token="<ink>")
    expected, expected_uncond = pipe.encode_prompt(
        "a <ink> cat", "cpu", 1, True, negative_prompt="blurry <ink>"
    )
    assert torch.allclose(cond, expected, atol=1e-5)
    assert torch.allclose(uncond, expected_uncond, atol=1e-5)
    assert not torch.allclose(cond, encode_prompt(ours, parse_prompt(PROMPT))[0], atol=1e-3)


@pytest.mark.parametrize("count", [1, 2])
def test_sdxl_embeddings_encode_as_diffusers_loads_clip_l_and_clip_g(
    tiny_sdxl_dir: Path, tmp_path: Path, count: int
) -> None:
    pair = {"clip_l": vectors(count, seed=1), "clip_g": vectors(count, seed=2)}
    file = tmp_path / "ink.safetensors"
    save_file(pair, str(file))
    ours = load_model(tiny_sdxl_dir, device="cpu")
    got = sdxl.encode_prompt(ours, parse_prompt(PROMPT), embeddings=(embedding("ink", file),))

    theirs = load_model(tiny_sdxl_dir, device="cpu")
    pipe = sdxl_pipeline(theirs, "k_euler")
    pipe.load_textual_inversion(
        pair["clip_l"], token="<ink>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        pair["clip_g"], token="<ink>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
    )
    expected = pipe.encode_prompt("a <ink> cat", device="cpu", negative_prompt="blurry <ink>")
    for ours_part, theirs_part in zip(got, expected, strict=True):
        assert torch.allclose(ours_part, theirs_part, atol=1e-5)
    # and the SDXL loop uses them
    job = make_job(prompt="a <ink> cat", steps=2)
    used = replace(job, embeddings=(embedding("ink", file),))
    assert np.abs(pixels(ours.generate(used)) - pixels(ours.generate(job))).max() > 0


# -- what the rest of the prompt sees -------------------------------------------------------------


def test_plain_prompts_and_unused_triggers_encode_bit_for_bit_as_before(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Rows are added, the tokenizer is untouched: a plain prompt, and `<ink>` in a job that
    does not use the embedding (its file gone, say), are what they were before it loaded."""
    model = load_model(tiny_model_dir, device="cpu")
    texts = ["a red circle [blue]", "a <ink> cat", "(a red)1.3 circle"]
    before = [encode_prompt(model, parse_prompt(text)) for text in texts]
    file = embedding_file(tmp_path / "ink.safetensors")
    encode_prompt(model, parse_prompt("a <ink> cat"), embeddings=(embedding("ink", file),))
    after = [encode_prompt(model, parse_prompt(text)) for text in texts]
    for old, new in zip(before, after, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(old, new, strict=True))


def test_weights_apply_to_the_vectors_and_t_shows_them(model: Model, tmp_path: Path) -> None:
    file = (embedding("ink", embedding_file(tmp_path / "ink.safetensors")),)
    shown: list[object] = []
    told = {"embeddings": file, "log_tokenization": True, "on_event": shown.append}
    plain, _ = encode_prompt(model, parse_prompt("a <ink> cat"), **told)
    heavier, _ = encode_prompt(model, parse_prompt("a (<ink>)1.3 cat"), **told)
    assert shown == [
        Tokens(4, "a <ink> <ink>_1 cat"),
        Tokens(4, "a <ink>(1.3) <ink>_1(1.3) cat"),
    ]
    same, _ = encode_prompt(model, parse_prompt("a (<ink>)1 cat"), embeddings=file)
    assert torch.equal(same, plain) and not torch.allclose(heavier, plain, atol=1e-4)
    # Only the vectors' positions move (start token, "a", 2 vectors, "cat", end, padding...).
    moved = (heavier - plain).abs().amax(dim=-1)[0] > 1e-5
    assert moved[2:4].all() and not moved[:2].any()


def test_pictures_change_and_a_file_is_read_once_until_it_changes(
    model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    original = embeddings_module.read_embedding
    monkeypatch.setattr(
        embeddings_module, "read_embedding", lambda m, e: reads.append(e.path) or original(m, e)
    )
    file = embedding_file(tmp_path / "ink.safetensors")
    text = pixels(model.generate(make_job(prompt="a <ink> cat", steps=2)))
    used = make_job(prompt="a <ink> cat", steps=2, embeddings=(embedding("ink", file),))
    first = pixels(model.generate(used))
    assert pixels(model.generate(used)).tolist() == first.tolist()
    assert np.abs(first - text).max() > 20 and len(reads) == 1

    rows = model.text_encoder.get_input_embeddings().weight.shape[0]
    embedding_file(file, seed=5)  # changed on disk: another stamp
    changed = make_job(prompt="a <ink> cat", steps=2, embeddings=(embedding("ink", file),))
    assert np.abs(pixels(model.generate(changed)) - first).max() > 20
    assert len(reads) == 2 and model.text_encoder.get_input_embeddings().weight.shape[0] == rows + 2


# -- files that cannot be used -----------------------------------------------------------------


def test_files_for_another_kind_of_model_are_refused_naming_both_widths(
    model: Model, tiny_sdxl_dir: Path, tmp_path: Path
) -> None:
    def refusal(target: Model, file: Path) -> str:
        rows = target.text_encoder_2 or target.text_encoder
        size = rows.get_input_embeddings().weight.shape[0]
        with pytest.raises(InvokeError) as caught:
            target.generate(make_job(prompt="a <x> cat", embeddings=(embedding("x", file),)))
        assert rows.get_input_embeddings().weight.shape[0] == size  # nothing added
        assert "\n" not in str(caught.value)
        return str(caught.value)

    wide = embedding_file(tmp_path / "sd2.safetensors", 1, width=48)
    assert refusal(model, wide) == (
        f"embedding <x> ({wide}): its vectors are 48 wide, model tiny (sd-1) takes 32; "
        "it was made for another kind of model"
    )
    xl_file = tmp_path / "xl.safetensors"
    save_file({"clip_l": vectors(1), "clip_g": vectors(1)}, str(xl_file))
    assert "are clip_l 32 + clip_g 32 wide, model tiny (sd-1) takes 32;" in refusal(model, xl_file)
    sd_file = embedding_file(tmp_path / "sd1.safetensors", 1)
    xl = load_model(tiny_sdxl_dir, device="cpu")
    assert "are 32 wide, model sdxl (sdxl) takes clip_l 32 + clip_g 32;" in refusal(xl, sd_file)


def test_broken_and_odd_files_are_one_line(model: Model, tmp_path: Path) -> None:
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    two = tmp_path / "two.safetensors"
    save_file({"a": vectors(1), "b": vectors(1)}, str(two))
    grid = tmp_path / "grid.safetensors"
    save_file({"emb_params": torch.zeros(2, 2, WIDTH)}, str(grid))
    code = tmp_path / "code.pt"
    torch.save({"string_to_param": {"*": vectors(1)}, "model": torch.nn.Linear(2, 2)}, code)
    for file, message in [
        (cut, r"embedding <x> \(.*cut.safetensors\): is damaged"),
        (two, r"holds no embedding \(a, b\); expected AUTOMATIC1111's emb_params"),
        (grid, r"its tensor has shape \(2, 2, 32\); an embedding is one vector or a few"),
        (code, r"code.pt\): cannot read the pickle file"),
    ]:
        with pytest.raises(InvokeError, match=message) as caught:
            encode_prompt(model, parse_prompt("a <x>"), embeddings=(embedding("x", file),))
        assert "\n" not in str(caught.value)
