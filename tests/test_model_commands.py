"""The model commands in the real shell on the real session, and --model at launch.

The user's config folder is pointed at tmp_path, so a real ~/.config/invoke-dream/models.yaml never
leaks in and the tests never write one.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from prompt_toolkit.application import create_app_session
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.data_structures import Size
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from invoke.__main__ import cli
from invoke.config.models_yaml import SHIPPED_CONFIG, WRITTEN_HEADER
from invoke.config.settings import Settings
from invoke.config.user_dir import user_config_path
from invoke.session import Session
from invoke.shell.batch import run_batch
from invoke.shell.completer import ShellCompleter
from invoke.shell.repl import banner, run_repl
from invoke.shell.report import TerminalReporter

ENTER = "\r"
CTRL_D = "\x04"


@pytest.fixture(scope="module")
def second_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.tiny_models import build_test_model

    return build_test_model(tmp_path_factory.mktemp("models") / "other", seed=1)


@pytest.fixture
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's models.yaml, in tmp_path; holds models a (active by default), b and gone."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return user_config_path()


def write_models(path: Path, models: dict[str, dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(models, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def two_models(user_config: Path, tiny_model_dir: Path, second_model_dir: Path) -> Path:
    return write_models(
        user_config,
        {
            "a": {"description": "first tiny model", "path": str(tiny_model_dir), "default": True},
            "b": {"description": "second tiny model", "path": str(second_model_dir)},
            "gone": {"description": "deleted long ago", "file": "/nowhere/x.safetensors"},
        },
    )


def shell(session: Session, keys: str) -> tuple[int, list[str], str]:
    """Type `keys` into the real shell; returns the status, printed lines and the screen text."""
    printed: list[str] = []
    opening = banner(session.active_model())
    screen = io.StringIO()
    output = Vt100_Output(screen, lambda: Size(rows=24, columns=120), enable_cpr=False)
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=output):
        pipe.send_text(keys)
        status = run_repl(
            session, input=pipe, output=output, out=printed.append, err=printed.append
        )
    assert printed[:1] == [opening]  # the shell opens with its banner; the rest is the test's
    return status, printed[1:], screen.getvalue()


def new_session(outdir: Path, **settings: object) -> Session:
    return Session(
        Settings(outdir=outdir, **settings),
        reporter=TerminalReporter(out=io.StringIO(), err=io.StringIO(), progress=False),
    )


def sd_metadata(path: Path) -> dict:
    with Image.open(path) as image:
        image.load()
        return json.loads(image.text["sd-metadata"])


def test_models_lists_the_user_copy_with_status(tmp_path: Path, two_models: Path) -> None:
    session = new_session(tmp_path / "out")
    status, printed, _ = shell(session, f"!models{ENTER}{CTRL_D}")
    assert status == 0
    rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in printed}
    assert str(two_models) in printed[0]
    assert rows["a"].startswith("* a") and "active" in rows["a"] and "first tiny" in rows["a"]
    assert "not loaded" in rows["b"] and "second tiny model" in rows["b"]
    assert "missing" in rows["gone"]
    # The user's copy overrides the shipped list: its embedded `default` is not offered.
    assert "default" not in rows


def test_switch_changes_prompt_and_next_images_model_id(tmp_path: Path, two_models: Path) -> None:
    outdir = tmp_path / "out"
    session = new_session(outdir)
    keys = f"a cat -s 2 -S 1{ENTER}!switch b{ENTER}a cat -s 2 -S 1{ENTER}!models{ENTER}{CTRL_D}"
    status, printed, screen = shell(session, keys)
    assert status == 0, printed
    assert "(a) invoke> " in screen and "(b) invoke> " in screen
    assert screen.index("(a) invoke> ") < screen.index("(b) invoke> ")
    first, second = outdir / "000001.1.png", outdir / "000002.1.png"
    assert sd_metadata(first)["model_id"] == "a"
    assert sd_metadata(second)["model_id"] == "b"
    with Image.open(first) as one, Image.open(second) as two:
        assert one.tobytes() != two.tobytes()  # really another model's weights
    # Both stay loaded (--max_loaded_models 2): a is loaded, b is active.
    assert any(line.startswith("  a") and "loaded" in line for line in printed), printed
    assert any(line.startswith("* b") and "active" in line for line in printed), printed


def test_switch_to_unknown_or_missing_model_keeps_the_active_one(
    tmp_path: Path, two_models: Path
) -> None:
    session = new_session(tmp_path / "out")
    status, printed, _ = shell(session, f"!switch nope{ENTER}!switch gone{ENTER}{CTRL_D}")
    assert status == 0
    assert any("nope" in line and "a, b, gone" in line for line in printed), printed
    assert any("gone" in line and "does not exist" in line for line in printed), printed
    assert session.prompt_label() == "(a) invoke> "


def test_lru_keeps_at_most_max_loaded_models(tmp_path: Path, two_models: Path) -> None:
    session = new_session(tmp_path / "out", max_loaded_models=1)
    session.switch("b")
    session.switch("a")
    assert session.model_state("a") == "active"
    assert session.model_state("b") == "not loaded"


def test_import_edit_delete_round_trip_in_a_batch(
    tmp_path: Path, two_models: Path, second_model_dir: Path, tiny_model_dir: Path
) -> None:
    checkpoint = tmp_path / "my model.safetensors"
    checkpoint.write_bytes(b"not read by the import")
    session = new_session(tmp_path / "out")
    printed: list[str] = []
    lines = [
        f"!import_model '{checkpoint}'",  # no questions in a batch: the defaults
        f"!import_model {second_model_dir}",  # already listed as b
        "!edit_model my-model --description 'a checkpoint' -W 768 -H 512",
        "!del_model b",  # a batch cannot confirm
        "!del_model b --yes",
        "!del_model a --yes",  # the active one
    ]
    status = run_batch(session, lines, out=printed.append, err=printed.append)
    assert status == 1
    text = "\n".join(printed)
    assert "already listed as b" in text
    assert "add --yes" in text
    assert "a is the active model" in text
    saved = yaml.safe_load(two_models.read_text())
    assert list(saved) == ["a", "gone", "my-model"]  # others kept, in order
    assert saved["a"] == {
        "description": "first tiny model",
        "path": str(tiny_model_dir),
        "default": True,
    }
    assert saved["my-model"] == {
        "description": "a checkpoint",
        "file": str(checkpoint),
        "width": 768,
        "height": 512,
    }
    # The session uses the changed file at once.
    assert session.model_names() == ["a", "gone", "my-model"]
    assert session.model_entry("my-model").width == 768
    assert not list(two_models.parent.glob(".*.tmp"))  # no staging file left behind


def test_import_asks_in_the_shell_and_reasks_a_bad_answer(
    tmp_path: Path, two_models: Path, tiny_model_dir: Path
) -> None:
    folder = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    session = new_session(tmp_path / "out")
    keys = (
        f"!import_model {folder}{ENTER}"
        f"has space{ENTER}mine{ENTER}"  # a bad name is asked again
        f"{ENTER}"  # description: the default
        f"100{ENTER}64{ENTER}"  # width: not a multiple of 8, again
        f"auto{ENTER}"  # height: the model's own
        f"!switch mine{ENTER}{CTRL_D}"
    )
    status, printed, screen = shell(session, keys)
    assert status == 0, printed
    assert any("'has space'" in line for line in printed), printed
    assert any("'100'" in line and "multiple of 8" in line for line in printed), printed
    assert "Name for the model [copy]: " in screen
    saved = yaml.safe_load(two_models.read_text())["mine"]
    assert saved == {
        "description": "mine, imported from copy",
        "path": str(folder.resolve()),
        "width": 64,
    }
    assert session.prompt_label() == "(mine) invoke> "


def test_edit_and_confirmed_delete_in_the_shell(tmp_path: Path, two_models: Path) -> None:
    session = new_session(tmp_path / "out")
    keys = (
        f"!edit_model b{ENTER}renamed in the shell{ENTER}{ENTER}{ENTER}"
        f"!del_model gone{ENTER}n{ENTER}"
        f"!del_model gone{ENTER}y{ENTER}{CTRL_D}"
    )
    status, printed, _ = shell(session, keys)
    assert status == 0, printed
    saved = yaml.safe_load(two_models.read_text())
    assert list(saved) == ["a", "b"]
    assert saved["b"]["description"] == "renamed in the shell"
    assert "gone kept" in printed


def test_first_change_copies_the_list_in_use_never_the_shipped_file(
    tmp_path: Path, user_config: Path, tiny_model_dir: Path
) -> None:
    shipped = Path(__file__).resolve().parent.parent / "configs" / "models.yaml"
    before = shipped.read_bytes()
    session = new_session(tmp_path / "out")
    printed: list[str] = []
    status = run_batch(
        session, [f"!import_model {tiny_model_dir} --name t"], out=printed.append, err=print
    )
    assert status == 0
    assert shipped.read_bytes() == before
    saved = yaml.safe_load(user_config.read_text())
    assert saved["default"]["embedded"] is True and saved["t"]["path"] == str(tiny_model_dir)
    # --config naming the shipped file: refused, not written.
    session = new_session(tmp_path / "out", config=shipped)
    line = f"!import_model {tiny_model_dir} --name u"
    status = run_batch(session, [line], out=printed.append, err=printed.append)
    assert status == 1 and any("never changed" in line for line in printed)
    assert shipped.read_bytes() == before


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def test_launch_model_by_name_and_by_folder(
    tmp_path: Path, two_models: Path, second_model_dir: Path
) -> None:
    code, text = invoke("--model", "b", "-o", "o1", "a cat -s 2 -S 3")
    assert code == 0, text
    assert sd_metadata(tmp_path / "o1" / "000001.3.png")["model_id"] == "b"
    code, text = invoke("--model", str(second_model_dir), "-o", "o2", "a cat -s 2 -S 3")
    assert code == 0, text
    assert sd_metadata(tmp_path / "o2" / "000001.3.png")["model_id"] == "other"


def test_bad_models_yaml_is_one_line_per_problem(tmp_path: Path, user_config: Path) -> None:
    write_models(
        user_config,
        {
            "one": {"path": "/m/one", "default": True, "widht": 512},
            "two": {"file": "/m/two.safetensors", "default": True, "height": "big"},
            "three": {"description": "no source"},
        },
    )
    code, text = invoke("--dry-run", "a cat")
    assert code == 2
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 4, text
    assert "unknown key 'widht'; did you mean width?" in text
    assert "height must be a whole number" in text and "'big'" in text
    assert "three: no source" in text
    assert "2 entries say `default: true` (one, two)" in text
    assert all(str(user_config) in line for line in lines)


def test_repo_id_not_cached_is_a_clear_error(tmp_path: Path, user_config: Path) -> None:
    write_models(
        user_config,
        {"hub": {"repo_id": "invoke-tests/never-cached-model", "default": True}},
    )
    code, text = invoke("a cat -s 2")
    assert code != 0
    assert "invoke-tests/never-cached-model is not in the local Hugging Face cache" in text
    assert "--allow-downloads" in text and "Traceback" not in text


def test_switch_completes_model_names(tmp_path: Path, two_models: Path) -> None:
    session = new_session(tmp_path / "out")
    completer = ShellCompleter(session)
    found = completer.get_completions(Document("!switch g"), CompleteEvent())
    assert [c.text for c in found] == ["gone"]
    found = completer.get_completions(Document("!del_model "), CompleteEvent())
    assert [c.text for c in found] == ["a", "b", "gone"]


def test_a_list_broken_by_hand_is_reported_not_overwritten(
    tmp_path: Path, two_models: Path
) -> None:
    session = new_session(tmp_path / "out")
    two_models.write_text("a:\n  pth: /x\n  default: true\nb:\n  default: true\n")
    broken = two_models.read_text()
    printed: list[str] = []
    status = run_batch(session, ["!del_model gone --yes"], out=printed.append, err=printed.append)
    assert status == 1
    assert two_models.read_text() == broken
    text = "\n".join(printed)
    assert "unknown key 'pth'; did you mean path?" in text and "b: no source" in text
    assert "\\n" not in text  # each problem on its own line, not escaped into one


def test_repo_id_in_the_local_cache_loads_offline(
    tmp_path: Path, user_config: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # The layout `hf download` leaves: refs/main names the snapshot folder.
    repo = tmp_path / "hub" / "models--invoke-tests--tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    write_models(user_config, {"hub": {"repo_id": "invoke-tests/tiny", "default": True}})
    code, text = invoke("-o", "o", "a cat -s 2 -S 4")
    assert code == 0, text
    assert sd_metadata(tmp_path / "o" / "000001.4.png")["model_id"] == "hub"


def test_controlnet_hub_id_in_the_local_cache_loads_offline(
    tmp_path: Path, user_config: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `hf download lllyasviel/...` leaves a ControlNet repo, with only the fp16 variant of
    its weights (some repos ship only that)."""
    from huggingface_hub import constants

    from tests.fixtures.tiny_models import build_test_controlnet

    repo = tmp_path / "hub" / "models--invoke-tests--edges"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = build_test_controlnet(repo / "snapshots" / commit, tiny_model_dir)
    weights = snapshot / "diffusion_pytorch_model.safetensors"
    weights.rename(snapshot / "diffusion_pytorch_model.fp16.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    write_models(user_config, {"tiny": {"path": str(tiny_model_dir), "default": True}})
    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    line = "a cat -s 2 -S 4 --controlnet invoke-tests/edges --control_image white.png"
    code, text = invoke("-o", "o", line)
    assert code == 0, text
    assert "ControlNet invoke-tests/edges loaded" in text
    assert sd_metadata(tmp_path / "o" / "000001.4.png")["image"]["controlnet"]["model"] == (
        "invoke-tests/edges"
    )


def cached_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo_id: str, *files: str) -> Path:
    """A repo as `hf download` leaves it in the Hugging Face cache (refs/main names the snapshot
    folder), holding `files` (empty JSON); the cache is pointed at tmp_path/hub."""
    from huggingface_hub import constants

    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name in files:
        (repo / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / name).write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return repo / "snapshots" / commit


