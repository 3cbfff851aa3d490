#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py): real-size VLA / SFT training and inference on one GPU,
# no downloads, under 8 minutes on an H100 / H200. Writes benchmarks/results/gpu_<device>.json.
#   bash benchmarks/gpu_check.sh              # on a GPU node
#   bash benchmarks/gpu_check.sh --cpu        # dry mode: the same code path on tiny configs, two steps
#   bash benchmarks/gpu_check.sh --help       # options (--models, --batch, --no-engines, --out ...)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then PYTHON="$(command -v python3 || command -v python)"; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case " $* " in *" --cpu "*) export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}" ;; esac  # DeepSpeed: no GPU to detect
exec "$PYTHON" benchmarks/gpu_check.py "$@"
