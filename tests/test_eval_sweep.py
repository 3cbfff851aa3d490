"""Checkpoint x chunk-mode sweeps: every result kept, best-of reported, repeats averaged, report-ready."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datasets_build.errors import ConfigError
from evaluation.policies import ReplayPolicy
from evaluation.report import ReportConfig, collect, report
from evaluation.sweep import SweepConfig, average_metrics, find_checkpoints, sweep
from vla.api import PolicyLike

HOLD = [0, 0, 0, 0, 0, 0, 1]


def test_sweep_keeps_all_and_reports_best(demo_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "train"
    for step in (20, 10):  # created out of order: sorted by step
        (run_dir / f"checkpoint-{step:06d}").mkdir(parents=True)
    (run_dir / "logs").mkdir()
    assert [p.name for p in find_checkpoints(run_dir)] == ["checkpoint-000010", "checkpoint-000020"]

    def load(path: str) -> PolicyLike:
        # the early checkpoint cannot act (holds still); the late one replays the recorded expert
        recordings = {} if path.endswith("000010") else None
        policy = ReplayPolicy.from_episodes(str(demo_dir), chunk_size=4, default=HOLD)
        if recordings is not None:
            policy.recordings = recordings
        return policy

    options = {"tasks": ["gripper_over_block"], "max_steps": 10, "seed": 0}  # the recorded layouts: replayable
    cfg = SweepConfig(sim="demo", run=str(run_dir), chunk_modes=["full", "one"], trials=1, progress=False,
                      sim_options=options)  # fmt: skip
    result = sweep(cfg, load=load)
    out = run_dir / "eval-demo"
    assert len(result["results"]) == 4
    assert {(r["checkpoint"], r["chunk_mode"]) for r in result["results"]} == {
        (c, m) for c in ("checkpoint-000010", "checkpoint-000020") for m in ("full", "one")
    }
    scores = {(r["checkpoint"], r["chunk_mode"]): r["score"] for r in result["results"]}
    assert scores[("checkpoint-000010", "full")] == 0.0
    assert scores[("checkpoint-000020", "full")] == 100.0
    # one step per call: the replay cursor still advances a whole chunk, so 3 of 4 actions are skipped
    assert scores[("checkpoint-000020", "one")] == 0.0
    assert result["best"]["checkpoint"] == "checkpoint-000020"
    assert json.loads((out / "sweep.json").read_text()) == result
    for r in result["results"]:
        assert (out / r["path"] / "summary.json").is_file()
    table = collect([f"mine={out}"])
    assert table["mine"]["demo"].best == 100.0
    assert sorted(table["mine"]["demo"].scores) == [0.0, 0.0, 0.0, 100.0]
    written = report(ReportConfig(results=[f"mine={out}"], out=str(tmp_path / "report")))
    assert (tmp_path / "report" / "checkpoints_boxplot.png") in written


def test_repeats_are_averaged(tmp_path: Path) -> None:
    assert average_metrics([{"a": 1.0, "b": {"c": 2}}, {"a": 3.0, "b": {"c": 4}}]) == {"a": 2.0, "b": {"c": 3.0}}
    (tmp_path / "checkpoint-000001").mkdir()
    cfg = SweepConfig(sim="demo", run=str(tmp_path), chunk_modes=["half"], trials=1, repeats=2, progress=False,
                      sim_options={"tasks": ["pick_block"], "max_steps": 2})  # fmt: skip
    result = sweep(cfg, load=lambda _: ReplayPolicy({}, chunk_size=2, default=HOLD))
    (setting,) = result["results"]
    assert setting["scores"] == [0.0, 0.0]
    folder = tmp_path / "eval-demo" / "checkpoint-000001" / "half"
    assert (folder / "rep-0" / "summary.json").is_file()
    assert (folder / "rep-1" / "summary.json").is_file()
    assert json.loads((folder / "summary.json").read_text())["repeats"] == 2


def test_bad_sweeps(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint-NNNNNN"):
        find_checkpoints(tmp_path)
    with pytest.raises(ConfigError, match="chunk_modes"):
        SweepConfig(chunk_modes=["quarter"])
    (tmp_path / "checkpoint-000001").mkdir()
    (tmp_path / "eval-demo").mkdir()
    (tmp_path / "eval-demo" / "sweep.json").write_text(json.dumps({"sim": "calvin"}))
    with pytest.raises(ConfigError, match="holds a sweep of simulator 'calvin'"):
        sweep(SweepConfig(sim="demo", run=str(tmp_path)), load=lambda _: ReplayPolicy({}))