def test_import_a_hub_id_from_the_local_cache_adds_a_repo_id_entry(
    tmp_path: Path, two_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached_repo(tmp_path, monkeypatch, "prompthero/openjourney", "model_index.json")
    cached_repo(tmp_path, monkeypatch, "someone/single-file", "v1-5.safetensors")
    session = new_session(tmp_path / "out")
    printed: list[str] = []
    lines = [
        "!import_model prompthero/openjourney --yes",  # as InvokeAI's docs write it
        "!import_model prompthero/openjourney --yes",  # listed now
        "!import_model invoke-tests/never-cached --yes",  # never downloaded: how to get it
        "!import_model someone/single-file --yes",  # cached, but no diffusers layout
        "!import_model someone/name. --yes",  # no hub id: one line, no traceback
        "!models",
    ]
    status = run_batch(session, lines, out=printed.append, err=printed.append)
    assert status == 1
    saved = yaml.safe_load(two_models.read_text())
    assert list(saved) == ["a", "b", "gone", "openjourney"]
    assert saved["openjourney"] == {
        "description": "openjourney, imported from prompthero/openjourney",
        "repo_id": "prompthero/openjourney",
    }
    failed = {
        line.split(":")[0]: line.partition(": ")[2] for line in printed if line[:5] == "line "
    }
    assert failed["line 2"] == (
        "!import_model: prompthero/openjourney is already listed as openjourney (see !models)"
    )
    assert failed["line 3"] == (
        f"!import_model: invoke-tests/never-cached is not in the local Hugging Face cache "
        f"({tmp_path / 'hub'}); download it once with `hf download invoke-tests/never-cached`, "
        f"then !import_model invoke-tests/never-cached again"
    )
    assert failed["line 4"].startswith("!import_model: someone/single-file in the local Hugging")
    assert "not a diffusers model (no model_index.json)" in failed["line 4"]
    assert failed["line 5"].startswith(
        "!import_model: someone/name. is not a Hugging Face repo id (owner/name: letters"
    )
    row = next(line for line in printed if line.startswith("  openjourney"))
    assert "not loaded" in row  # found in the cache: usable offline, not "missing"


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        (
            "https://example.com/models/x.safetensors",
            "download the file, then !import_model PATH",
        ),
        (
            "https://huggingface.co/prompthero/openjourney",
            "download the repo with `hf download prompthero/openjourney`, then "
            "!import_model prompthero/openjourney",
        ),
        (
            "https://huggingface.co/owner/name/resolve/main/model.safetensors",
            "download the file, then !import_model PATH",
        ),
    ],
)
def test_import_of_a_url_is_refused_with_what_to_do(
    tmp_path: Path, two_models: Path, url: str, advice: str
) -> None:
    before = two_models.read_text()
    printed: list[str] = []
    status = run_batch(
        new_session(tmp_path / "out"),
        [f"!import_model {url} --yes"],
        out=printed.append,
        err=printed.append,
    )
    assert status == 1
    message = f"line 1: !import_model: {url} is a URL, and invoke never downloads; {advice}"
    assert message in printed
    assert two_models.read_text() == before


