"""Sharded evaluation runs: shards merge into the unsharded result, bad sets are refused, one --out is locked.

Also: tables never take a shard for a result, unfinished runs are refused or marked, and a
policy's own `eval_sim_options` become adapter defaults under the explicit ones.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datasets_build.errors import ConfigError
from datasets_build.locking import output_lock
from evaluation.cli import main
from evaluation.merge import MergeConfig, merge
from evaluation.policies import ConstantPolicy, ReplayPolicy
from evaluation.run import RunConfig, run

HOLD = [0, 0, 0, 0, 0, 0, 1]
SMALL = {"tasks": ["gripper_over_block", "move_next_to", "pick_block"], "seed": 0, "max_steps": 12}
ROOT = Path(__file__).resolve().parents[1]


def _run(demo_dir: Path, out: Path, **kwargs: Any) -> dict[str, Any]:
    options = {"sim": "demo", "policy": "replay", "trials": 2, "progress": False, "sim_options": SMALL, **kwargs}
    policy = ReplayPolicy.from_episodes(str(demo_dir), chunk_size=2, default=HOLD)
    return run(RunConfig(out=str(out), **options), policy=policy)


@pytest.fixture(scope="module")
def sharded(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[Path]]:
    """An unsharded reference run and the same evaluation as three shard runs (6 trials: 2 per shard)."""
    root = tmp_path_factory.mktemp("shards")
    reference = _run(demo_dir, root / "whole")
    shards = [root / f"shard{i}" for i in range(3)]
    for index, out in enumerate(shards):
        summary = _run(demo_dir, out, num_shards=3, shard_index=index)
        assert summary["complete"]
        assert summary["episodes_expected"] == 2
        assert summary["trials_total"] == 6
    return root, reference, shards


def test_shards_merge_into_the_unsharded_result(sharded: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    root, reference, shards = sharded
    out = root / "merged"
    assert main(["merge", *map(str, reversed(shards)), "--out", str(out)]) == 0
    assert "3 shards, 6 episodes" in capsys.readouterr().out
    merged = json.loads((out / "summary.json").read_text())
    assert merged["merged_from"] == [str(s) for s in shards]
    assert {k: v for k, v in merged.items() if k != "merged_from"} == reference
    whole = sorted((root / "whole" / "episodes.jsonl").read_text().splitlines())
    lines = (out / "episodes.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["key"] for x in lines) == sorted(json.loads(x)["key"] for x in whole)
    assert json.loads((out / "run.json").read_text())["num_shards"] == 1
    assert sorted(json.loads((out / "timing.json").read_text())["shards"]) == ["0", "1", "2"]
    # merging again into the same folder is allowed (same evaluation); the merged run is a whole result
    assert merge(MergeConfig(shards=[str(s) for s in shards], out=str(out)))["metrics"] == reference["metrics"]
    assert main(["report", str(out), "--out", str(root / "report")]) == 0


def test_bad_shard_sets_are_refused(sharded: tuple, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, shards = sharded
    bad = root / "bad"
    unfinished = root / "unfinished"
    shutil.copytree(shards[1], unfinished)
    (unfinished / "summary.json").unlink()  # as a killed job leaves it
    torn = root / "torn"
    shutil.copytree(shards[1], torn)
    lines = (torn / "episodes.jsonl").read_text().splitlines()
    (torn / "episodes.jsonl").write_text(lines[0] + "\n")
    other = root / "other-mode"
    _run(demo_dir, other, num_shards=3, shard_index=2, chunk_mode="one")
    cases = {
        "missing shard(s) [2] of 3": [shards[0], shards[1]],
        "given twice": [shards[0], shards[0], shards[1], shards[2]],
        "incomplete shard: no summary.json": [shards[0], unfinished, shards[2]],
        "incomplete shard: 1 of 2 episodes": [shards[0], torn, shards[2]],
        "not a shard of the same evaluation": [shards[0], shards[1], other],
        "(differs in chunk_mode)": [shards[0], shards[1], other],
        "not a shard run (num_shards is 1)": [root / "whole"],
    }
    for message, paths in cases.items():
        code = main(["merge", *map(str, paths), "--out", str(bad)])
        err = capsys.readouterr().err.strip()
        assert code == 2, message
        assert message in err
        assert "\n" not in err
        assert not bad.exists()
    assert main(["merge", *map(str, shards), "--out", str(shards[0])]) == 2
    assert "is one of the shards" in capsys.readouterr().err


def test_tables_refuse_shards_and_unfinished_runs(sharded: tuple, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, shards = sharded
    for target in (shards[1], root):  # a shard itself, or a folder that holds shard runs
        code = main(["report", str(target), "--out", str(root / "never")])
        err = capsys.readouterr().err
        assert code == 2
        assert "shard" in err
        assert "python -m evaluation merge" in err
    assert not (root / "never").exists()
    unfinished = root / "half-done"
    shutil.copytree(root / "whole", unfinished)
    summary = json.loads((unfinished / "summary.json").read_text())
    summary["complete"] = False
    (unfinished / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(unfinished), "--out", str(root / "never")]) == 2
    assert "incomplete run" in capsys.readouterr().err
    assert main(["report", f"late={unfinished}", "--out", str(root / "marked"), "--allow-incomplete"]) == 0
    table = (root / "marked" / "table.md").read_text()
    assert "| late | " in table
    assert "*" in table.splitlines()[2]
    assert "unfinished run" in table


_HOLDER = """
import sys, time
from datasets_build.locking import output_lock
with output_lock(sys.argv[1], "evaluation run"):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_run_on_one_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    args = ["run", "--sim", "demo", "--policy", "zero", "--out", str(out), "--trials", "1", "sim_options.max_steps=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert f"locked by evaluation run (pid {holder.pid}" in err
        assert "\n" not in err
        assert not (out / "episodes.jsonl").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock
        holder.wait()
    assert main(args) == 0
    with output_lock(out, "test"), pytest.raises(ConfigError, match="locked by test"):  # also within one process
        run(RunConfig(sim="demo", policy="zero", out=str(out), trials=1), policy=ConstantPolicy())


class _PresetPolicy(ConstantPolicy):
    """A policy whose metadata asks for demo-sim options, as a paper preset's checkpoint does for LIBERO."""

    def __init__(self) -> None:
        super().__init__()
        options = {"demo": {"max_steps": 3, "camera": "wrist"}, "libero": {"center_crop": 0.9}}
        self.metadata = {"eval_sim_options": options}


def test_policy_eval_sim_options_are_defaults(tmp_path: Path) -> None:
    cfg = RunConfig(sim="demo", policy="preset", out=str(tmp_path / "r"), trials=1, progress=False,
                    sim_options={"tasks": ["pick_block"], "max_steps": 5})  # fmt: skip
    summary = run(cfg, policy=_PresetPolicy())
    assert summary["sim_options"] == {"tasks": ["pick_block"], "max_steps": 5, "camera": "wrist"}  # explicit wins
    assert summary["sim_options_from_policy"] == ["camera"]
    (record,) = [json.loads(x) for x in (tmp_path / "r" / "episodes.jsonl").read_text().splitlines()]
    assert record["steps"] == 5
    assert json.loads((tmp_path / "r" / "run.json").read_text())["sim_options"]["camera"] == "wrist"
    assert summary["simulator"]["packages"]["pybullet"]


def test_merge_eval_recipe_stage(sharded: tuple, tmp_path: Path) -> None:
    from recipes.runner import STAGE_KINDS, plan_recipe

    _, reference, shards = sharded
    recipe = tmp_path / "merge.yaml"
    names = ", ".join(str(s) for s in shards)
    recipe.write_text(f"stages:\n  merged:\n    uses: merge_eval\n    shards: [{names}]\n    out: {tmp_path / 'm'}\n")
    (stage,) = plan_recipe(recipe, [])
    assert isinstance(stage.config, MergeConfig)
    spec = STAGE_KINDS[stage.kind]
    assert spec.run_function()(stage.config)["metrics"] == reference["metrics"]
