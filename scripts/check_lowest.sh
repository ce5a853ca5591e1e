#!/usr/bin/env bash
# The lowest versions pyproject.toml allows, installed and checked: a fresh venv with
# constraints/lowest.txt (each dependency pinned at its lower bound), then ruff, the default
# model's first picture (the README's first command, which must match docs/red-circle-on-blue.png
# within one level), and pytest.
#
#   scripts/check_lowest.sh                      # pytest's default run (about 2 minutes)
#   scripts/check_lowest.sh -m 'not gpu'         # CI's selection (adds e2e and slow: +7 minutes)
#
# Arguments go to pytest. The venv is $LOWEST_VENV (default: /tmp/invoke-lowest), made anew;
# the install needs the package registry (the lowest versions are rarely in a local cache).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${LOWEST_VENV:-${TMPDIR:-/tmp}/invoke-lowest}

echo ">> venv $venv with constraints/lowest.txt"
python3 -m venv --clear "$venv"
"$venv/bin/pip" install -q -c constraints/lowest.txt torch -e '.[dev]'
"$venv/bin/pip" check
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
names = ("torch", "diffusers", "transformers", "huggingface_hub", "tokenizers", "numpy", "pillow")
print(">> " + ", ".join(f"{name} {version(name)}" for name in names))
PY

echo ">> $("$venv/bin/ruff" --version)"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .

echo ">> the default model's picture"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if ! (cd "$scratch" && HF_HUB_OFFLINE=1 "$venv/bin/invoke" --outdir o \
    "a red circle on a blue background -s 20 -S 1" 2>err.txt); then
    cat "$scratch/err.txt" >&2
    exit 1
fi
"$venv/bin/python" - "$scratch/o/000001.1.png" docs/red-circle-on-blue.png <<'PY'
import sys

import numpy as np
from PIL import Image

made, shipped = (np.asarray(Image.open(p).convert("RGB"), dtype=int) for p in sys.argv[1:])
worst = int(np.abs(made - shipped).max())
print(f">> {sys.argv[1]} against {sys.argv[2]}: largest difference {worst} levels")
sys.exit(0 if worst <= 1 else f"the default model draws another picture (off by {worst})")
PY

echo ">> pytest $*"
"$venv/bin/python" -m pytest "$@"
