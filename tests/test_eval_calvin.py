"""The CALVIN adapter: upstream's initial scenes, action conversion, and the chain loop against calvin_env's API.

calvin_env is not installable in CI; `CalvinApiEnv` below reproduces the four calls the adapter
makes (`reset(robot_obs=, scene_obs=)`, `get_obs()`-shaped observations, `get_info()`, `step`)
with the shapes calvin_env returns, and an oracle with `Tasks.get_task_info_for_set`'s signature.
Where calvin_env is importable, the last test drives the real environment.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evaluation.calvin_sequences import initial_states
from evaluation.cli import main
from evaluation.protocol import EpisodeRecord, summarize
from evaluation.sims.base import Trial
from evaluation.sims.calvin import (
    BLOCK_SLIDER_LEFT,
    BLOCK_SLIDER_RIGHT,
    BLOCK_TABLE,
    BLOCK_YAW_RANGE,
    STEPS_PER_SUBTASK,
    CalvinSim,
    calvin_action,
    condition_seed,
    fnv1_32,
    initial_env_state,
)
from tests.test_eval_calvin_sequences import UPSTREAM_SCENES_SHA256

SUBTASKS = ["open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "stack_block"]
INSTRUCTIONS = {name: f"please {name.replace('_', ' ')}" for name in SUBTASKS}


class CalvinApiEnv:
    """calvin_env's PlayTableSimEnv call shapes: rgb_obs/depth_obs/robot_obs/scene_obs, info with scene_info."""

    def __init__(self) -> None:
        self.steps = 0
        self.actions: list[np.ndarray] = []
        self.reset_args: dict[str, np.ndarray] = {}

    def _obs(self) -> dict[str, Any]:
        image = np.full((200, 200, 3), self.steps % 255, dtype=np.uint8)
        return {
            "rgb_obs": {"rgb_static": image, "rgb_gripper": image[:84, :84]},
            "depth_obs": {},
            "robot_obs": np.zeros(15),
            "scene_obs": np.zeros(24),
        }

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> dict[str, Any]:
        self.steps = 0
        self.reset_args = {"robot_obs": robot_obs, "scene_obs": scene_obs}
        return self._obs()

    def get_info(self) -> dict[str, Any]:
        return {"robot_info": {"step": self.steps}, "scene_info": {"lights": {}, "doors": {}}}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], int, bool, dict[str, Any]]:
        self.actions.append(np.asarray(action))
        self.steps += 1
        return self._obs(), 0, False, self.get_info()


class StepCountOracle:
    """Tasks.get_task_info_for_set's signature; a subtask is done `needs[name]` steps after its start."""

    def __init__(self, needs: dict[str, int]) -> None:
        self.needs = needs

    def get_task_info_for_set(self, start_info: dict, end_info: dict, task_filter: set) -> set:
        elapsed = end_info["robot_info"]["step"] - start_info["robot_info"]["step"]
        return {t for t in task_filter if elapsed >= self.needs.get(t, 10**9)}


def test_fnv1_32_as_pyhash() -> None:
    # values of pyhash2 0.9.4's fnv1_32() (pyhash's own C code): start value 0; a str hashes as UTF-16-LE
    assert fnv1_32(b"") == 0
    assert fnv1_32(b"hello") == 3966594024
    assert fnv1_32("hello".encode("utf-16-le")) == 3823389454
    assert fnv1_32(b"a", 0x811C9DC5) == 0x050C5D7E  # FNV-1 from the offset basis: the published vector


# The first chain's condition and the scene upstream's get_env_state_for_initial_condition gives it
# (mees/calvin@fa03f01 run once outside the project, with pyhash2 0.9.4 as `pyhash`).
UPSTREAM_CONDITION = {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
                      "blue_block": "table", "pink_block": "slider_right", "grasped": 0}  # fmt: skip
UPSTREAM_SEED = 2138410836
UPSTREAM_SCENE = [0.28, 0.22, 0.0, 0.088, 1.0, 1.0, -0.240851662, 0.0924044687, 0.460990009, 0.0, 0.0,
                  1.8859410064104645, 0.229995412, -0.11999514, 0.45999001, 0.0, 0.0, 1.488143437705632,
                  0.070341633, 0.0924044687, 0.460990009, 0.0, 0.0, 1.4683986863194542]  # fmt: skip


