"""LIBERO (robosuite / MuJoCo) as an evaluation adapter: a suite's tasks x its fixed initial states.

Protocol (libero_10 = LIBERO-Long): 10 tasks x 50 initial states shipped with the benchmark,
`max_steps` 520, and 10 no-op steps (arm still, gripper open) first, while objects settle, as
the usual LIBERO evaluations do. The policy sees `agentview_image` rotated 180 degrees (MuJoCo
renders it upside down; the LIBERO source rotates training frames the same way). Actions: the 6
arm dims are LIBERO's OSC deltas as stored in its demonstrations (the source keeps them), the
gripper goes back from 1 = open to LIBERO's -1 open / +1 close. Headless rendering uses
`MUJOCO_GL` (egl where an NVIDIA device exists, else osmesa, unless already set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.actions import ARM, GRIPPER, gripper_to_libero
from datasets_build.errors import ConfigError
from evaluation.sims.base import Observation, SimAdapter, StepResult, Trial

# Step limits of the usual LIBERO evaluations (OpenVLA's run_libero_eval), per suite.
MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
SETTLE_STEPS = 10
CAMERA = "agentview_image"


def default_gl_backend() -> str:
    """egl on machines with an NVIDIA device, osmesa (software) elsewhere."""
    return "egl" if Path("/dev/nvidia0").exists() else "osmesa"


def libero_action(action: np.ndarray) -> np.ndarray:
    """Project action (7,) -> LIBERO OSC_POSE command: arm dims as is, gripper 1 open -> -1, 0 closed -> +1."""
    arr = np.asarray(action, dtype=np.float32).reshape(-1)
    out = arr.astype(np.float64).copy()
    out[ARM] = np.clip(arr[ARM], -1.0, 1.0)
    out[GRIPPER] = float(gripper_to_libero(arr[GRIPPER : GRIPPER + 1])[0])
    return out


def upright(image: np.ndarray) -> np.ndarray:
    """MuJoCo's upside-down render -> upright (180-degree rotation), as a contiguous copy."""
    return np.ascontiguousarray(image[::-1, ::-1])


class LiberoSim(SimAdapter):
    """One LIBERO suite; the environment is rebuilt only when the task changes (trials run task-major)."""

    name = "libero"

    def __init__(
        self, suite: str = "libero_10", image_size: int = 224, seed: int = 0, max_steps: int | None = None
    ) -> None:
        os.environ.setdefault("MUJOCO_GL", default_gl_backend())
        from libero.libero import benchmark

        suites = benchmark.get_benchmark_dict()
        if suite not in suites:
            raise ConfigError(f"libero suite {suite!r} unknown; known: {sorted(suites)}")
        self.suite_name = suite
        self.suite = suites[suite]()
        self.image_size = image_size
        self.seed = seed
        self.max_steps = max_steps or MAX_STEPS.get(suite, 520)
        self._env: Any = None
        self._task_id: int | None = None
        self._instruction = ""
        self.raw_steps = 0
        self.last_raw: dict[str, np.ndarray] = {}  # the simulator's own last observation, for inspection

    @property
    def raw_env(self) -> Any:
        """The current task's `OffScreenRenderEnv` (None before the first reset)."""
        return self._env

    def trials(self, per_task: int | None = None) -> list[Trial]:
        """Every task x its first `per_task` (default all 50) fixed initial states."""
        trials = []
        for task_id in range(self.suite.n_tasks):
            name = self.suite.get_task(task_id).name
            count = len(self.suite.get_task_init_states(task_id))
            count = count if per_task is None else min(per_task, count)
            trials += [Trial(name, index, self.seed, {"task_id": task_id}) for index in range(count)]
        return trials

    def _make_env(self, task_id: int) -> None:
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        if self._env is not None:
            self._env.close()
        task = self.suite.get_task(task_id)
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self._env = OffScreenRenderEnv(
            bddl_file_name=str(bddl), camera_heights=self.image_size, camera_widths=self.image_size
        )
        self._task_id = task_id
        self._instruction = str(task.language)

    def reset(self, trial: Trial) -> Observation:
        """Load the trial's fixed initial state, then settle with no-op steps."""
        task_id = int(trial.data["task_id"])
        if task_id != self._task_id:
            self._make_env(task_id)
        self._env.seed(trial.seed)
        self._env.reset()
        obs = self._env.set_init_state(self.suite.get_task_init_states(task_id)[trial.index])
        still = libero_action(np.array([0, 0, 0, 0, 0, 0, 1], dtype=np.float32))
        for _ in range(SETTLE_STEPS):
            obs, _, _, _ = self._env.step(still)
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        """One 20 Hz OSC step; LIBERO reports done exactly when the task's goal predicate holds."""
        obs, _, done, info = self._env.step(libero_action(action))
        self.raw_steps += 1
        return StepResult(self._observation(obs), bool(done), bool(done), dict(info))

    def _observation(self, obs: dict[str, np.ndarray]) -> Observation:
        self.last_raw = obs
        return Observation([upright(obs[CAMERA])], self._instruction)

    def close(self) -> None:
        """Close the MuJoCo environment."""
        if self._env is not None:
            self._env.close()
            self._env = None
            self._task_id = None
