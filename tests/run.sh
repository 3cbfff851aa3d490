#!/usr/bin/env bash
# Usage: bash tests/run.sh [pytest args]
# Sets up .venv when missing, then the quality gates: ruff (lint + format check), mypy on the four
# packages, and the whole pytest suite (slow tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/recipes/bootstrap.sh"
cd "$root"
py="$root/.venv/bin/python"
echo "[tests] ruff check"
"$py" -m ruff check .
echo "[tests] ruff format --check"
"$py" -m ruff format --check .
echo "[tests] mypy"
"$py" -m mypy datasets_build sft vla evaluation recipes/*.py
echo "[tests] pytest"
exec "$py" -m pytest "$@"