def test_initial_scene_is_upstreams() -> None:
    assert condition_seed(UPSTREAM_CONDITION) == UPSTREAM_SEED
    _, scene = initial_env_state(UPSTREAM_CONDITION)
    assert scene.tolist() == UPSTREAM_SCENE  # bit-identical, not just close


def test_condition_seed_matches_pyhash_on_every_condition() -> None:
    pyhash = pytest.importorskip("pyhash", reason="pyhash2 (dev extra) cross-checks the seed hash")
    hasher = pyhash.fnv1_32()
    conditions = initial_states()
    assert len(conditions) == 192
    for condition in conditions:
        assert condition_seed(condition) == hasher(str(condition.values()))


def test_initial_env_state_follows_the_condition() -> None:
    condition = {"led": 1, "lightbulb": 0, "slider": "left", "drawer": "open", "red_block": "slider_right",
                 "blue_block": "table", "pink_block": "table", "grasped": 0}  # fmt: skip
    robot, scene = initial_env_state(condition)
    _robot2, scene2 = initial_env_state(dict(condition))
    np.testing.assert_array_equal(scene, scene2)
    assert robot.shape == (15,)
    assert scene.shape == (24,)
    assert robot[-1] == 1.0
    assert scene[0] == 0.28
    assert scene[1] == 0.22
    assert scene[3] == 0.0
    assert scene[4] == 0
    assert scene[5] == 1
    np.testing.assert_array_equal(scene[6:9], BLOCK_SLIDER_RIGHT)
    table = {tuple(t) for t in BLOCK_TABLE}
    assert {tuple(scene[12:15]), tuple(scene[18:21])} == table  # the two table blocks on the two table spots
    for yaw in scene[[11, 17, 23]]:
        assert BLOCK_YAW_RANGE[0] <= yaw <= BLOCK_YAW_RANGE[1]
    other = {**condition, "blue_block": "slider_left", "red_block": "table"}
    _, scene3 = initial_env_state(other)
    np.testing.assert_array_equal(scene3[12:15], BLOCK_SLIDER_LEFT)
    assert not np.array_equal(scene3[[11, 17, 23]], scene[[11, 17, 23]])  # another condition, another seed


def test_action_conversion() -> None:
    out = calvin_action(np.array([0.5, -2.0, 0, 0.1, 0, 0, 1.0], dtype=np.float32))
    np.testing.assert_allclose(out, [0.5, -1.0, 0, 0.1, 0, 0, 1.0], rtol=1e-6)
    assert calvin_action(np.zeros(7, dtype=np.float32))[6] == -1.0  # closed -> -1


