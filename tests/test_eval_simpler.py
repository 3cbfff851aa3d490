"""SimplerEnv-Bridge adapters: SimplerEnv's Bridge action conversion and the episode loop against its API shape.

SimplerEnv cannot render here (SAPIEN needs a newer Vulkan driver; the Bridge assets come from a
hub). `SimplerApiEnv` reproduces the calls the adapter makes on a `simpler_env.make(...)` env, and
is built the way `simpler_env.make` builds one: `gymnasium.make` of a registered id, so the adapter
talks to the real wrapper chain (TimeLimit -> OrderEnforcing -> PassiveEnvChecker -> env), which
does not forward env methods such as `get_language_instruction()` (only `env.unwrapped` has them).
The real run is a test that needs simpler_env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from scipy.spatial.transform import Rotation

from datasets_build.errors import ConfigError
from evaluation.policies import ConstantPolicy
from evaluation.sims.simpler import (
    BRIDGE_TASKS,
    TRIALS_PER_TASK,
    SimplerSim,
    bridge_action,
    maniskill_action,
    maniskill_episode_id,
)

FAKE_ID = "SimplerApiFake-v0"
IMAGE_SHAPE = (480, 640, 3)


class SimplerApiEnv(gym.Env[dict[str, Any], np.ndarray]):
    """A ManiSkill2-real2sim env's call shapes; success once the commanded z sum passes a threshold."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.height = 0.0
        self.reset_options: dict[str, Any] = {}
        self.actions: list[np.ndarray] = []
        self.closed = False
        rgb = spaces.Box(0, 255, IMAGE_SHAPE, dtype=np.uint8)
        self.observation_space = spaces.Dict(
            {
                "image": spaces.Dict({"3rd_view_camera": spaces.Dict({"rgb": rgb})}),
                "agent": spaces.Dict({"qpos": spaces.Box(-np.inf, np.inf, (8,), dtype=np.float32)}),
            }
        )
        self.action_space = spaces.Box(-np.inf, np.inf, (7,), dtype=np.float64)

    def _obs(self) -> dict[str, Any]:
        rgb = np.zeros(IMAGE_SHAPE, dtype=np.uint8)
        return {"image": {"3rd_view_camera": {"rgb": rgb}}, "agent": {"qpos": np.zeros(8, dtype=np.float32)}}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self.height, self.reset_options = 0.0, options or {}
        return self._obs(), {}

    def get_language_instruction(self) -> str:
        return f"do {self.task}"

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        self.actions.append(np.asarray(action))
        self.height += float(action[2])
        done = self.height > 0.05
        return self._obs(), float(done), done, False, {"success": done}

    def close(self) -> None:
        self.closed = True


if FAKE_ID not in gym.registry:
    gym.register(FAKE_ID, entry_point=SimplerApiEnv)


def make_simpler_like(task: str) -> gym.Env[Any, Any]:
    """As `simpler_env.make(task)` does: `gymnasium.make` with the task's episode limit."""
    return gym.make(FAKE_ID, max_episode_steps=BRIDGE_TASKS[task][1], task=task)


def test_bridge_action_conversion() -> None:
    rpy = np.array([0.1, -0.2, 0.3])
    out = bridge_action(np.array([0.01, 0.02, 0.03, *rpy, 1.0], dtype=np.float32))
    assert out.shape == (7,)
    np.testing.assert_allclose(out[:3], [0.01, 0.02, 0.03], rtol=1e-6)
    # the axis-angle vector is the same rotation as static-axes xyz Euler angles (transforms3d 'sxyz')
    np.testing.assert_allclose(Rotation.from_rotvec(out[3:6]).as_euler("xyz"), rpy, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bridge_action(np.array([0, 0, 0, 0, 0, 0.4, 0.0]))[3:], [0, 0, 0.4, -1.0], atol=1e-9)
    assert bridge_action(np.array([0, 0, 0, 0, 0, 0, 1.0]))[6] == 1.0


