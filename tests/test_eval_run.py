"""Rollouts on the demo sim through the evaluation runner: replay success, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datasets_build.errors import ConfigError, DataError
from evaluation.cli import main
from evaluation.policies import ConstantPolicy, ReplayPolicy, load_policy
from evaluation.protocol import EpisodeRecord, steps_per_chunk, summarize
from evaluation.run import RunConfig, run
from evaluation.sims import make_sim
from evaluation.sims.base import Trial

HOLD = [0, 0, 0, 0, 0, 0, 1]
# Three families, two trials each, short episodes: seed 0 of gripper_over_block is a recorded
# fixture episode (replayed to success); the rest hold still and fail.
SMALL = {"tasks": ["gripper_over_block", "move_next_to", "pick_block"], "seed": 0, "max_steps": 12}


def test_chunk_modes() -> None:
    assert [steps_per_chunk(10, m) for m in ("full", "half", "one")] == [10, 5, 1]
    assert steps_per_chunk(1, "half") == 1
    with pytest.raises(ConfigError):
        steps_per_chunk(4, "quarter")


def test_replay_of_recorded_demo_succeeds_through_adapter(demo_dir: Path, demo_episodes: list, tmp_path: Path) -> None:
    # Every recorded expert episode, replayed into the adapter from its own seed, must succeed again.
    policy = ReplayPolicy.from_episodes(str(demo_dir), chunk_size=4)
    sim = make_sim("demo", max_steps=60)
    try:
        for episode in demo_episodes:
            policy.reset()
            trial = Trial(episode.task, 0, int(episode.meta["seed"]))
            observation = sim.reset(trial)
            assert observation.instruction == episode.instruction
            assert observation.images[0].shape == (224, 224, 3)
            assert observation.images[0].dtype == np.uint8
            np.testing.assert_array_equal(observation.images[0], episode.frames["static"][0])
            done = success = False
            steps = 0
            while not done:
                for action in policy.act(observation.images, observation.instruction):
                    result = sim.step(action)
                    steps += 1
                    observation, done, success = result.observation, result.done, result.success
                    if done:
                        break
            assert success, episode.episode_id
            assert steps == len(episode.actions)
    finally:
        sim.close()


def test_run_writes_episodes_summary_and_video(demo_dir: Path, tmp_path: Path) -> None:
    policy = ReplayPolicy.from_episodes(str(demo_dir), chunk_size=2, default=HOLD)
    cfg = RunConfig(sim="demo", policy="replay", out=str(tmp_path / "r"), trials=1, video=1, sim_options=SMALL)
    summary = run(cfg, policy=policy)
    lines = (tmp_path / "r" / "episodes.jsonl").read_text().splitlines()
    assert len(lines) == 3
    records = {r["key"]: r for r in map(json.loads, lines)}
    assert records["gripper_over_block/0000"]["success"] is True
    assert records["pick_block/0000"]["success"] is False
    assert records["pick_block/0000"]["steps"] == 12  # the episode limit
    assert summary["metrics"]["per_task"]["gripper_over_block"]["success_rate"] == 1.0
    assert summary["metrics"]["success_rate"] == pytest.approx(1 / 3)
    assert summary["complete"] is True
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == summary
    video = tmp_path / "r" / "videos" / "gripper_over_block_0000.mp4"
    assert video.stat().st_size > 1000
    import av

    with av.open(str(video)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == records["gripper_over_block/0000"]["steps"] + 1


_KILLED_RUN = """
import sys
from evaluation.policies import ReplayPolicy
from evaluation.run import RunConfig, run
policy = ReplayPolicy.from_episodes(sys.argv[1], chunk_size=2, default={hold})
cfg = RunConfig(sim="demo", policy="replay", out=sys.argv[2], trials=2, progress=False, sim_options={small})
run(cfg, policy=policy)
"""


def test_resume_after_kill_gives_same_summary(demo_dir: Path, tmp_path: Path) -> None:
    policy = ReplayPolicy.from_episodes(str(demo_dir), chunk_size=2, default=HOLD)
    reference = run(
        RunConfig(sim="demo", policy="replay", out=str(tmp_path / "ref"), trials=2, progress=False, sim_options=SMALL),
        policy=policy,
    )
    out = tmp_path / "killed"
    script = _KILLED_RUN.format(hold=HOLD, small=SMALL)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-c", script, str(demo_dir), str(out)], env=env)
    episodes = out / "episodes.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if episodes.is_file() and len(episodes.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(episodes.read_text().splitlines())
    assert 2 <= finished < 6, "the run was not killed mid-way"
    assert not (out / "summary.json").exists()
    resumed = run(
        RunConfig(sim="demo", policy="replay", out=str(out), trials=2, progress=False, sim_options=SMALL),
        policy=ReplayPolicy.from_episodes(str(demo_dir), chunk_size=2, default=HOLD),
    )
    timing = json.loads((out / "timing.json").read_text())
    assert timing["episodes_run"] == 6 - finished  # finished trials were skipped
    assert resumed == reference
    keys = [json.loads(line)["key"] for line in episodes.read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys))
    assert len(keys) == 6


def test_two_workers_batched_match_one_worker(demo_dir: Path, tmp_path: Path) -> None:
    def go(name: str, workers: int) -> dict:
        policy = ReplayPolicy.from_episodes(str(demo_dir), chunk_size=2, default=HOLD)
        cfg = RunConfig(
            sim="demo",
            policy="replay",
            out=str(tmp_path / name),
            trials=1,
            workers=workers,
            progress=False,
            sim_options=SMALL,
        )
        return run(cfg, policy=policy)["metrics"]

    assert go("two", 2) == go("one", 1)


def test_bad_action_dimension_is_one_line_error(tmp_path: Path) -> None:
    policy = ConstantPolicy(action=[0.0] * 6, chunk_size=2)
    options = {**SMALL, "tasks": ["pick_block"]}
    cfg = RunConfig(sim="demo", policy="six-d", out=str(tmp_path / "r"), trials=1, sim_options=options)
    with pytest.raises(DataError, match="6-D actions but the simulator takes 7-D"):
        run(cfg, policy=policy)


def test_results_of_another_simulator_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"sim": "libero"}))
    code = main(["run", "--sim", "demo", "--policy", "zero", "--out", str(out), "--trials", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0
    assert "holds results of simulator 'libero', not 'demo'" in err


def test_missing_checkpoint_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="no-such-checkpoint"):
        load_policy(str(tmp_path / "no-such-checkpoint"))
    code = main(["run", "--sim", "demo", "--policy", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: policy ")
    assert "\n" not in err


def test_missing_optional_simulator_names_the_extra(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("evaluation.sims")
    try:
        import calvin_env  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("calvin_env is installed here")
    code = main(["run", "--sim", "calvin", "--policy", "zero", "--out", "/nonexistent/never-written"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "calvin_env" in err
    assert "install" in err
    assert "\n" not in err
    assert not Path("/nonexistent/never-written").exists()


def test_chain_metrics() -> None:
    records = [
        EpisodeRecord(f"chain/{i:04d}", "chain", i, 0, "x", c == 5, 10, {"completed": c, "subtasks": list("abcde")})
        for i, c in enumerate([0, 1, 5, 3])
    ]
    metrics = summarize("chain", records)
    assert metrics["avg_len"] == pytest.approx(9 / 4)
    assert metrics["success_rate_after"] == {"1": 0.75, "2": 0.5, "3": 0.5, "4": 0.25, "5": 0.25}
    assert metrics["per_subtask"]["a"] == {"attempts": 4, "successes": 3}
