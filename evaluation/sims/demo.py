"""The demo tabletop sim (`datasets_build.sim`) as an evaluation adapter: every task family, N seeded trials each.

The policy sees the static camera, upright as recorded; actions are already in the project
convention, so the adapter only bounds the episode (`max_steps`, success ends it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from datasets_build.sim import EVALUATION_SEED_BASE, TASK_FAMILIES, TabletopConfig, TabletopEnv, get_family
from evaluation.sims.base import Observation, SimAdapter, StepResult, Trial
from evaluation.sims.provenance import package_versions

DEFAULT_TRIALS = 10


class DemoSim(SimAdapter):
    """`TabletopEnv` with trial i of a task family on layout seed `seed + i`. The default `seed` is the start of the
    evaluation's seed range (`EVALUATION_SEED_BASE`), which recordings never use: no trial replays a training
    layout unless `seed` is set to one."""

    name = "demo"

    def __init__(
        self,
        tasks: Sequence[str] | None = None,
        seed: int = EVALUATION_SEED_BASE,
        max_steps: int = 100,
        image_size: int = 224,
        camera: str = "static",
    ) -> None:
        self.tasks = list(tasks or TASK_FAMILIES)
        for task in self.tasks:
            get_family(task)
        if camera not in ("static", "wrist"):
            raise ValueError(f"camera must be 'static' or 'wrist', got {camera!r}")
        self.seed = seed
        self.camera = camera
        self.max_steps = max_steps
        self.env = TabletopEnv(TabletopConfig(max_steps=max_steps, image_size=image_size, cameras=(camera,)))
        self._instruction = ""

    def trials(self, per_task: int | None = None) -> list[Trial]:
        """`per_task` (default 10) seeded layouts per task family."""
        count = DEFAULT_TRIALS if per_task is None else per_task
        return [Trial(task, i, self.seed + i) for task in self.tasks for i in range(count)]

    def reset(self, trial: Trial) -> Observation:
        """Rebuild the scene of `trial.task` from layout `trial.seed`."""
        obs, info = self.env.reset(seed=trial.seed, options={"task": trial.task})
        self._instruction = str(info["instruction"])
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        """One control step (10 Hz) with the 7-D action as is."""
        obs, _, terminated, truncated, info = self.env.step(np.asarray(action, dtype=np.float32))
        return StepResult(self._observation(obs), bool(terminated or truncated), bool(info["success"]))

    def _observation(self, obs: dict[str, np.ndarray]) -> Observation:
        return Observation([obs[f"rgb_{self.camera}"]], self._instruction)

    def provenance(self) -> dict[str, Any]:
        """The demo sim is the project's own code: its version and pybullet's."""
        return {"packages": package_versions(["vlm4vla-toolkit", "pybullet"])}

    def close(self) -> None:
        """Disconnect pybullet."""
        self.env.close()