# -- models.yaml keeps what the user wrote ---------------------------------------------------------

HAND_WRITTEN = """\
# My models, kept by hand.

# the one I use most
a:  # tiny
  description: first tiny model
  path: {tiny}  # built by the tests
  default: true

b:
  description: a checkpoint
  file: /nowhere/b.safetensors
  width: 512  # its own size
  height: 512

# retired, kept for old prompts
gone:
  description: deleted long ago  # keep this note
  # the file below is my shared copy
  file: /nowhere/x.safetensors
# (end of list)
"""
GONE = """\
# retired, kept for old prompts
gone:
  description: deleted long ago  # keep this note
  # the file below is my shared copy
  file: /nowhere/x.safetensors
"""


def change_by_command(tmp_path: Path, line: str) -> None:
    printed: list[str] = []
    status = run_batch(
        new_session(tmp_path / "out"), [line], out=printed.append, err=printed.append
    )
    assert status == 0, printed


@pytest.mark.parametrize(
    ("line", "old", "new"),
    [
        (
            "!import_model {tmp}/new.safetensors --name new --description 'added' --yes",
            "# (end of list)\n",
            "# (end of list)\n\nnew:\n  description: added\n  file: {tmp}/new.safetensors\n",
        ),
        (
            # the comments inside the entry stay where they are; a new key goes under the last
            "!edit_model gone --description 'back: again' -W 768 --yes",
            "  description: deleted long ago  # keep this note\n"
            "  # the file below is my shared copy\n"
            "  file: /nowhere/x.safetensors\n",
            "  description: 'back: again'  # keep this note\n"
            "  # the file below is my shared copy\n"
            "  file: /nowhere/x.safetensors\n"
            "  width: 768\n",
        ),
        (
            # a key set back to the model's own goes, with the comment on its line only
            "!edit_model b -W auto -H 768 --yes",
            "  width: 512  # its own size\n  height: 512\n",
            "  height: 768\n",
        ),
        ("!del_model gone --yes", GONE, ""),
    ],
    ids=["import", "edit", "edit-size", "delete"],
)
def test_model_commands_change_only_their_entry_and_keep_comments(
    tmp_path: Path, user_config: Path, tiny_model_dir: Path, line: str, old: str, new: str
) -> None:
    (tmp_path / "new.safetensors").write_bytes(b"not read by the import")
    user_config.parent.mkdir(parents=True)
    before = HAND_WRITTEN.format(tiny=tiny_model_dir)
    user_config.write_text(before, encoding="utf-8")
    change_by_command(tmp_path, line.format(tmp=tmp_path))
    assert user_config.read_text() == before.replace(old, new.format(tmp=tmp_path))