def test_episode_loop_against_simpler_api_shape() -> None:
    made: list[SimplerApiEnv] = []

    def make(task: str) -> gym.Env[Any, Any]:
        env = make_simpler_like(task)
        assert not hasattr(env, "get_language_instruction")  # the wrapper chain hides it, as in gymnasium >= 1.0
        made.append(env.unwrapped)  # type: ignore[arg-type]
        return env

    sim = SimplerSim(make_env=make)
    trials = sim.trials()
    assert len(trials) == 4 * TRIALS_PER_TASK
    assert sim.max_steps == 120
    lift = ConstantPolicy(action=[0, 0, 0.02, 0, 0, 0, 1], chunk_size=1)
    for trial, expected_steps in ((trials[0], 60), (trials[1], 60), (trials[TRIALS_PER_TASK], 120)):
        observation = sim.reset(trial)
        assert observation.instruction == f"do {trial.task}"
        assert observation.images[0].shape == (480, 640, 3)
        steps = 0
        while True:
            result = sim.step(lift.act(observation.images, observation.instruction)[0])
            steps += 1
            if result.done:
                break
        assert steps == expected_steps  # runs to the time limit, not to the first success
        assert result.success
        assert made[-1].reset_options == {"obj_init_options": {"episode_id": trial.index}}
    assert len(made) == 2  # one environment per task, rebuilt on task change
    assert made[0].closed
    np.testing.assert_allclose(made[-1].actions[0], [0, 0, 0.02, 0, 0, 0, 1.0], atol=1e-7)
    sim.close()


@pytest.mark.slow
def test_real_simpler_env() -> None:
    pytest.importorskip("simpler_env", reason="simpler_env is an optional extra (SimplerEnv's repository)")
    sim = SimplerSim(tasks=["widowx_carrot_on_plate"])
    try:
        observation = sim.reset(sim.trials(per_task=1)[0])
        assert observation.images[0].dtype == np.uint8
        result = sim.step(np.array([0, 0, 0, 0, 0, 0, 1.0], dtype=np.float32))
        assert not result.done
    finally:
        sim.close()


def test_late_close_gripper_opens_after_consecutive_open_predictions() -> None:
    made: list[SimplerApiEnv] = []

    def make(task: str) -> gym.Env[Any, Any]:
        env = make_simpler_like(task)
        made.append(env.unwrapped)  # type: ignore[arg-type]
        return env

    predictions = [1, 1, 1, 0, 1, 0, 1, 1]  # 1 = open in the project convention
    late = SimplerSim(make_env=make, late_close_gripper=2)
    trial = late.trials(per_task=1)[0]
    for _ in range(2):  # the count restarts with every episode
        late.reset(trial)
        made[-1].actions.clear()
        for grip in predictions:
            late.step(np.array([0, 0, 0, 0, 0, 0, grip], dtype=np.float32))
        assert [float(a[6]) for a in made[-1].actions] == [-1, 1, 1, -1, -1, -1, -1, 1]
    late.close()
    plain = SimplerSim(make_env=make)  # 0 = off: every prediction as is
    plain.reset(trial)
    for grip in predictions:
        plain.step(np.array([0, 0, 0, 0, 0, 0, grip], dtype=np.float32))
    assert [float(a[6]) for a in made[-1].actions] == [1, 1, 1, -1, 1, -1, 1, 1]
    plain.close()
    with pytest.raises(ConfigError, match="late_close_gripper"):
        SimplerSim(make_env=make, late_close_gripper=-1)


def test_maniskill_action_is_the_same_rotation_as_intrinsic_xyz_euler() -> None:
    rpy = np.array([0.3, -0.2, 0.5])
    out = maniskill_action(np.array([0.01, 0.02, 0.03, *rpy, 0.0]))
    np.testing.assert_allclose(out[:3], [0.01, 0.02, 0.03])
    assert out[6] == -1.0
    want = Rotation.from_euler("xyz", rpy).as_matrix()  # the static-axes roll-pitch-yaw delta
    np.testing.assert_allclose(Rotation.from_euler("XYZ", out[3:6]).as_matrix(), want, atol=1e-12)


