"""Hypothesis budgets: each property's own `max_examples` in full under HYPOTHESIS_PROFILE=ci
(what CI runs), at most DEV_MAX under the default `dev` profile (a quick local `pytest`).

A test writes `@settings(max_examples=examples(2000), ...)`: an explicit max_examples beats
any profile, so the cap has to be applied where the budget is written.
"""

from __future__ import annotations

import os

from hypothesis import settings

DEV_MAX = 100
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")

# Both start from what hypothesis chose on import (its own "ci" profile where a CI variable is set).
settings.register_profile("ci", settings.default)
settings.register_profile("dev", settings.default, max_examples=DEV_MAX)
settings.load_profile(PROFILE)


def examples(budget: int) -> int:
    """`budget` under the ci profile, at most DEV_MAX under dev."""
    return budget if PROFILE == "ci" else min(budget, DEV_MAX)
