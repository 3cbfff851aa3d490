"""Scripted expert for every task family: waypoints in TCP space, followed through the env's 7-D actions.

Each step it reads the TCP pose and the object positions, steers towards the current waypoint
with a relative action clipped to the env's limits, adds seeded Gaussian noise (std = `noise`
times the per-step limit, arm dimensions only) and moves on once the waypoint is reached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from datasets_build.actions import make_action
from datasets_build.errors import ConfigError
from datasets_build.sim.env import TabletopEnv
from datasets_build.sim.scene import TABLE_TOP_Z
from datasets_build.sim.tasks import TaskInstance, WorldState

DEFAULT_NOISE = 0.1  # action-noise std as a fraction of the per-step limit
CARRY_HEIGHT = 0.14  # TCP above the table while carrying a block
APPROACH_HEIGHT = 0.08  # above the grasp point before descending


@dataclass(frozen=True)
class Waypoint:
    """A TCP goal: position (or, with `carry`, where the held block's centre should be), yaw, gripper."""

    position: tuple[float, float, float]
    yaw: float
    gripper_open: bool
    tolerance: float = 0.008  # metres
    wait: int = 0  # extra steps to hold once reached (lets the fingers close or open)
    speed: float | None = None  # max translation per step; None = the env's limit
    carry: str = ""  # name of the held block: the goal is for the block, not the TCP
    follow: str = ""  # name of an object: the goal is relative to its current position
    until: Callable[[], bool] | None = None  # reached when this holds (instead of by distance)


def _grasp_yaw(block_quat: np.ndarray) -> float:
    """Gripper yaw that lines the fingers up with the block's faces, the smallest of the four."""
    yaw = float(Rotation.from_quat(block_quat).as_euler("xyz")[2])
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class ScriptedExpert:
    """Closed-loop waypoint follower for one `TabletopEnv` episode; call `reset()` after env.reset."""

    def __init__(self, env: TabletopEnv, noise: float = DEFAULT_NOISE, seed: int = 0) -> None:
        if noise < 0:
            raise ConfigError(f"noise must be >= 0, got {noise}")
        self.env = env
        self.noise = noise
        self.seed = seed
        self._rng = np.random.default_rng([seed, 7])
        self._plan: list[Waypoint] = []
        self._index = 0
        self._dwell = 0
        self._offset: np.ndarray | None = None

    def reset(self) -> None:
        """Plan the waypoints of the env's current task from the current world."""
        self._rng = np.random.default_rng([self.seed, 7])
        task, world = self.env.task, self.env.world_state()
        planner = _PLANNERS.get(task.task)
        if planner is None:
            raise ConfigError(f"no expert for task {task.task!r}")
        self._plan = planner(self.env, task, world)
        self._index = 0
        self._dwell = 0
        self._offset = None

    @property
    def done(self) -> bool:
        """Whether every waypoint has been reached."""
        return self._index >= len(self._plan)

    def act(self) -> np.ndarray:
        """The next action (float32 (7,)), noise included and clipped to the env's limits."""
        if not self._plan:
            self.reset()
        env = self.env
        robot = env.scene.robot
        tcp, quat = robot.tcp_pose()
        waypoint = self._plan[min(self._index, len(self._plan) - 1)]
        goal = np.asarray(waypoint.position, dtype=np.float64)
        if waypoint.follow:
            goal = goal + env.scene.pose(waypoint.follow)[0] * np.array([1.0, 1.0, 0.0])
        if waypoint.carry:
            if self._offset is None:  # frozen once: a block swinging in the grip must not feed back
                self._offset = tcp - env.scene.pose(waypoint.carry)[0]
            goal = goal + self._offset
        error = goal - tcp
        target_rot = Rotation.from_euler("xyz", [np.pi, 0.0, waypoint.yaw])
        rot_error = (target_rot * Rotation.from_quat(quat).inv()).as_euler("xyz")
        if waypoint.until is not None:
            reached = waypoint.until()
        else:
            # Noise makes the TCP jitter by about noise * limit per step: widen the tolerances to match.
            slack = 1.5 * self.noise
            tolerance = waypoint.tolerance + slack * env.config.max_translation
            rot_tolerance = 0.05 + slack * env.config.max_rotation
            reached = bool(np.linalg.norm(error) <= tolerance and np.abs(rot_error).max() <= rot_tolerance)
        if not self.done and reached:
            self._dwell += 1
            if self._dwell > waypoint.wait:
                self._index += 1
                self._dwell = 0
        speed = env.config.max_translation if waypoint.speed is None else waypoint.speed
        translation = error * min(1.0, speed / max(float(np.abs(error).max()), 1e-9))
        rotation = np.clip(rot_error, -env.config.max_rotation, env.config.max_rotation)
        action = make_action(translation, rotation, waypoint.gripper_open)
        if self.noise > 0:
            limits = env.action_high[:6]
            action[:6] += self._rng.normal(0.0, self.noise, size=6).astype(np.float32) * limits
        return env.clip_action(action)


Planner = Callable[[TabletopEnv, TaskInstance, WorldState], list[Waypoint]]


def _pick(env: TabletopEnv, block: str) -> tuple[list[Waypoint], float]:
    position, quat = env.scene.pose(block)
    yaw = _grasp_yaw(quat)
    x, y, z = (float(v) for v in position)
    plan = [
        Waypoint((x, y, z + APPROACH_HEIGHT), yaw, True, tolerance=0.01),
        Waypoint((x, y, z), yaw, True, tolerance=0.006, speed=0.02),
        Waypoint((x, y, z), yaw, False, tolerance=0.01, wait=3),
        Waypoint((x, y, TABLE_TOP_Z + CARRY_HEIGHT), yaw, False, tolerance=0.015),
    ]
    return plan, yaw


def _place(block: str, goal: tuple[float, float, float], yaw: float) -> list[Waypoint]:
    """Carry the held block above `goal` (its centre), lower it there, let go, back off upwards.

    The grasp offset (TCP minus block centre) is measured once the block hangs above the goal.
    """
    x, y, z = goal
    return [
        Waypoint((x, y, TABLE_TOP_Z + CARRY_HEIGHT), yaw, False, tolerance=0.01),
        Waypoint((x, y, TABLE_TOP_Z + CARRY_HEIGHT), yaw, False, tolerance=0.008, carry=block),
        Waypoint((x, y, z + 0.005), yaw, False, tolerance=0.006, speed=0.02, carry=block),
        Waypoint((x, y, z + 0.005), yaw, True, tolerance=0.02, wait=2, carry=block),
        Waypoint((x, y, z + 0.1), yaw, True, tolerance=0.02, carry=block),
    ]


def _plan_pick(env: TabletopEnv, task: TaskInstance, world: WorldState) -> list[Waypoint]:
    plan, yaw = _pick(env, task.target)
    x, y, _ = plan[0].position
    return [*plan, Waypoint((x, y, TABLE_TOP_Z + CARRY_HEIGHT + 0.05), yaw, False, tolerance=0.015)]


def _plan_place(env: TabletopEnv, task: TaskInstance, world: WorldState) -> list[Waypoint]:
    plan, yaw = _pick(env, task.target)
    container = world.positions[task.reference]
    half = world.scene.block_size / 2.0
    floor = world.scene.tray_floor_z if task.reference == "tray" else TABLE_TOP_Z + world.scene.plate_height
    return plan + _place(task.target, (float(container[0]), float(container[1]), floor + half), yaw)


def _plan_stack(env: TabletopEnv, task: TaskInstance, world: WorldState) -> list[Waypoint]:
    plan, yaw = _pick(env, task.target)
    base = world.positions[task.reference]
    size = world.scene.block_size
    return plan + _place(task.target, (float(base[0]), float(base[1]), float(base[2]) + size), yaw)


def _plan_next_to(env: TabletopEnv, task: TaskInstance, world: WorldState) -> list[Waypoint]:
    """Set the block down 1.7 block sizes from the reference, on a side the open fingers can reach
    without landing on the reference (they spread along the gripper's y axis) or on other blocks."""
    plan, yaw = _pick(env, task.target)
    reference = world.positions[task.reference][:2]
    others = [pos[:2] for name, pos in world.positions.items() if name not in (task.target, task.reference)]
    gap = 1.7 * world.scene.block_size
    fingers = np.array([-np.sin(yaw), np.cos(yaw)]) * 0.05  # open fingertips, from the TCP
    best, best_clearance = reference, -np.inf
    for angle in yaw + np.array([0.0, np.pi, 0.3, -0.3, np.pi + 0.3, np.pi - 0.3]):
        spot = reference + gap * np.array([np.cos(angle), np.sin(angle)])
        if not (0.33 <= spot[0] <= 0.67 and abs(spot[1]) <= 0.27):
            continue
        tips = [spot + fingers, spot - fingers]
        clearance = min(float(np.linalg.norm(tip - q)) for q in [reference, *others] for tip in tips)
        clearance = min([clearance] + [float(np.linalg.norm(spot - q)) - 0.02 for q in others])
        if clearance > best_clearance:
            best, best_clearance = spot, clearance
    goal = (float(best[0]), float(best[1]), float(world.positions[task.reference][2]))
    return plan + _place(task.target, goal, yaw)


def _plan_push(env: TabletopEnv, task: TaskInstance, world: WorldState) -> list[Waypoint]:
    """Closed fingers behind the block, then steer at a point just ahead of the block's current
    centre (which keeps the push centred) until it has moved 14 cm."""
    block = world.positions[task.target]
    direction = np.array([*task.direction, 0.0])
    height = TABLE_TOP_Z + 0.02
    start = np.array([block[0], block[1], height]) - 0.08 * direction
    above = start + np.array([0.0, 0.0, APPROACH_HEIGHT])
    ahead = 0.05 * direction + np.array([0.0, 0.0, height])

    def pushed_far_enough() -> bool:
        return float((env.scene.pose(task.target)[0] - block) @ direction) >= 0.14

    return [
        Waypoint(tuple(above), 0.0, False, tolerance=0.015),
        Waypoint(tuple(start), 0.0, False, tolerance=0.008, speed=0.02),
        Waypoint(tuple(ahead), 0.0, False, speed=0.02, follow=task.target, until=pushed_far_enough),
        Waypoint(tuple(start + 0.2 * direction + np.array([0.0, 0.0, 0.1])), 0.0, False, tolerance=0.02),
    ]


def _plan_over(env: TabletopEnv, task: TaskInstance, world: WorldState) -> list[Waypoint]:
    block = world.positions[task.target]
    yaw = _grasp_yaw(env.scene.pose(task.target)[1])
    over = (float(block[0]), float(block[1]), float(block[2]) + world.scene.block_size / 2.0 + 0.06)
    start_open = not task.gripper_open
    return [
        Waypoint(over, yaw, start_open, tolerance=0.008),
        Waypoint(over, yaw, task.gripper_open, tolerance=0.01, wait=6),
    ]


_PLANNERS: dict[str, Planner] = {
    "pick_block": _plan_pick,
    "place_in_container": _plan_place,
    "stack_blocks": _plan_stack,
    "push_block": _plan_push,
    "move_next_to": _plan_next_to,
    "gripper_over_block": _plan_over,
}


@dataclass(frozen=True)
class ExpertResult:
    """Outcome of one expert episode."""

    task: str
    seed: int
    success: bool
    steps: int


def play_expert(env: TabletopEnv, task: str, seed: int, noise: float = DEFAULT_NOISE) -> ExpertResult:
    """Run the expert for one episode of `task` from layout `seed` (no recording)."""
    env.reset(seed=seed, options={"task": task})
    expert = ScriptedExpert(env, noise=noise, seed=seed)
    expert.reset()
    success, steps = False, 0
    while True:
        _, _, terminated, truncated, info = env.step(expert.act())
        steps += 1
        success = bool(info["success"])
        if terminated or truncated:
            return ExpertResult(task, seed, success, steps)
