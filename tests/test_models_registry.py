"""models.yaml: reading and checking it, picking a model, changing the user's copy safely."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from invoke.config.models_yaml import (
    SHIPPED_CONFIG,
    WRITTEN_HEADER,
    ModelsFileError,
    change_models_file,
    load_model_entries,
    model_source,
    model_status,
    pick_model,
)
from invoke.config.settings import Settings
from invoke.config.user_dir import user_config_path
from invoke.errors import ModelError
from invoke.line.request import Request
from invoke.session import Session
from invoke.shell.report import TerminalReporter


@pytest.fixture(autouse=True)
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def models_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ModelsFileError) as caught:
        load_model_entries(path)
    lines = str(caught.value).splitlines()
    assert lines == [f"{path}: {p}" for p in caught.value.problems]
    return caught.value.problems


def test_shipped_list_has_the_embedded_default() -> None:
    entries = load_model_entries(SHIPPED_CONFIG)
    assert [e.name for e in entries.values() if e.default] == ["default"]
    assert entries["default"].embedded


def test_every_kind_of_entry_reads_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    path = models_file(
        tmp_path,
        "folder:\n  description: a folder\n  path: models/sd15\n  width: 512\n  height: 768\n"
        "  family: sd-1\n  vae: vaes/better\n  precision: bfloat16\n  default: true\n"
        "single:\n  file: ~/ckpt/x.safetensors\n"
        "hub:\n  repo_id: someone/some-model\n"
        "'1.5':\n  embedded: true\n",
    )
    entries = load_model_entries(path)
    folder = entries["folder"]
    assert folder.path == tmp_path / "models" / "sd15"
    assert folder.vae == tmp_path / "vaes" / "better"
    assert (folder.width, folder.height, folder.family, folder.precision) == (
        512,
        768,
        "sd-1",
        "bfloat16",
    )
    assert entries["single"].file == Path.home() / "ckpt" / "x.safetensors"
    assert entries["hub"].repo_id == "someone/some-model"
    assert entries["1.5"].embedded
    assert pick_model(Settings(config=path), entries).name == "folder"


def test_each_problem_is_one_line_naming_entry_and_value(tmp_path: Path) -> None:
    path = models_file(
        tmp_path,
        "1.5:\n  embedded: true\n"
        "bad name:\n  embedded: true\n"
        "notamap: /models/x\n"
        "both:\n  path: /a\n  file: /b.safetensors\n"
        "ckpt:\n  file: /m/model.txt\n"
        "typed:\n  embedded: true\n  width: true\n  height: 500\n  family: sd-3\n"
        "  precision: half\n  default: yes please\n",
    )
    assert problems(path) == [
        "model name 1.5 reads as a number; quote it: '1.5':",
        "model name 'bad name': use letters, digits and . _ + - (no spaces or slashes)",
        "notamap: expected settings under the name (description, path, ...)",
        "both: has path and file; give exactly one source",
        "ckpt: file model.txt is not a checkpoint (.safetensors, .ckpt, .pt, .pth, .bin); "
        "a diffusers folder goes under path:",
        "typed: family 'sd-3' is not one of sd-1, sd-2, sd-2-v, sdxl, sdxl-refiner, kandinsky-2.2",
        "typed: width must be a whole number of pixels (a multiple of 8), not True",
        "typed: height 500 must be a positive multiple of 8",
        "typed: precision 'half' is not one of auto, float32, float16, bfloat16",
        "typed: default must be true or false, not 'yes please'",
    ]


def test_broken_yaml_and_empty_file(tmp_path: Path) -> None:
    assert problems(models_file(tmp_path, "a:\n  path: [unclosed\n"))[0].startswith(
        "not valid YAML at line"
    )
    assert problems(models_file(tmp_path, "# nothing here\n")) == [
        "no models listed; add one, e.g. `default: {embedded: true}`"
    ]
    assert "top level" in problems(models_file(tmp_path, "- a\n- b\n"))[0]


def test_model_by_folder_or_checkpoint_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = Settings(model=str(tiny_model_dir))
    entry = pick_model(settings)
    assert (entry.name, entry.path, entry.listed) == ("tiny", tiny_model_dir, False)

    checkpoint = tmp_path / "default.safetensors"
    checkpoint.write_bytes(b"")
    entry = pick_model(Settings(model=str(checkpoint)))
    # named after the file, but not after an entry it would shadow
    assert (entry.name, entry.file) == ("default-2", checkpoint)

    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(ModelError, match=r"notes\.txt is not a checkpoint file"):
        pick_model(Settings(model=str(notes)))


def test_repo_id_not_in_the_cache_says_how_to_get_it() -> None:
    entries = load_model_entries(SHIPPED_CONFIG)
    hub = entries["default"].__class__("hub", repo_id="invoke-tests/never-cached-model")
    with pytest.raises(ModelError) as caught:
        model_source(hub)
    message = str(caught.value)
    assert "invoke-tests/never-cached-model is not in the local Hugging Face cache" in message
    assert "hf download invoke-tests/never-cached-model" in message
    assert "--allow-downloads" in message and "\n" not in message
    assert model_status(hub) == "missing"


def test_changes_go_to_a_copy_with_paths_anchored(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    given = tmp_path / "conf" / "models.yaml"
    given.write_text("rel:\n  path: ../models/sd\n  default: true\n", encoding="utf-8")
    # No --config: the user's copy is made from the list in use (here, via a user copy first).
    user = user_config_path()
    user.parent.mkdir(parents=True)
    user.write_text(given.read_text(), encoding="utf-8")
    written = change_models_file(Settings(), lambda raw: raw.update(x={"embedded": True}))
    assert written == user
    saved = yaml.safe_load(user.read_text())
    assert list(saved) == ["rel", "x"]

    # --config names another file: that file is changed, its relative paths kept as they are.
    change_models_file(Settings(config=given), lambda raw: raw["rel"].update(width=64))
    assert yaml.safe_load(given.read_text())["rel"] == {
        "path": "../models/sd",
        "default": True,
        "width": 64,
    }


def test_a_change_that_would_break_the_file_is_not_written(tmp_path: Path) -> None:
    user = user_config_path()
    user.parent.mkdir(parents=True)
    user.write_text("a:\n  embedded: true\n", encoding="utf-8")
    before = user.read_text()
    with pytest.raises(ModelsFileError, match="b: no source"):
        change_models_file(Settings(), lambda raw: raw.update(b={"description": "x"}))
    assert user.read_text() == before
    assert [p.name for p in user.parent.iterdir()] == ["models.yaml"]


def test_first_change_anchors_relative_paths_of_the_shipped_style_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The list in use lives elsewhere (as the shipped one does); its relative paths must still
    # point at the same folders from the user's copy, and every comment stays, even the one on
    # the line whose path changed.
    elsewhere = tmp_path / "checkout" / "configs"
    elsewhere.mkdir(parents=True)
    source = elsewhere / "models.yaml"
    text = (
        "# the list\n\n# beside the checkout\nm:  # mine\n  path: {}  # relative\n"
        "  default: true\n# end\n"
    )
    source.write_text(text.format("../models/sd"), encoding="utf-8")
    monkeypatch.setattr("invoke.config.models_yaml.SHIPPED_CONFIG", source)
    change_models_file(Settings(), lambda raw: None)
    anchored = text.format(tmp_path / "checkout" / "models" / "sd")
    assert user_config_path().read_text() == WRITTEN_HEADER + anchored


def test_entry_precision_and_backend_hash_reach_the_loader_and_metadata(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import invoke.backend.loading as backend

    real = backend.load_model
    seen: dict[str, object] = {}

    def load_model(path, device="auto", precision="auto", name=None, **options):
        seen.update(path=path, precision=precision)
        return real(path, device, "float32", name, **options)

    monkeypatch.setattr(backend, "load_model", load_model)
    path = models_file(
        tmp_path,
        f"t:\n  path: {tiny_model_dir}\n  precision: bfloat16\n  width: 32\n  height: 32\n",
    )
    session = Session(
        Settings(config=path, outdir=tmp_path / "out"),
        reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO(), progress=False),
    )
    [image] = session.generate(Request(prompt="a cat", steps=2, seed=5))
    assert seen == {"path": tiny_model_dir, "precision": "bfloat16"}
    with Image.open(image) as opened:
        assert opened.size == (32, 32)  # models.yaml's size is the default -W/-H
        meta = json.loads(opened.text["sd-metadata"])
    assert meta["model_id"] == "t"
    assert len(meta["model_hash"]) == 64 and meta["model_hash"] == session.model.model_hash


def test_a_windows_file_keeps_its_line_ends_and_a_folded_value_its_comment(tmp_path: Path) -> None:
    path = models_file(tmp_path, "")
    text = (
        "# mine\r\nm:\r\n  description: >-  # folded\r\n    two\r\n    lines\r\n"
        "  embedded: true\r\n"
    )
    path.write_bytes(text.encode("utf-8"))
    change_models_file(
        Settings(config=path), lambda raw: raw["m"].update(description="één", width=64)
    )
    assert path.read_bytes().decode("utf-8") == (
        "# mine\r\nm:\r\n  description: één  # folded\r\n  embedded: true\r\n  width: 64\r\n"
    )
