"""`demo-episodes` and `expert-eval` end to end through the CLI, read back through the demo source."""

import json

import numpy as np
import pytest

from datasets_build.cli import main
from datasets_build.sources import open_source


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "episodes"
    code = main(
        ["demo-episodes", "--out", str(out), "--episodes", "2", "--seed", "3", "--tasks", "pick_block", "stack_blocks"]
    )
    assert code == 0
    return out


def test_recording_reads_back_with_geometry(recorded):
    src = open_source("demo", recorded)
    episodes = list(src.episodes())
    assert [e.task for e in episodes] == ["pick_block", "stack_blocks"]
    for ep in episodes:
        assert ep.success is True
        assert ep.frames["static"].shape[1:] == (224, 224, 3)
        assert ep.geometry() == ["depth", "segmentation", "camera", "objects"]
        assert ep.camera_extrinsics["wrist"].shape == (len(ep), 4, 4)
        # every block named in the instruction is a recorded object, seen in the first static frame
        named = [name for name in ep.objects if name in ep.instruction]
        assert named, ep.instruction
        cam = ep.camera["static"]
        for name in named:
            obj = ep.objects[name]
            uv, z = cam.project(obj.positions[:1])
            u, v = int(uv[0, 0]), int(uv[0, 1])
            window = ep.segmentation["static"][0, v - 2 : v + 3, u - 2 : u + 3]
            assert (window == obj.segmentation_id).any(), name
            # depth at the block's pixel is the distance to its near surface (a few cm in front of its centre)
            assert 0.0 < z[0] - ep.depth["static"][0, v, u] < 0.05
    # the last action of a pick episode still closes the gripper; the first is open
    pick = episodes[0]
    assert pick.actions[0, 6] == 1.0
    assert pick.actions[-1, 6] == 0.0


def test_existing_output_is_refused(recorded, capsys):
    code = main(["demo-episodes", "--out", str(recorded), "--episodes", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ")
    assert "--overwrite" in err
    assert "\n" not in err


def test_unwritable_output_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["demo-episodes", "--out", str(blocker / "eps"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(blocker) in err
    assert "\n" not in err


def test_unknown_task_and_key(tmp_path, capsys):
    assert main(["demo-episodes", "--out", str(tmp_path / "x"), "--tasks", "juggle"]) == 2
    assert "juggle" in capsys.readouterr().err
    assert main(["demo-episodes", "--out", str(tmp_path / "x"), "episodez=3"]) == 2
    assert "episodez: unknown key" in capsys.readouterr().err


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo-episodes", "--help"])
    assert exc.value.code == 0
    assert "--episodes" in capsys.readouterr().out


def test_expert_eval_cli_json(capsys):
    code = main(["expert-eval", "--episodes-per-task", "2", "--tasks", "push_block", "--json", "--min-success", "0.5"])
    results = json.loads(capsys.readouterr().out)
    assert code == 0
    assert results["push_block"]["episodes"] == 2
    assert isinstance(results["push_block"]["successes"], int)  # counts print as 2, not 2.0
    assert results["push_block"]["success_rate"] == pytest.approx(results["push_block"]["successes"] / 2)
    assert np.isfinite(results["push_block"]["mean_steps"])


def test_recordings_and_evaluation_never_share_a_layout_seed(tmp_path, capsys):
    """The demo sim's evaluation trials start at EVALUATION_SEED_BASE by default; recordings must stay below it."""
    from datasets_build.demo_episodes import DemoEpisodesConfig, _plan
    from datasets_build.sim import EVALUATION_SEED_BASE
    from evaluation.sims.demo import DemoSim

    recorded = {(task, seed) for task, seed in _plan(DemoEpisodesConfig(episodes=60))}
    sim = DemoSim(tasks=["gripper_over_block"], max_steps=2, image_size=32)
    try:
        trials = sim.trials(20)
        assert not recorded & {(t.task, t.seed) for t in trials}
        assert min(t.seed for t in trials) == EVALUATION_SEED_BASE
        first = sim.reset(trials[0]).instruction
    finally:
        sim.close()
    assert first  # the evaluation layout builds
    last_allowed = EVALUATION_SEED_BASE - 5
    assert len(_plan(DemoEpisodesConfig(episodes=5, seed=last_allowed))) == 5
    args = ["demo-episodes", "--out", str(tmp_path / "x"), "--episodes", "6", "--seed", str(last_allowed)]
    assert main(args) == 2
    assert "evaluation" in capsys.readouterr().err


def test_key_value_overrides_are_not_swallowed_by_the_tasks_list() -> None:
    """`--tasks a b image_size=112`: the override is the config's, not a task family named "image_size=112"."""
    from datasets_build.cli import build_parser, parse_args

    argv = ["demo-episodes", "--out", "x", "--tasks", "pick_block", "image_size=112", "workers=2"]
    args = parse_args(build_parser(), argv)
    assert args.tasks == ["pick_block"]
    assert args.overrides == ["image_size=112", "workers=2"]
    args = parse_args(build_parser(), ["expert-eval", "--tasks", "seed=3"])
    assert args.tasks is None
    assert args.overrides == ["seed=3"]