def test_first_change_keeps_the_shipped_comments_and_adds_the_header_once(
    tmp_path: Path, user_config: Path
) -> None:
    shipped = SHIPPED_CONFIG.read_text(encoding="utf-8")
    (tmp_path / "m.safetensors").write_bytes(b"not read by the import")
    change_by_command(tmp_path, f"!import_model {tmp_path}/m.safetensors --name m --yes")
    added = (
        f"\nm:\n  description: m, imported from m.safetensors\n  file: {tmp_path}/m.safetensors\n"
    )
    assert user_config.read_text() == WRITTEN_HEADER + shipped + added
    change_by_command(tmp_path, "!edit_model m --description again --yes")
    assert user_config.read_text() == WRITTEN_HEADER + shipped + added.replace(
        "m, imported from m.safetensors", "again"
    )


def test_an_entry_with_an_anchor_keeps_it_and_a_flow_style_list_is_written_whole(
    tmp_path: Path, user_config: Path, tiny_model_dir: Path
) -> None:
    user_config.parent.mkdir(parents=True)
    anchored = f"a:\n  path: &tiny {tiny_model_dir}\n  default: true\nb:\n  path: *tiny\n"
    user_config.write_text(anchored, encoding="utf-8")
    change_by_command(tmp_path, "!edit_model a --description changed --yes")
    assert user_config.read_text() == anchored.replace(
        "  default: true\n", "  default: true\n  description: changed\n"
    )
    # A list in flow style has no lines of its own to keep: it is written again, block style.
    user_config.write_text(
        f"{{a: {{path: {tiny_model_dir}, default: true}},\n b: {{path: {tiny_model_dir}}}}}\n",
        encoding="utf-8",
    )
    change_by_command(tmp_path, "!edit_model a --description changed --yes")
    written = user_config.read_text()
    assert written.startswith(WRITTEN_HEADER) and written.count(WRITTEN_HEADER) == 1
    assert yaml.safe_load(written) == {
        "a": {"path": str(tiny_model_dir), "default": True, "description": "changed"},
        "b": {"path": str(tiny_model_dir)},
    }


