#!/usr/bin/env bash
# Usage: bash recipes/run.sh NAME [key=value ...] [--dry-run] [--stage STAGE]
# Sets up .venv when missing (recipes/bootstrap.sh), then runs recipes/NAME.yaml stage by stage.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/recipes/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" "$root/recipes/runner.py" "$@"
