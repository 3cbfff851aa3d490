"""SimplerEnv-Bridge (WidowX) as an evaluation adapter, through `simpler_env` (SAPIEN / ManiSkill2) or ManiSkill3.

Protocol as SimplerEnv's own Bridge evaluation (`maniskill2_evaluator`, scripts `*_bridge.sh`):
four tasks x 24 object episodes (`obj_init_options.episode_id` 0..23), the prepackaged scene,
overlay and robot pose of `simpler_env.make`, 60 control steps (120 for the eggplant-in-basket
sink scene); the episode runs until the time limit and succeeds when the environment reports
success at its last step. The policy sees the `3rd_view_camera` RGB image as rendered.
Action conversion as SimplerEnv's Bridge inference wrappers (e.g. Octo's, `widowx_bridge`):
translation as is, the roll-pitch-yaw delta turned into the controller's axis-angle vector
(static-axes xyz Euler -> rotation vector), gripper binarised to +1 open / -1 close. With
`late_close_gripper=N` (VLM4VLA's Bridge evaluation uses 2) the gripper is commanded open only
after N consecutive open predictions and closed otherwise, from the start of each episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from datasets_build.actions import GRIPPER, ROTATION, TRANSLATION
from datasets_build.errors import ConfigError
from evaluation.sims.base import Observation, SimAdapter, StepResult, Trial
from evaluation.sims.provenance import package_versions, sha256_json

# simpler_env task name -> (ManiSkill3 env id, control steps per episode)
BRIDGE_TASKS: dict[str, tuple[str, int]] = {
    "widowx_carrot_on_plate": ("PutCarrotOnPlateInScene-v1", 60),
    "widowx_put_eggplant_in_basket": ("PutEggplantInBasketScene-v1", 120),
    "widowx_spoon_on_towel": ("PutSpoonOnTableClothInScene-v1", 60),
    "widowx_stack_cube": ("StackGreenCubeOnYellowCubeBakedTexInScene-v1", 60),
}
TRIALS_PER_TASK = 24
CAMERA = "3rd_view_camera"
# The eggplant scene's layouts: SimplerEnv (v0) has 8 grid positions x 3 yaws (0, +45, -45 deg), episode e at
# position e // 3 and yaw e % 3; ManiSkill3 (v1) has the same 8 positions x 8 orientations (its quaternions are
# labelled -45, 0, 45, 90, ..., 270 deg, indices 0..7), position (e % 64) // 8 and orientation e % 8, so its
# episodes 0-23 are positions 0-2 only. v0's yaw k is v1's orientation EGGPLANT_V1_ORIENTATION[k] (by label).
EGGPLANT_TASK = "widowx_put_eggplant_in_basket"
EGGPLANT_V1_ORIENTATION = (1, 2, 0)  # 0 deg, 45 deg, -45 deg
EGGPLANT_V1_ORIENTATIONS = 8


def maniskill_episode_id(task: str, episode: int, layouts: str = "v0") -> int:
    """The ManiSkill3 episode id of SimplerEnv's (v0) layout `episode` (layouts="v0"), or `episode` as is ("v1").

    Only the eggplant scene differs; carrot, spoon and cube stacking keep v0's configurations and order.
    """
    if layouts not in ("v0", "v1"):
        raise ConfigError(f"maniskill: episode_layouts must be 'v0' or 'v1', got {layouts!r}")
    if layouts == "v1" or task != EGGPLANT_TASK:
        return episode
    position, yaw = divmod(episode % TRIALS_PER_TASK, 3)
    return position * EGGPLANT_V1_ORIENTATIONS + EGGPLANT_V1_ORIENTATION[yaw]


def bridge_action(action: np.ndarray) -> np.ndarray:
    """Project action (7,) -> WidowX controller action: xyz, axis-angle (3), gripper +1 open / -1 close."""
    arr = np.asarray(action, dtype=np.float64).reshape(-1)
    rotvec = Rotation.from_euler("xyz", arr[ROTATION]).as_rotvec()
    gripper = 1.0 if arr[GRIPPER] > 0.5 else -1.0
    return np.concatenate([arr[TRANSLATION], rotvec, [gripper]])


def maniskill_action(action: np.ndarray) -> np.ndarray:
    """Project action (7,) -> ManiSkill3 (3.0.1) WidowX action: xyz, the rotation as the intrinsic XYZ Euler angles
    its `PDEEPoseController` reads (`euler_angles_to_matrix(delta, "XYZ")`), gripper +1 open / -1 close.

    The angles are those of the same rotation as the static-axes xyz roll-pitch-yaw delta, so the
    controller applies exactly the rotation `bridge_action` hands SimplerEnv's axis-angle controller.
    """
    arr = np.asarray(action, dtype=np.float64).reshape(-1)
    euler = Rotation.from_euler("xyz", arr[ROTATION]).as_euler("XYZ")
    gripper = 1.0 if arr[GRIPPER] > 0.5 else -1.0
    return np.concatenate([arr[TRANSLATION], euler, [gripper]])


class _BridgeTrials:
    """What both backends share: the tasks, 24 object episodes per task (task-major), one environment per task
    (rebuilt by `make_env(task)` when the task changes), the per-task step limit, the gripper rule and closing."""

    def __init__(self, tasks: list[str] | None, make_env: Any, late_close_gripper: int = 0) -> None:
        if late_close_gripper < 0:
            raise ConfigError(f"simpler: late_close_gripper must be >= 0 (0 = off), got {late_close_gripper}")
        self.tasks = _check_tasks(tasks)
        self.late_close_gripper = late_close_gripper
        self._open_run = 0  # consecutive open predictions so far in this episode
        self._make_env = make_env
        self._env: Any = None
        self._task: str | None = None
        self._instruction = ""
        self._steps = 0
        self.max_steps = max(BRIDGE_TASKS[t][1] for t in self.tasks)
        self._limit = self.max_steps

    def trials(self, per_task: int | None = None) -> list[Trial]:
        """`per_task` (default 24) object episodes of each task."""
        count = TRIALS_PER_TASK if per_task is None else per_task
        return [Trial(task, i, 0, {"episode_id": i}) for task in self.tasks for i in range(count)]

    def _enter(self, trial: Trial) -> None:
        """Build the trial's task environment if another one is open; set its step limit; restart the count."""
        if trial.task != self._task:
            self.close()
            self._env = self._make_env(trial.task)
            self._task = trial.task
        self._limit = BRIDGE_TASKS[trial.task][1]
        self._steps = 0
        self._open_run = 0

    convert = staticmethod(bridge_action)  # project action -> this backend's controller action

    def _command(self, action: np.ndarray) -> np.ndarray:
        """The controller action for a project action, the gripper held closed until `late_close_gripper`
        consecutive open predictions (VLM4VLA's Bridge rule) when that is on."""
        command = self.convert(action)
        if self.late_close_gripper:
            self._open_run = self._open_run + 1 if command[GRIPPER] > 0 else 0
            command[GRIPPER] = 1.0 if self._open_run >= self.late_close_gripper else -1.0
        return command

    def close(self) -> None:
        """Close the simulator environment."""
        if self._env is not None:
            self._env.close()
            self._env = None
            self._task = None