@pytest.mark.parametrize(
    ("command", "empty", "files", "listed"),
    [
        (
            "loras",
            "no LoRA files in {}: put .safetensors LoRAs there, or launch with --lora_dir DIR",
            ("inkwash.safetensors", "people/portrait-light.safetensors", "inkline.safetensors"),
            ["inkline", "inkwash", "portrait-light"],
        ),
        (
            "embeddings",
            "no embedding files in {}: put .safetensors embeddings there, or launch with "
            "--embedding_dir DIR",
            ("inkline.safetensors", "old-style.pt", "people/ink-wash/learned_embeds.bin"),
            ["ink-wash", "inkline", "old-style"],
        ),
        (
            "controlnets",
            "no ControlNet files in {}: put ControlNet folders (diffusers format) or "
            ".safetensors files there, or launch with --controlnet_dir DIR",
            (
                "canny/config.json",
                "sd15/depth/config.json",
                "canny/diffusion_pytorch_model.bin",
                "sd15/depth/diffusion_pytorch_model.safetensors",
                "openpose.safetensors",
            ),
            ["canny", "depth", "openpose"],
        ),
        (
            # an adapter's image encoder weights beside it are no adapter
            "ip_adapters",
            "no IP-Adapter files in {}: put IP-Adapter .safetensors files (with their "
            "image_encoder folder beside them) there, or launch with --ip_adapter_dir DIR",
            (
                "sd15/ip-adapter_sd15.safetensors",
                "sd15/ip-adapter-plus_sd15.safetensors",
                "sd15/image_encoder/model.safetensors",
                "sd15/image_encoder/config.json",
                "sdxl/ip-adapter_sdxl.bin",
            ),
            ["ip-adapter-plus_sd15", "ip-adapter_sd15"],
        ),
        (
            # only a folder's own model_index.json names it, not its parts' config.json files
            "upscalers",
            "no upscaler files in {}: put upscaler folders (diffusers format) there, or launch "
            "with --upscaler_dir DIR",
            (
                "sd-x2-latent-upscaler/model_index.json",
                "sd-x2-latent-upscaler/unet/config.json",
                "stabilityai/stable-diffusion-x4-upscaler/model_index.json",
                "stabilityai/stable-diffusion-x4-upscaler/vae/config.json",
            ),
            ["sd-x2-latent-upscaler", "stable-diffusion-x4-upscaler"],
        ),
    ],
)
def test_loras_and_embeddings_list_their_default_folder(
    tmp_path: Path,
    user_config: Path,
    tiny_model_dir: Path,
    command: str,
    empty: str,
    files: tuple[str, ...],
    listed: list[str],
) -> None:
    session = new_session(tmp_path / "out", model=str(tiny_model_dir))  # ships none of its own
    _, printed, _ = shell(session, f"!{command}{ENTER}{CTRL_D}")
    folder = user_config.parent / command  # beside the user's models.yaml
    assert printed == [empty.format(folder)]
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    (folder / "notes.txt").write_text("neither")
    _, printed, _ = shell(session, f"!{command}{ENTER}{CTRL_D}")
    what, _, where = printed[0].partition(" in ")
    assert what.lower().replace("-", "_") == command  # "IP-Adapters" for !ip_adapters
    assert where.startswith(f"{folder} (use as ")
    assert [line.strip() for line in printed[1:]] == listed


