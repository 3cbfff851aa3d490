"""The SLURM examples: valid bash, every command they call takes the flags they pass, and the job-array
scripts run here as SLURM would run them (array tasks as processes with SLURM's variables, then the merge)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "recipes" / "slurm"
SCRIPTS = sorted(p for p in SLURM.iterdir() if p.suffix in (".sbatch", ".sh"))


def _commands(text: str) -> list[tuple[list[str], set[str]]]:
    """(module + sub-command, flags) of each `python -m MODULE SUB` / `recipes/run.sh` call (lines joined)."""
    joined = text.replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        call = re.search(r"-m (datasets_build|evaluation) (\w[\w-]*)(.*)", line)
        if call:
            found.append(([call.group(1), call.group(2)], set(re.findall(r"(--[a-z][\w-]*)", call.group(3)))))
        elif "recipes/run.sh" in line:
            tail = line.split("recipes/run.sh", 1)[1]
            found.append((["run.sh"], set(re.findall(r"(--[a-z][\w-]*)", tail))))
    return found


def test_scripts_are_valid_bash():
    assert {p.name for p in SCRIPTS} >= {
        "train_multinode.sbatch", "build_corpus_array.sbatch", "merge_corpus.sbatch",
        "evaluate_array.sbatch", "merge_eval.sbatch", "build_corpus.sh", "evaluate.sh",
    }  # fmt: skip
    for script in SCRIPTS:
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert out.returncode == 0, (script.name, out.stderr)


def test_every_called_command_takes_its_flags():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen = set()
    for script in SCRIPTS:
        for command, flags in _commands(script.read_text()):
            if command == ["evaluation", "merge"] and not (ROOT / "evaluation" / "merge.py").is_file():
                continue  # `python -m evaluation merge` arrives with issue 16's sharded runs
            if command == ["run.sh"]:
                argv = [sys.executable, str(ROOT / "recipes" / "runner.py"), "--help"]
            else:
                argv = [sys.executable, "-m", *command, "--help"]
            out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
            assert out.returncode == 0, (script.name, command, out.stderr[-500:])
            for flag in flags:
                assert flag in out.stdout, (script.name, command, flag)
            seen.add(tuple(command))
    assert {("datasets_build", "build"), ("datasets_build", "merge"), ("evaluation", "run"), ("run.sh",)} <= seen


def _slurm_env(count: int, index: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHON": sys.executable,
        "VLM4VLA_ROOT": str(ROOT),
        "SLURM_ARRAY_TASK_COUNT": str(count),
        "SLURM_ARRAY_TASK_ID": str(index),
        "SLURM_CPUS_PER_TASK": "1",
    }


@pytest.mark.slow
def test_corpus_job_array_then_merge_equals_one_build(tmp_path, demo_dir):
    """Two array tasks + the merge hold exactly the samples of one unsplit build of the same corpus."""
    out = tmp_path / "robo2vlm"
    args = ["robo2vlm", "demo", str(demo_dir), str(out)]
    for index in (1, 0, 1):  # any order; a finished part is left alone when a task runs again
        task = subprocess.run(
            ["bash", str(SLURM / "build_corpus_array.sbatch"), *args],
            env=_slurm_env(2, index), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert task.returncode == 0, task.stderr[-1500:]
    assert "is complete" in task.stdout
    merged = subprocess.run(
        ["bash", str(SLURM / "merge_corpus.sbatch"), str(out)],
        env=_slurm_env(2, 0), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr[-1500:]
    whole = tmp_path / "whole"
    single = subprocess.run(
        [sys.executable, "-m", "datasets_build", "build", "robo2vlm", "--source", "demo", "--input", str(demo_dir),
         "--out", str(whole)],
        cwd=ROOT, env=_slurm_env(1, 0), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-1500:]
    card, one = (json.loads((p / "dataset_card.json").read_text()) for p in (out, whole))
    assert card["num_samples"] == one["num_samples"] > 0
    assert card["counts_per_task"] == one["counts_per_task"]


@pytest.mark.skipif(not (ROOT / "evaluation" / "merge.py").is_file(), reason="evaluation merge (issue 16)")
def test_evaluation_job_array_then_merge(tmp_path):
    out = tmp_path / "zero"
    extra = ["--trials", "1", "sim_options.tasks=[pick_block,push_block]", "sim_options.max_steps=3"]
    for index in (0, 1):
        task = subprocess.run(
            ["bash", str(SLURM / "evaluate_array.sbatch"), "demo", "zero", str(out), *extra],
            env=_slurm_env(2, index), capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert task.returncode == 0, task.stderr[-1500:]
    merged = subprocess.run(
        ["bash", str(SLURM / "merge_eval.sbatch"), str(out)],
        env=_slurm_env(2, 0), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr[-1500:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["episodes"] == 2
