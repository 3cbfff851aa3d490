"""The demo tabletop simulator: a Franka Panda, coloured blocks and containers on pybullet, with
language-conditioned task families, a scripted expert and a recorder into `Episode`s.

Only assets shipped with pybullet are used, rendering is headless (TinyRenderer), and the same
seed and task always give the same layout, frames and expert actions.
"""

import os as _os
import sys as _sys

if "pybullet" not in _sys.modules:  # pybullet prints its build time on fd 2 at import: keep stderr for errors
    _saved = _os.dup(2)
    _null = _os.open(_os.devnull, _os.O_WRONLY)
    _os.dup2(_null, 2)
    try:
        import pybullet  # noqa: F401
    finally:
        _os.dup2(_saved, 2)
        _os.close(_saved)
        _os.close(_null)

from datasets_build.sim.cameras import CameraFrame, StaticCameraConfig, WristCameraConfig, zbuffer_to_metres
from datasets_build.sim.env import STATE_NAMES, TabletopConfig, TabletopEnv, make_env
from datasets_build.sim.evaluate import ExpertEvalConfig, evaluate_expert, format_table
from datasets_build.sim.expert import DEFAULT_NOISE, ExpertResult, ScriptedExpert, play_expert
from datasets_build.sim.robot import RobotConfig
from datasets_build.sim.rollout import episode_id, expert_episodes, rollout_expert
from datasets_build.sim.scene import (
    BACKGROUND_ID,
    FIRST_OBJECT_ID,
    PALETTE,
    ROBOT_ID,
    TABLE_ID,
    BlockSpec,
    ContainerSpec,
    Layout,
    SceneConfig,
)
from datasets_build.sim.tasks import (
    EVALUATION_SEED_BASE,
    TASK_FAMILIES,
    TaskFamily,
    TaskInstance,
    WorldState,
    get_family,
)

__all__ = [
    "BACKGROUND_ID",
    "DEFAULT_NOISE",
    "EVALUATION_SEED_BASE",
    "FIRST_OBJECT_ID",
    "PALETTE",
    "ROBOT_ID",
    "STATE_NAMES",
    "TABLE_ID",
    "TASK_FAMILIES",
    "BlockSpec",
    "CameraFrame",
    "ContainerSpec",
    "ExpertEvalConfig",
    "ExpertResult",
    "Layout",
    "RobotConfig",
    "SceneConfig",
    "ScriptedExpert",
    "StaticCameraConfig",
    "TabletopConfig",
    "TabletopEnv",
    "TaskFamily",
    "TaskInstance",
    "WorldState",
    "WristCameraConfig",
    "episode_id",
    "evaluate_expert",
    "expert_episodes",
    "format_table",
    "get_family",
    "make_env",
    "play_expert",
    "rollout_expert",
    "zbuffer_to_metres",
]
