#!/usr/bin/env bash
# Issue 6's GPU check as one command for the device tool, whose budget (15 minutes a session,
# the machine's start included) leaves room for one run and a rerun. The device machine has
# torch (CUDA), transformers, safetensors, huggingface-hub, click, pyyaml, tqdm and pytest; it
# lacks diffusers, prompt_toolkit and their small needs, which travel as wheels in .whl/.
#
#   bash scripts/gpu_check.sh --fetch-wheels     # here, once: downloads them into .whl/
#   # then, with the device tool: command "bash scripts/gpu_check.sh", carry [".whl"],
#   # timeout_s 600. Logs come back as gpu-tests.log and bench.log (also in output_tail).
#
# Each part has its own time limit, so a hang in one cannot spend the budget of the other: the
# GPU-marked tests (fp16 tolerance of the fast path, CUDA graphs, LoRA after capture, ControlNet),
# then scripts/bench.py on SD 1.5's architecture (random weights, built on the machine).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(diffusers==0.42.1 importlib_metadata==10.2.0 prompt_toolkit==3.0.53 wcwidth==0.9.4)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "${WHEELS[@]}"
fi

out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', \
diffusers.__version__, torch.cuda.get_device_name())" || exit 1

timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee "$out/gpu-tests.log"
echo "gpu tests: exit ${PIPESTATUS[0]}"
timeout 360 python3 scripts/bench.py --runs 3 2>&1 | tee "$out/bench.log"
echo "bench: exit ${PIPESTATUS[0]}"
