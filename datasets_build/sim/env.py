"""`TabletopEnv`: the demo tabletop sim as a gymnasium environment driven by the project's 7-D actions.

Action (float32 (7,), `datasets_build.actions`): xyz translation delta (m) and roll-pitch-yaw delta
(rad) of the TCP in the world frame, the new orientation being R_delta(euler xyz) @ R_current, and
the gripper absolute (>= 0.5 open, < 0.5 closed). Deltas are clipped to the per-step limits of
`TabletopConfig`; targets are reached by IK and joint position control at `control_hz`.

Observation dict: `state` float32 (8,) = TCP xyz (m), TCP roll-pitch-yaw (rad, euler xyz as
pybullet returns it; with the gripper pointing down roll sits near +-pi and may wrap), gripper
opening width (m, 0 closed .. 0.08 open), last gripper command (1 open, 0 closed; the width alone
cannot tell a hand closing on a block from one opening); with `render=True` also
`rgb_static`/`rgb_wrist` uint8 (H, W, 3), `depth_static`/`depth_wrist` float32 (H, W) metres along
the camera z axis, `seg_static`/`seg_wrist` int32 (H, W) stable ids (`datasets_build.sim.scene`).

Reset: `env.reset(seed=3, options={"task": "stack_blocks"})`, or the shorter
`env.reset(seed=3, task="stack_blocks")` / `env.reset(3, "stack_blocks")`. With no task, the last
one is kept (initially `TabletopConfig.task`). Same seed and task -> identical layout, frames and,
for the same actions, identical trajectories (the world is rebuilt on every reset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
from gymnasium import spaces
from scipy.spatial.transform import Rotation

from datasets_build.actions import ACTION_DIM, GRIPPER, ROTATION, TRANSLATION
from datasets_build.camera import CameraModel
from datasets_build.episode import ObjectInfo
from datasets_build.errors import ConfigError, DataError
from datasets_build.sim.cameras import CameraFrame, StaticCamera, StaticCameraConfig, WristCamera, WristCameraConfig
from datasets_build.sim.robot import RobotConfig
from datasets_build.sim.scene import TABLE_TOP_Z, Scene, SceneConfig, build_scene
from datasets_build.sim.tasks import TaskContext, TaskInstance, WorldState, get_family

STATE_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "gripper_width", "gripper_command")
CAMERAS: tuple[str, ...] = ("static", "wrist")
_STATE_LOW = np.array([-2.0, -2.0, 0.0, -np.pi, -np.pi, -np.pi, 0.0, 0.0], dtype=np.float32)
_STATE_HIGH = np.array([2.0, 2.0, 2.0, np.pi, np.pi, np.pi, 0.1, 1.0], dtype=np.float32)


@dataclass(frozen=True)
class TabletopConfig:
    """Settings of the demo sim. Sizes in pixels, limits per control step, lengths in metres."""

    task: str = "pick_block"  # used when reset names no task
    image_size: int = 224  # static camera, square
    wrist_size: int = 128  # wrist camera, square (see WristCameraConfig for why 128)
    render: bool = True  # False: observations hold only `state` (fast, for expert statistics)
    cameras: tuple[str, ...] = CAMERAS  # the cameras rendered (an evaluation that shows the policy one renders one)
    control_hz: int = 10
    physics_hz: int = 240
    max_steps: int = 100  # truncation
    max_translation: float = 0.03  # |dx|, |dy|, |dz| per step
    max_rotation: float = 0.15  # |droll|, |dpitch|, |dyaw| per step
    workspace_low: tuple[float, float, float] = (0.2, -0.4, TABLE_TOP_Z + 0.01)  # TCP target bounds
    workspace_high: tuple[float, float, float] = (0.8, 0.4, TABLE_TOP_Z + 0.45)
    anchor_tolerance: float = 0.005  # see TabletopEnv.step
    terminate_on_success: bool = True
    scene: SceneConfig = field(default_factory=SceneConfig)
    robot: RobotConfig = field(default_factory=RobotConfig)

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.physics_hz % self.control_hz:
            raise ConfigError(f"physics_hz ({self.physics_hz}) must be a multiple of control_hz ({self.control_hz})")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown or not self.cameras:
            raise ConfigError(f"cameras must name some of {list(CAMERAS)}, got {list(self.cameras)}")
        if min(self.image_size, self.wrist_size, self.max_steps) <= 0:
            raise ConfigError("image_size, wrist_size and max_steps must be positive")
        get_family(self.task)

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return self.physics_hz // self.control_hz


class TabletopEnv(gym.Env[dict[str, Any], np.ndarray]):
    """Franka Panda, coloured blocks and containers on a table; language tasks with success oracles."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012 (gymnasium's API)

    def __init__(self, config: TabletopConfig | None = None, render_mode: str | None = None) -> None:
        self.config = config or TabletopConfig()
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.control_hz}
        cfg = self.config
        self._client = p.connect(p.DIRECT)
        self._static = StaticCamera(StaticCameraConfig(width=cfg.image_size, height=cfg.image_size))
        self._wrist = WristCamera(WristCameraConfig(width=cfg.wrist_size, height=cfg.wrist_size))
        right = self._static.image_right()
        self._context = TaskContext(scene=cfg.scene, image_right=(float(right[0]), float(right[1])))
        limits = np.array([cfg.max_translation] * 3 + [cfg.max_rotation] * 3 + [1.0], dtype=np.float32)
        low = -limits
        low[GRIPPER] = 0.0
        self.action_low, self.action_high = low, limits
        self.action_space = spaces.Box(low=low, high=limits, dtype=np.float32)
        self.observation_space = spaces.Dict(self._observation_spaces())
        self._task_name = cfg.task
        self._scene: Scene | None = None
        self._task: TaskInstance | None = None
        self._initial: dict[str, np.ndarray] = {}
        self._target: tuple[np.ndarray, np.ndarray] | None = None
        self._steps = 0
        self._gripper_open = True
        self._frames: dict[str, CameraFrame] = {}
        self.timings: dict[str, float] = {"physics_s": 0.0, "render_s": 0.0}  # of the last reset/step

    def _observation_spaces(self) -> dict[str, spaces.Space[Any]]:
        cfg = self.config
        far = max(StaticCameraConfig().far, WristCameraConfig().far)
        obs: dict[str, spaces.Space[Any]] = {
            "state": spaces.Box(_STATE_LOW, _STATE_HIGH, dtype=np.float32),
        }
        if cfg.render:
            for name, size in (("static", cfg.image_size), ("wrist", cfg.wrist_size)):
                if name not in cfg.cameras:
                    continue
                obs[f"rgb_{name}"] = spaces.Box(0, 255, shape=(size, size, 3), dtype=np.uint8)
                obs[f"depth_{name}"] = spaces.Box(0.0, far, shape=(size, size), dtype=np.float32)
                obs[f"seg_{name}"] = spaces.Box(0, 255, shape=(size, size), dtype=np.int32)
        return obs

    # ----------------------------------------------------------------------------------- gym API
    def reset(
        self, seed: int | None = None, task: str | None = None, *, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Rebuild the world for `task` (or options["task"]) with a layout drawn from `seed`."""
        super().reset(seed=seed)
        option_task = (options or {}).get("task")
        if task is not None and option_task is not None and task != option_task:
            raise ConfigError(f"reset got task={task!r} and options['task']={option_task!r}")
        name = task or option_task or self._task_name
        family = get_family(name)
        self._task_name = name
        self._task = family.sample(self.np_random, self._context)
        started = time.perf_counter()
        self._scene = build_scene(self._client, self._task.layout, self.config.scene, self.config.robot)
        p.setTimeStep(1.0 / self.config.physics_hz, physicsClientId=self._client)
        for _ in range(self.config.substeps):  # let the blocks settle before the first frame
            p.stepSimulation(physicsClientId=self._client)
        self._target = None
        self._steps = 0
        self._gripper_open = self._task.layout.gripper_open
        self._initial = self._scene.positions()
        self.timings = {"physics_s": time.perf_counter() - started, "render_s": 0.0}
        obs = self._observe()
        return obs, self._info(self._success())

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply one 7-D relative action for 1/control_hz seconds.

        The delta is applied to the current TCP pose. While the arm tracks its previous target
        (within `anchor_tolerance` metres and ten times that in radians) that target stands in for
        the measured pose, so that the controller's sub-millimetre lag does not accumulate into a
        drift under repeated small or zero actions.
        """
        scene = self._require_scene()
        action = self.clip_action(action)
        started = time.perf_counter()
        robot = scene.robot
        position, orientation = robot.tcp_pose()
        base_pos, base_rot = position, Rotation.from_quat(orientation)
        if self._target is not None:
            target_pos, target_quat = self._target
            target_rot = Rotation.from_quat(target_quat)
            tol = self.config.anchor_tolerance
            if np.linalg.norm(target_pos - position) <= tol and (target_rot * base_rot.inv()).magnitude() <= 10 * tol:
                base_pos, base_rot = target_pos, target_rot
        new_pos = np.clip(base_pos + action[TRANSLATION], self.config.workspace_low, self.config.workspace_high)
        new_quat = (Rotation.from_euler("xyz", action[ROTATION]) * base_rot).as_quat()
        robot.command_arm(robot.solve_ik(new_pos, new_quat))
        self._gripper_open = bool(action[GRIPPER] >= 0.5)
        robot.command_gripper(self._gripper_open)
        for _ in range(self.config.substeps):
            p.stepSimulation(physicsClientId=self._client)
        self._target = (new_pos, new_quat)
        self._steps += 1
        self.timings = {"physics_s": time.perf_counter() - started, "render_s": 0.0}
        obs = self._observe()
        success = self._success()
        terminated = success and self.config.terminate_on_success
        truncated = self._steps >= self.config.max_steps and not terminated
        return obs, float(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        """The static camera's RGB image (render_mode "rgb_array"), rendered now if needed."""
        if self.render_mode != "rgb_array":
            return None
        if "static" in self._frames:
            return self._frames["static"].rgb
        return self._static.render(self._require_scene()).rgb

    def close(self) -> None:
        """Disconnect from pybullet."""
        if self._client >= 0 and p.isConnected(self._client):
            p.disconnect(self._client)
        self._client = -1

    # ----------------------------------------------------------------------------- accessors
    @property
    def task(self) -> TaskInstance:
        """The current task instance (instruction, layout, named objects)."""
        if self._task is None:
            raise ConfigError("call reset() first")
        return self._task

    @property
    def scene(self) -> Scene:
        """The current pybullet scene (robot, objects)."""
        return self._require_scene()

    @property
    def steps(self) -> int:
        """Control steps taken since the last reset."""
        return self._steps

    def clip_action(self, action: np.ndarray) -> np.ndarray:
        """The action as float32 (7,) within the per-step limits (gripper kept as sent, clipped to [0, 1])."""
        arr = np.asarray(action, dtype=np.float32).reshape(-1)
        if arr.shape != (ACTION_DIM,) or not np.isfinite(arr).all():
            raise DataError(f"expected 7 finite values, got {arr!r}", "TabletopEnv.step", "action")
        return np.clip(arr, self.action_low, self.action_high)

    def cameras(self) -> dict[str, CameraModel]:
        """Camera models for the current step (the wrist camera moves with the hand)."""
        return {"static": self._static.model, "wrist": self._wrist.model(self._require_scene())}

    def objects(self) -> dict[str, ObjectInfo]:
        """Current pose, size, segmentation id and category of every object."""
        return self._require_scene().object_infos()

    def state(self) -> np.ndarray:
        """float32 (8,): TCP xyz, TCP roll-pitch-yaw, gripper width, last gripper command (see STATE_NAMES)."""
        robot = self._require_scene().robot
        position, orientation = robot.tcp_pose()
        rpy = p.getEulerFromQuaternion(orientation.tolist())
        command = 1.0 if self._gripper_open else 0.0
        return np.array([*position, *rpy, robot.gripper_width(), command], dtype=np.float32)

    def world_state(self) -> WorldState:
        """The snapshot the success oracles judge."""
        scene = self._require_scene()
        names = list(scene.objects)
        return WorldState(
            positions=scene.positions(),
            initial_positions=self._initial,
            in_fingers=frozenset(n for n in names if scene.touching_robot(n, fingers_only=True)),
            touching_robot=frozenset(n for n in names if scene.touching_robot(n)),
            tcp_position=scene.robot.tcp_pose()[0],
            gripper_width=scene.robot.gripper_width(),
            scene=scene.config,
        )

    def frames(self) -> dict[str, CameraFrame]:
        """The frames rendered for the latest observation (empty with render=False)."""
        return dict(self._frames)

    # ------------------------------------------------------------------------------ internals
    def _require_scene(self) -> Scene:
        if self._scene is None:
            raise ConfigError("call reset() first")
        return self._scene

    def _success(self) -> bool:
        return get_family(self.task.task).success(self.task, self.world_state())

    def _observe(self) -> dict[str, np.ndarray]:
        obs = {"state": self.state()}
        self._frames = {}
        if self.config.render:
            started = time.perf_counter()
            scene = self._require_scene()
            cameras: dict[str, StaticCamera | WristCamera] = {"static": self._static, "wrist": self._wrist}
            self._frames = {name: cameras[name].render(scene) for name in self.config.cameras}
            self.timings["render_s"] = time.perf_counter() - started
            for name, frame in self._frames.items():
                obs[f"rgb_{name}"] = frame.rgb
                obs[f"depth_{name}"] = frame.depth
                obs[f"seg_{name}"] = frame.segmentation
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        scene = self._require_scene()
        return {
            "success": bool(success),
            "instruction": self.task.instruction,
            "task": self.task.task,
            "object_positions": scene.positions(),
        }


def make_env(config: TabletopConfig | None = None, **overrides: Any) -> TabletopEnv:
    """A TabletopEnv from a config with some fields replaced (`make_env(render=False)`)."""
    return TabletopEnv(replace(config or TabletopConfig(), **overrides))