def test_lora_and_embedding_names_complete_in_a_prompt(tmp_path: Path, user_config: Path) -> None:
    session = new_session(tmp_path / "out")
    for name in ("loras/inkwash.safetensors", "loras/people/portrait-light.safetensors",
                 "embeddings/inkline.safetensors", "embeddings/old-style.pt",
                 "embeddings/people/ink-wash/learned_embeds.bin"):  # fmt: skip
        (user_config.parent / name).parent.mkdir(parents=True, exist_ok=True)
        (user_config.parent / name).write_bytes(b"")
    completer = ShellCompleter(session)

    def complete(text: str) -> list[str]:
        found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
        return [text[: len(text) + c.start_position] + c.text for c in found]

    assert complete("a cat withLora(ink") == ["a cat withLora(inkwash"]
    assert complete("a cat <lora:por") == ["a cat <lora:portrait-light"]
    assert complete("a cat <ink") == ["a cat <ink-wash>", "a cat <inkline>"]
    assert complete("a (<ol") == ["a (<old-style>"]
    assert complete("a cat [<inkl") == ["a cat [<inkline>"]
    assert complete("a cat <lora:inkl") == []  # a LoRA name there, not an embedding's
    assert complete("a cat ink") == []


def test_controlnet_names_complete_after_the_switch(tmp_path: Path, user_config: Path) -> None:
    session = new_session(tmp_path / "out")
    for name in ("canny", "sd15/depth", "depth-anything"):
        (user_config.parent / "controlnets" / name).mkdir(parents=True)
        (user_config.parent / "controlnets" / name / "config.json").write_text("{}")
    completer = ShellCompleter(session)
    found = completer.get_completions(
        Document("a house --controlnet dep"), CompleteEvent(completion_requested=True)
    )
    assert sorted(c.text for c in found) == ["depth", "depth-anything"]