def _rollout(sim: CalvinSim, trial: Trial) -> tuple[EpisodeRecord, list[str]]:
    observation = sim.reset(trial)
    instructions = [observation.instruction]
    steps = 0
    while True:
        result = sim.step(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
        steps += 1
        if result.info.get("new_subtask"):
            instructions.append(result.observation.instruction)
        if result.done:
            break
    info = sim.result_info()
    return EpisodeRecord(
        trial.key, trial.task, trial.index, 0, instructions[0], result.success, steps, info
    ), instructions


def test_chain_loop_against_calvin_api_shape() -> None:
    env = CalvinApiEnv()
    needs = {"open_drawer": 3, "turn_on_led": 5, "move_slider_left": 2}  # the 4th subtask never succeeds
    sim = CalvinSim(env=env, task_oracle=StepCountOracle(needs), instructions=INSTRUCTIONS)
    state = {
        "led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
        "blue_block": "slider_left", "pink_block": "slider_right", "grasped": 0}  # fmt: skip
    trial = Trial("chain", 0, 0, {"initial_state": state, "subtasks": SUBTASKS})
    record, instructions = _rollout(sim, trial)
    np.testing.assert_array_equal(env.reset_args["scene_obs"], initial_env_state(state)[1])
    assert instructions == [INSTRUCTIONS[s] for s in SUBTASKS[:4]]
    assert record.info == {"completed": 3, "subtasks": SUBTASKS}
    assert record.steps == 3 + 5 + 2 + STEPS_PER_SUBTASK
    assert not record.success
    assert all(a[6] == 1.0 for a in env.actions)  # open in the project convention -> +1 for calvin_env

    full = CalvinSim(
        env=CalvinApiEnv(), task_oracle=StepCountOracle(dict.fromkeys(SUBTASKS, 1)), instructions=INSTRUCTIONS
    )
    done, _ = _rollout(full, trial)
    assert done.success
    assert done.info["completed"] == 5
    assert done.steps == 5
    metrics = summarize("chain", [record, done])
    assert metrics["avg_len"] == 4.0
    assert metrics["success_rate_after"]["4"] == 0.5


def test_calvin_env_folder_in_working_directory_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("calvin_env") is not None:
        pytest.skip("calvin_env is installed: this test needs it absent so that the folder is what imports")
    (tmp_path / "calvin_env").mkdir()  # e.g. the git clone itself, beside where the user runs
    annotations = tmp_path / "validation.yaml"
    annotations.write_text("open_drawer: ['open the drawer']\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        code = main(["run", "--sim", "calvin", "--policy", "zero", "--out", str(tmp_path / "r"),
                     f"sim_options.annotations={annotations}"])  # fmt: skip
    finally:
        sys.modules.pop("calvin_env", None)  # the empty folder imported as a namespace package: forget it
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "calvin_env/ folder in the working directory shadows it" in err[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_real_calvin_env() -> None:
    pytest.importorskip("calvin_env", reason="calvin_env is an optional extra (install from its git repository)")
    annotations = os.environ.get("CALVIN_ANNOTATIONS")
    if not annotations and not os.environ.get("CALVIN_ROOT"):
        pytest.skip("set CALVIN_ROOT (calvin checkout) or CALVIN_ANNOTATIONS for the validation instructions")
    sim = CalvinSim(annotations=annotations, dataset_path=os.environ.get("CALVIN_DATASET"))
    try:
        state = {"led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
                 "blue_block": "slider_left", "pink_block": "slider_right", "grasped": 0}  # fmt: skip
        chain = ["open_drawer", "turn_on_led", "move_slider_left", "lift_red_block_table", "stack_block"]
        observation = sim.reset(Trial("chain", 0, 0, {"initial_state": state, "subtasks": chain}))
        assert observation.images[0].shape == (200, 200, 3)
        assert observation.images[0].dtype == np.uint8
        np.testing.assert_allclose(sim.env.get_obs()["scene_obs"][6:9], initial_env_state(state)[1][6:9], atol=0.01)
        for _ in range(3):
            result = sim.step(np.array([0, 0, 0.5, 0, 0, 0, 1.0], dtype=np.float32))
        assert not result.done
        assert not result.info["new_subtask"]
        # open the drawer by hand: calvin_env's oracle must credit "open_drawer" and move to the next subtask
        opened = sim.env.get_obs()["scene_obs"].copy()
        opened[1] = 0.22
        sim.env.scene.reset(opened)
        result = sim.step(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
        assert result.info["new_subtask"]
        assert result.observation.instruction == sim.instructions["turn_on_led"]
        assert sim.result_info()["completed"] == 1
    finally:
        sim.close()


@pytest.mark.slow
def test_real_calvin_env_run_ends_without_traceback(tmp_path: Path) -> None:
    pytest.importorskip("calvin_env", reason="calvin_env is an optional extra (install from its git repository)")
    if not os.environ.get("CALVIN_ROOT"):
        pytest.skip("set CALVIN_ROOT (calvin checkout) for the validation instructions")
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "evaluation", "run", "--sim", "calvin", "--policy", "zero", "--out", str(out),
         "--trials", "1", "sim_options.steps_per_subtask=2"],
        capture_output=True, text=True, env=env, check=False, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    simulator = summary["simulator"]
    assert simulator["initial_scenes_sha256"] == UPSTREAM_SCENES_SHA256
    assert simulator["packages"]["pybullet"]
    assert len(simulator["scene_config_sha256"]) == 64
