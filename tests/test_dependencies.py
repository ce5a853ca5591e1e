"""The dependency bounds are true: pyproject.toml's lower bounds are the versions that
scripts/check_lowest.sh installs and tests (constraints/lowest.txt), and the default model
refuses a transformers that would load it wrong rather than draw noise."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from invoke import model_cache
from invoke.__main__ import cli

ROOT = Path(__file__).resolve().parents[1]


def lower_bounds() -> dict[str, Version]:
    """pyproject.toml's `>=` bound of each dependency, the dev extra's included."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    bounds = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(line)
        (low,) = [s.version for s in requirement.specifier if s.operator == ">="]
        bounds[canonicalize_name(requirement.name)] = Version(low)
    return bounds


def lowest_pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints" / "lowest.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (pin,) = requirement.specifier
            assert pin.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(pin.version)
    return pins


def test_the_lowest_pins_are_pyprojects_lower_bounds() -> None:
    """Raise a bound without its pin (or the reverse) and check_lowest.sh tests something else
    than what pyproject.toml promises."""
    bounds, pins = lower_bounds(), lowest_pins()
    assert pins.keys() == bounds.keys()
    # torch is the exception: only 2.13.0 (CPU) is at hand; pyproject's bound is transformers'.
    assert {name for name in bounds if pins[name] != bounds[name]} == {"torch"}
    assert pins["torch"] >= bounds["torch"]


def test_pyproject_allows_no_transformers_the_default_model_refuses() -> None:
    needs = Version(".".join(map(str, model_cache.EMBEDDED_NEEDS_TRANSFORMERS)))
    assert lower_bounds()["transformers"] >= needs


@pytest.mark.parametrize("old", ["4.57.6", "5.5.4"])
def test_a_transformers_too_old_for_the_default_model_is_one_line_and_no_picture(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, old: str
) -> None:
    """With transformers < 5.6 the default model's text encoder would come up random and draw
    noise without an error: it is refused before loading, naming the version it needs."""
    monkeypatch.setattr(model_cache, "transformers_version", lambda: old)
    result = CliRunner().invoke(cli, ["a red circle -s 2 -S 1"], catch_exceptions=False)
    said = result.stdout + result.stderr
    assert result.exit_code == 1
    assert (
        f"the default model needs transformers 5.6 or newer (this is {old}); "
        f"pip install -U 'transformers>=5.6'"
    ) in said.splitlines()
    assert "Traceback" not in said
    assert not list(isolated.rglob("*.png"))


@pytest.mark.parametrize("new", ["5.6.0", "5.13.0.dev0", "6.0"])
def test_a_new_enough_transformers_passes_the_default_models_check(
    monkeypatch: pytest.MonkeyPatch, new: str
) -> None:
    monkeypatch.setattr(model_cache, "transformers_version", lambda: new)
    model_cache.check_embedded_transformers()
