"""Where a user's own files live: the platform's config folder (models.yaml, the defaults file,
loras/, embeddings/...). Light to import: `invoke --help` looks for the defaults file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The defaults file: launch options, one a line, applied before the command line's. Named as
# InvokeAI 2.3 named its own (invokeai.init, ~/.invokeai before it), which held the same thing.
DEFAULTS_FILE = "invoke.init"


def _config_base() -> tuple[Path, str | None]:
    """The platform's folder for a user's settings, and the environment variable that chose it
    (None: the platform's convention)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support", None
    variable = "APPDATA" if sys.platform == "win32" else "XDG_CONFIG_HOME"
    if os.environ.get(variable):
        return Path(os.environ[variable]), variable
    if sys.platform == "win32":
        return Path.home() / "AppData" / "Roaming", None
    return Path.home() / ".config", None


def user_config_dir() -> Path:
    """The user's invoke folder: models.yaml, the defaults file, loras/, embeddings/..."""
    return _config_base()[0] / "invoke-dream"


def user_config_origin() -> str | None:
    """The environment variable that placed user_config_dir (None: the platform's default)."""
    return _config_base()[1]


def user_config_path() -> Path:
    """Where a user's own models.yaml lives, by platform convention."""
    return user_config_dir() / "models.yaml"


def defaults_file_path() -> Path:
    """Where the user's defaults file lives: beside their models.yaml."""
    return user_config_dir() / DEFAULTS_FILE