def test_maniskill_episode_ids_give_simpler_v0_layouts() -> None:
    ids = [maniskill_episode_id("widowx_put_eggplant_in_basket", e) for e in range(TRIALS_PER_TASK)]
    assert len(set(ids)) == TRIALS_PER_TASK
    # ManiSkill3 picks position (id % 64) // 8 and orientation id % 8; v0 episode e is position e // 3, yaw e % 3
    assert [(i % 64) // 8 for i in ids] == [e // 3 for e in range(TRIALS_PER_TASK)]
    assert [i % 8 for i in ids[:3]] == [1, 2, 0]  # orientations labelled 0, 45 and -45 deg
    assert [maniskill_episode_id("widowx_put_eggplant_in_basket", e, "v1") for e in range(3)] == [0, 1, 2]
    for task in ("widowx_carrot_on_plate", "widowx_spoon_on_towel", "widowx_stack_cube"):  # same configs as v0
        assert [maniskill_episode_id(task, e) for e in range(TRIALS_PER_TASK)] == list(range(TRIALS_PER_TASK))
    with pytest.raises(ConfigError, match="episode_layouts"):
        maniskill_episode_id("widowx_carrot_on_plate", 0, "v2")


@pytest.mark.slow
def test_real_mani_skill_bridge_envs_as_far_as_no_assets_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """ManiSkill3's own Bridge classes, built up to the point where they would load assets."""
    pytest.importorskip("mani_skill", reason="mani-skill (ManiSkill3) is an optional extra")
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the environments)
    from mani_skill.envs.tasks.digital_twins.bridge_dataset_eval import base_env
    from mani_skill.utils.registration import REGISTERED_ENVS

    captured: dict[str, Any] = {}

    def capture(self: Any, obj_names: list[str], xyz_configs: Any, quat_configs: Any, **kwargs: Any) -> None:
        captured.update(obj_names=obj_names, xyz=np.asarray(xyz_configs), quat=np.asarray(quat_configs))
        raise RuntimeError("stop before loading assets")

    monkeypatch.setattr(base_env.BaseBridgeEnv, "__init__", capture)
    layouts = {}
    for task, (env_id, steps) in BRIDGE_TASKS.items():
        assert gym.spec(env_id).max_episode_steps == steps
        assert REGISTERED_ENVS[env_id].asset_download_ids == ["bridge_v2_real2sim"]  # from a hub: not here
        with pytest.raises(RuntimeError, match="stop before loading assets"):
            REGISTERED_ENVS[env_id].cls(obs_mode="rgb+segmentation")
        layouts[task] = dict(captured)
        xyz, quat = layouts[task]["xyz"], layouts[task]["quat"]
        count = len(xyz) * len(quat)
        assert count >= TRIALS_PER_TASK
        for episode in range(TRIALS_PER_TASK):
            mine = maniskill_episode_id(task, episode)
            position, orientation = (mine % count) // len(quat), mine % len(quat)  # ManiSkill3's own rule
            assert 0 <= position < len(xyz)
            assert 0 <= orientation < len(quat)
    eggplant = layouts["widowx_put_eggplant_in_basket"]
    assert eggplant["xyz"].shape[0] == 8
    assert eggplant["quat"].shape[0] == 8  # v0 has 3: ids 0-23 would be 3 positions x 8 orientations
    positions = {
        tuple(np.round(eggplant["xyz"][(maniskill_episode_id("widowx_put_eggplant_in_basket", e) % 64) // 8, 0], 4))
        for e in range(TRIALS_PER_TASK)
    }
    assert len(positions) == 8  # the mapped episodes visit every grid position, as v0's 0-23 do
    # the WidowX controller reads the rotation delta with mani_skill's own euler_angles_to_matrix(..., "XYZ")
    import torch
    from mani_skill.utils.geometry.rotation_conversions import euler_angles_to_matrix

    rpy = np.array([0.05, -0.08, 0.1])
    command = maniskill_action(np.array([0, 0, 0, *rpy, 1.0]))
    applied = euler_angles_to_matrix(torch.tensor(command[3:6])[None], "XYZ")[0].numpy()
    np.testing.assert_allclose(applied, Rotation.from_euler("xyz", rpy).as_matrix(), atol=1e-9)
