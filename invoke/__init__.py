"""invoke: the invoke> dream shell for Stable Diffusion models, on diffusers.

Only the version and where the shipped configs are live here: `invoke --help` must not pay for
importing torch.
"""

from pathlib import Path

__version__ = "0.1.0"


def _configs_dir() -> Path:
    """configs/ (models.yaml, model-configs/): inside the package when installed from a wheel
    (pyproject maps it to invoke/configs), beside it in a source checkout or editable install."""
    here = Path(__file__).resolve().parent
    installed = here / "configs"
    return installed if installed.is_dir() else here.parent / "configs"


CONFIGS_DIR = _configs_dir()
