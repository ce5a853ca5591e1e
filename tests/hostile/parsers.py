"""Hostile cases: see tests/hostile/__init__.py for what a case is and says."""

from __future__ import annotations

from tests.hostile import Hostile

CASES: tuple[Hostile, ...] = ()
