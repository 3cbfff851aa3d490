"""The fault-injection hook's contract (every point named in the code is declared, and each declared one is placed;
a malformed variable is one line), and SFT checkpoints written before the completion marker still resume (the
marked case: tests/reliability/test_safeguards.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from datasets_build import faults
from datasets_build.checkpoint import CARD_FILE, RECIPE_FILE
from datasets_build.errors import ConfigError
from sft.checkpoints import TRAINER_STATE, resume_checkpoint

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("datasets_build", "sft", "vla", "evaluation", "recipes")


def test_every_point_in_the_code_is_declared_and_placed() -> None:
    placed: list[str] = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            placed += re.findall(r"faults\.hit\(\"([\w.]+)\"\)", path.read_text(encoding="utf-8"))
    assert set(placed) == set(faults.POINTS)
    assert len(placed) == len(set(placed))  # one place each: a count N means one thing


def test_a_malformed_fault_is_one_line_naming_the_variable() -> None:
    assert faults.parse("shard.renamed:3") == ("shard.renamed", 3)
    for bad in ("shard.renamed", "shard.renamed:0", "shard.renamed:x", "nowhere:1"):
        with pytest.raises(ConfigError, match=faults.ENV):
            faults.parse(bad)


def test_the_nth_arrival_kills_the_process() -> None:
    code = "from datasets_build import faults\nfor i in range(5):\n    print(i, flush=True)\n    faults.hit('vla.step')"
    env = {**os.environ, "PYTHONPATH": str(ROOT), faults.ENV: "vla.step:3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["0", "1", "2"]
    env[faults.ENV] = "eval.episode:1"  # another point: never reached, the process ends normally
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=False).returncode == 0


def _checkpoint(root: Path, step: int, *files: str) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text("{}")
    return folder


def test_sft_checkpoints_from_before_the_marker_still_resume(tmp_path: Path) -> None:
    old = _checkpoint(tmp_path, 2, "model.safetensors", TRAINER_STATE, CARD_FILE, RECIPE_FILE)
    uncarded = _checkpoint(tmp_path, 4, "model.safetensors", TRAINER_STATE)  # the Trainer's part only: unfinished
    partial = _checkpoint(tmp_path, 6, "model.safetensors")
    assert resume_checkpoint(tmp_path, delete=False) == old  # no marker anywhere: the Trainer's state and the card
    assert uncarded.is_dir()  # a process other than the main one deletes nothing
    assert resume_checkpoint(tmp_path) == old
    assert not uncarded.exists()
    assert not partial.exists()
    assert resume_checkpoint(tmp_path / "none") is None