def _check_tasks(tasks: list[str] | None) -> list[str]:
    chosen = list(tasks or BRIDGE_TASKS)
    unknown = [t for t in chosen if t not in BRIDGE_TASKS]
    if unknown:
        raise ConfigError(f"simpler: unknown tasks {unknown}; known: {sorted(BRIDGE_TASKS)}")
    return chosen


class SimplerSim(_BridgeTrials, SimAdapter):
    """SimplerEnv's Bridge tasks via `simpler_env.make` (one environment per task, rebuilt when the task changes).

    `make_env(task_name)` may replace `simpler_env.make` (e.g. to add renderer options).
    """

    name = "simpler"

    def __init__(self, tasks: list[str] | None = None, make_env: Any = None, late_close_gripper: int = 0) -> None:
        if make_env is None:
            import simpler_env

            make_env = simpler_env.make
        super().__init__(tasks, make_env, late_close_gripper)

    def reset(self, trial: Trial) -> Observation:
        """Object episode `trial.data["episode_id"]` of `trial.task` in its prepackaged scene."""
        self._enter(trial)
        obs, _ = self._env.reset(options={"obj_init_options": {"episode_id": int(trial.data["episode_id"])}})
        self._instruction = str(self._env.unwrapped.get_language_instruction())  # wrappers do not forward it
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        """One 5 Hz control step; the episode ends at the time limit, success is the last step's verdict."""
        obs, _, done, truncated, info = self._env.step(self._command(action))
        self._steps += 1
        finished = bool(truncated) or self._steps >= self._limit
        return StepResult(self._observation(obs), finished, bool(done), {"success": bool(info.get("success", done))})

    def _observation(self, obs: dict[str, Any]) -> Observation:
        return Observation([np.asarray(obs["image"][CAMERA]["rgb"], dtype=np.uint8)], self._instruction)

    def provenance(self) -> dict[str, Any]:
        """Package versions and SimplerEnv's environment id and arguments of each task, by sha256."""
        try:
            import simpler_env

            scenes = {t: list(simpler_env.ENVIRONMENT_MAP[t]) for t in self.tasks}
        except (ImportError, AttributeError, KeyError):
            scenes = None
        return {
            "packages": package_versions(["simpler_env", "mani_skill2_real2sim", "sapien", "gymnasium", "numpy"]),
            "tasks": list(self.tasks),
            "environments_sha256": None if scenes is None else sha256_json(scenes),
        }