def test_ip_adapter_names_complete_after_the_switch(tmp_path: Path, user_config: Path) -> None:
    session = new_session(tmp_path / "out")
    for name in ("sd15/ip-adapter_sd15", "sd15/ip-adapter-plus_sd15", "sd15/image_encoder/model"):
        (user_config.parent / "ip_adapters" / f"{name}.safetensors").parent.mkdir(
            parents=True, exist_ok=True
        )
        (user_config.parent / "ip_adapters" / f"{name}.safetensors").write_bytes(b"")
    completer = ShellCompleter(session)
    found = completer.get_completions(
        Document("a house --ip_adapter ip"), CompleteEvent(completion_requested=True)
    )
    assert sorted(c.text for c in found) == ["ip-adapter-plus_sd15", "ip-adapter_sd15"]
    found = completer.get_completions(
        Document("a house --ip_adapter mo"), CompleteEvent(completion_requested=True)
    )
    assert list(found) == []


def test_upscaler_names_complete_after_the_switch(tmp_path: Path, user_config: Path) -> None:
    session = new_session(tmp_path / "out")
    for name in ("x4-photo", "old/x4-anime", "sd-x2-latent-upscaler"):
        (user_config.parent / "upscalers" / name / "unet").mkdir(parents=True)
        (user_config.parent / "upscalers" / name / "model_index.json").write_text("{}")
        (user_config.parent / "upscalers" / name / "unet" / "config.json").write_text("{}")
    completer = ShellCompleter(session)
    found = completer.get_completions(
        Document("a house -U 4 --upscaler x4"), CompleteEvent(completion_requested=True)
    )
    assert sorted(c.text for c in found) == ["x4-anime", "x4-photo"]


