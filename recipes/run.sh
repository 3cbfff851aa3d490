#!/usr/bin/env bash
# Usage: bash recipes/run.sh NAME [VAR=VALUE | STAGE.KEY=VALUE | profile=tiny ...] [--dry-run] [--from STAGE]
#                            [--only STAGE] [--force STAGE] [--verbose]
#   bash recipes/run.sh fast_tokens_unfreeze_vision bridge=/data/bridge_dataset/1.0.0
# Sets up .venv when missing (recipes/bootstrap.sh), then runs recipes/NAME.yaml stage by stage: finished
# stages are cached, interrupted ones resume, training stages launch on every visible GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then
      exec "$root/.venv/bin/python" "$root/recipes/runner.py" --help
    fi
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
  fi
done
bash "$root/recipes/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" "$root/recipes/runner.py" "$@"
