"""A wheel (`pip install .`, `pip install git+...`) must work like the checkout: the shipped
models.yaml, the single-file model configs and the default model all travel inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # pip builds a wheel; a fresh interpreter imports the package

ROOT = Path(__file__).resolve().parents[1]


def tracked(folder: str) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to know which files are shipped")
    # Build from a copy of the tracked files: a build/ folder left in the checkout by an earlier
    # build would otherwise slip its stale files into the wheel.
    src = tmp_path_factory.mktemp("src")
    for name in tracked("."):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(dist), str(src)],
        check=True, capture_output=True, env={**os.environ, "PIP_NO_INDEX": "1"},
    )  # fmt: skip
    (wheel,) = dist.glob("*.whl")
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def test_wheel_carries_configs_and_default_model(unpacked_wheel: Path) -> None:
    configs = tracked("configs")
    model = tracked("invoke/default_model")
    assert "configs/models.yaml" in configs and len(model) > 5
    missing = [f for f in configs if not (unpacked_wheel / "invoke" / f).is_file()]
    missing += [f for f in model if not (unpacked_wheel / f).is_file()]
    assert missing == []


def test_installed_package_finds_its_own_configs(unpacked_wheel: Path, tmp_path: Path) -> None:
    # Run from elsewhere with only the unpacked wheel on the path: nothing may resolve into the
    # source checkout (which an installed copy does not have).
    probe = (
        "import invoke, invoke.config.models_yaml as y, invoke.config.settings as s\n"
        "import invoke.backend.single_file as f\n"
        "for p in (invoke.CONFIGS_DIR, y.SHIPPED_CONFIG, f.TOKENIZER_FILES,\n"
        "          s.EMBEDDED_MODEL_DIR):\n"
        "    print(p.resolve(), p.exists())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(unpacked_wheel)},
    ).stdout.split("\n")  # fmt: skip
    rows = [line.rsplit(" ", 1) for line in out if line]
    assert len(rows) == 4
    for path, exists in rows:
        assert exists == "True", path
        assert Path(path).is_relative_to(unpacked_wheel.resolve()), path


def test_wheel_ships_no_test_or_training_code(unpacked_wheel: Path) -> None:
    # The tiny random models, their tokenizer and the training world are for tests and scripts/:
    # they live in tests/fixtures and never reach a user's site-packages.
    shipped = [p.relative_to(unpacked_wheel).as_posix() for p in unpacked_wheel.rglob("*")]
    top = {name.split("/", 1)[0] for name in shipped}
    assert {n for n in top if not n.endswith(".dist-info")} == {"invoke"}, top
    test_code = ("testmodel", "testfamilies", "clip_vocab", "world", "tiny_models", "tiny_families")
    stems = {Path(name).stem for name in shipped if name.endswith(".py")}
    assert stems.isdisjoint(test_code), sorted(stems & set(test_code))
    assert not [n for n in shipped if "tests" in n.split("/") or "fixtures" in n.split("/")]