def test_lora_dir_at_launch_replaces_the_default_folder(tmp_path: Path, user_config: Path) -> None:
    """The default model's own LoRA (loras/outline.safetensors in its folder) stays offered."""
    from invoke.config.settings import EMBEDDED_MODEL_DIR

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "grain.safetensors").write_bytes(b"")
    session = new_session(tmp_path / "out", lora_dir=tmp_path / "mine")
    own = EMBEDDED_MODEL_DIR / "loras"
    assert session.loras() == ([tmp_path / "mine", own], ["grain", "outline"])
    _, printed, _ = shell(session, f"!loras{ENTER}{CTRL_D}")
    assert printed[0].startswith(f"LoRAs in {tmp_path / 'mine'} and {own} (use as ")


def test_embedding_dir_at_launch_replaces_the_default_folder(
    tmp_path: Path, user_config: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "grain.safetensors").write_bytes(b"")
    session = new_session(tmp_path / "out", embedding_dir=tmp_path / "mine")
    assert session.embeddings() == ([tmp_path / "mine"], ["grain"])


def test_an_embedding_name_with_several_files_takes_the_safetensors_one(tmp_path: Path) -> None:
    from invoke.config.libraries import find_embedding
    from invoke.errors import InvokeError

    assert find_embedding("ink", [tmp_path / "nowhere"], allow_pickle=False) is None
    (tmp_path / "a").mkdir()
    (tmp_path / "ink.pt").write_bytes(b"")
    (tmp_path / "a" / "ink.safetensors").write_bytes(b"")  # converted from the .pt
    assert (
        find_embedding("ink", [tmp_path], allow_pickle=False) == tmp_path / "a" / "ink.safetensors"
    )
    assert find_embedding("in*", [tmp_path], allow_pickle=False) is None  # names are not patterns
    (tmp_path / "ink").mkdir()
    (tmp_path / "ink" / "learned_embeds.safetensors").write_bytes(b"")
    with pytest.raises(InvokeError, match=r"embedding ink: more than one file .*rename all but"):
        find_embedding("ink", [tmp_path], allow_pickle=False)