class ManiSkillBridgeSim(_BridgeTrials, SimAdapter):
    """The same Bridge tasks on ManiSkill3 (`mani_skill`'s `*-v1` GPU-simulated digital twins), one env per task.

    The environment is built with `gym.make(id, obs_mode="rgb+segmentation", num_envs=1, sim_backend=...)`;
    observations are torch tensors with a leading environment axis, which the adapter strips.
    `episode_layouts="v0"` (default) maps trial i to SimplerEnv's i-th layout (see `maniskill_episode_id`);
    "v1" passes ManiSkill3's own episode ids 0-23.
    """

    name = "maniskill"
    convert = staticmethod(maniskill_action)

    def __init__(
        self,
        tasks: list[str] | None = None,
        sim_backend: str = "auto",
        make_env: Any = None,
        late_close_gripper: int = 0,
        episode_layouts: str = "v0",
    ) -> None:
        _check_tasks(tasks)  # unknown tasks fail before mani_skill is imported
        maniskill_episode_id(EGGPLANT_TASK, 0, episode_layouts)  # validates the option
        self.episode_layouts = episode_layouts
        if make_env is None:
            import gymnasium as gym
            import mani_skill.envs  # noqa: F401  (registers the environments)

            def make_env(task: str) -> Any:
                return gym.make(BRIDGE_TASKS[task][0], obs_mode="rgb+segmentation", num_envs=1, sim_backend=sim_backend)

        super().__init__(tasks, make_env, late_close_gripper)

    def reset(self, trial: Trial) -> Observation:
        """Object episode `trial.data["episode_id"]` of `trial.task`."""
        import torch

        self._enter(trial)
        episode = maniskill_episode_id(trial.task, int(trial.data["episode_id"]), self.episode_layouts)
        obs, _ = self._env.reset(seed=trial.seed, options={"episode_id": torch.tensor([episode])})
        instruction = self._env.unwrapped.get_language_instruction()
        self._instruction = str(instruction[0] if isinstance(instruction, (list, tuple)) else instruction)
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        """One control step with a (1, 7) tensor action."""
        import torch

        command = torch.as_tensor(self._command(action), dtype=torch.float32)[None]
        obs, _, _, truncated, info = self._env.step(command)
        self._steps += 1
        success = bool(np.asarray(_numpy(info["success"])).reshape(-1)[0])
        finished = bool(np.asarray(_numpy(truncated)).reshape(-1)[0]) or self._steps >= self._limit
        return StepResult(self._observation(obs), finished, success, {"success": success})

    def _observation(self, obs: dict[str, Any]) -> Observation:
        image = np.asarray(_numpy(obs["sensor_data"][CAMERA]["rgb"]))[0]
        return Observation([image.astype(np.uint8)], self._instruction)

    def provenance(self) -> dict[str, Any]:
        """Package versions and the ManiSkill3 environment ids of the tasks."""
        return {
            "packages": package_versions(["mani-skill", "sapien", "gymnasium", "torch", "numpy"]),
            "tasks": list(self.tasks),
            "environments": {t: BRIDGE_TASKS[t][0] for t in self.tasks},
            "episode_layouts": self.episode_layouts,
        }


def _numpy(value: Any) -> Any:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value
