"""The one interface every simulator adapter implements, and the trial / observation records it speaks.

An adapter owns its simulator's conventions (which camera the policy sees and how it is
oriented, how a project action becomes the simulator's action, gripper sign, episode limits)
and nothing else: the rollout loop, chunking, batching and metrics live in `evaluation.protocol`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasets_build.actions import ACTION_DIM


@dataclass(frozen=True)
class Trial:
    """One evaluation episode: a task, its index among that task's trials, a seed and sim-specific data."""

    task: str
    index: int
    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)  # e.g. a LIBERO init-state id or a CALVIN chain

    @property
    def key(self) -> str:
        """Stable id of the trial in `episodes.jsonl` (task/index)."""
        return f"{self.task}/{self.index:04d}"


@dataclass
class Observation:
    """What a policy may see: uint8 (H, W, 3) images, one per camera the policy uses, and the instruction."""

    images: list[np.ndarray]
    instruction: str


@dataclass
class StepResult:
    """One step's outcome. `done` ends the episode; `success` is the trial's verdict so far."""

    observation: Observation
    done: bool
    success: bool
    info: dict[str, Any] = field(default_factory=dict)


class SimAdapter(ABC):
    """A simulator behind the project's conventions: reset(trial) -> Observation, step(7-D action) -> StepResult.

    `metric` names how episodes are summarised ("success": success rate per task; "chain":
    CALVIN's completed-subtasks-per-chain). Episodes whose instruction changes mid-way (CALVIN
    chains) report `info["new_subtask"] = True` on that step so the runner drops queued actions.
    """

    name: str = "base"
    metric: str = "success"
    action_dim: int = ACTION_DIM
    max_steps: int = 0

    @abstractmethod
    def trials(self, per_task: int | None = None) -> list[Trial]:
        """The protocol's trials in a fixed order (`per_task` caps the trials of each task)."""

    @abstractmethod
    def reset(self, trial: Trial) -> Observation:
        """Start `trial` (after any settle steps) and return the first observation."""

    @abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Apply one float32 (7,) action in the project convention."""

    def result_info(self) -> dict[str, Any]:
        """Extra facts recorded with the finished episode (e.g. CALVIN's completed subtasks)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """What results depend on beyond the run's settings: simulator package versions, sha256 of the task
        files, init states or chains read, and the adapter options in force (recorded in summary.json)."""
        return {}

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the simulator."""
