"""Language-conditioned task families of the demo sim: instruction templates, seeded layouts, success oracles.

A family samples a `TaskInstance` (instruction + `Layout` + the objects it names) from a numpy
Generator, and judges a `WorldState` snapshot with its oracle. Oracles are pure functions of the
snapshot, so they can be tested without a simulator. Register new families in `TASK_FAMILIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from datasets_build.errors import ConfigError
from datasets_build.sim.scene import HOME_TCP, PALETTE, TABLE_TOP_Z, BlockSpec, ContainerSpec, Layout, SceneConfig

WORKSPACE_X = (0.36, 0.64)  # where blocks may start (metres, world frame; the robot base is at x=0)
WORKSPACE_Y = (-0.22, 0.22)
MIN_BLOCK_GAP = 0.09  # centre distance between any two blocks at the start
# Layout seeds are split: recordings (`demo-episodes`) draw theirs below this number, the evaluation adapter
# (`evaluation.sims.demo`) from it on by default, so a policy is never scored on a layout it was trained on.
EVALUATION_SEED_BASE = 1_000_000


@dataclass(frozen=True)
class TaskContext:
    """What a sampler needs to know about the scene: object sizes and which way is "right" in the image."""

    scene: SceneConfig = field(default_factory=SceneConfig)
    image_right: tuple[float, float] = (0.0, 1.0)  # unit xy direction that moves right in the static image


@dataclass(frozen=True)
class TaskInstance:
    """One sampled task: what to say, what to build, and the objects and goal the oracle checks."""

    task: str
    instruction: str
    layout: Layout
    target: str  # the object acted on, e.g. "red block"
    reference: str = ""  # the second object named, e.g. "blue block" or "tray"
    direction: tuple[float, float] = (0.0, 0.0)  # push direction, world xy unit vector
    gripper_open: bool = True  # gripper_over_block: the gripper state asked for


@dataclass(frozen=True)
class WorldState:
    """A snapshot of the world for the oracles (positions in world metres)."""

    positions: dict[str, np.ndarray]
    initial_positions: dict[str, np.ndarray]
    in_fingers: frozenset[str]  # objects touching a finger
    touching_robot: frozenset[str]  # objects touching any robot link
    tcp_position: np.ndarray
    gripper_width: float
    scene: SceneConfig


class TaskFamily(ABC):
    """A task family: its id, instruction templates, layout sampler and success oracle."""

    name: str = ""
    templates: tuple[str, ...] = ()

    @abstractmethod
    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        """A random instance (layout and instruction) drawn from `rng`."""

    @abstractmethod
    def success(self, task: TaskInstance, world: WorldState) -> bool:
        """Whether `world` satisfies the instruction of `task`."""

    def _say(self, rng: np.random.Generator, **names: str) -> str:
        template = self.templates[int(rng.integers(len(self.templates)))]
        return template.format(**names)


def _choose_colors(rng: np.random.Generator, count: int) -> list[str]:
    colors = sorted(PALETTE)
    order = rng.permutation(len(colors))[:count]
    return [colors[i] for i in order]


def _sample_positions(
    rng: np.random.Generator,
    count: int,
    keep_out: Sequence[tuple[np.ndarray, float]] = (),
    x_range: tuple[float, float] = WORKSPACE_X,
    y_range: tuple[float, float] = WORKSPACE_Y,
    fixed: Sequence[np.ndarray] = (),
) -> list[np.ndarray]:
    """`count` xy points in the ranges, MIN_BLOCK_GAP apart (and from `fixed`), outside the `keep_out` discs."""
    for _ in range(200):
        points: list[np.ndarray] = list(fixed)
        for _ in range(count):
            for _ in range(100):
                xy = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
                if all(np.linalg.norm(xy - q) >= MIN_BLOCK_GAP for q in points) and all(
                    np.linalg.norm(xy - c) >= r for c, r in keep_out
                ):
                    points.append(xy)
                    break
            else:
                break
        if len(points) == len(fixed) + count:
            return points[len(fixed) :]
    raise ConfigError(f"could not place {count} blocks; workspace too crowded")


def _blocks(rng: np.random.Generator, colors: Sequence[str], points: Sequence[np.ndarray]) -> tuple[BlockSpec, ...]:
    return tuple(
        BlockSpec(color, (float(xy[0]), float(xy[1])), float(rng.uniform(-np.pi / 4, np.pi / 4)))
        for color, xy in zip(colors, points, strict=True)
    )


def _home(rng: np.random.Generator) -> tuple[float, float, float]:
    jitter = rng.uniform(-1.0, 1.0, size=3) * np.array([0.03, 0.05, 0.02])
    return (HOME_TCP[0] + float(jitter[0]), HOME_TCP[1] + float(jitter[1]), HOME_TCP[2] + float(jitter[2]))


def _horizontal(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a)[:2] - np.asarray(b)[:2]))


def _on_table(position: np.ndarray, scene: SceneConfig) -> bool:
    return bool(position[2] < TABLE_TOP_Z + 0.75 * scene.block_size)


class PickBlock(TaskFamily):
    """Lift the named block at least 5 cm off the table, held in the fingers."""

    name = "pick_block"
    templates = ("pick up the {target}", "lift the {target}", "grab the {target} and lift it")
    lift = 0.05

    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        colors = _choose_colors(rng, int(rng.integers(2, 5)))
        layout = Layout(_blocks(rng, colors, _sample_positions(rng, len(colors))), tcp_start=_home(rng))
        target = layout.blocks[0].name
        return TaskInstance(self.name, self._say(rng, target=target), layout, target)

    def success(self, task: TaskInstance, world: WorldState) -> bool:
        height = world.positions[task.target][2] - (TABLE_TOP_Z + world.scene.block_size / 2.0)
        return bool(height >= self.lift and task.target in world.in_fingers)


class PlaceInContainer(TaskFamily):
    """Put the named block into the tray or onto the plate and let go of it."""

    name = "place_in_container"
    templates = (
        "put the {target} {prep} the {reference}",
        "place the {target} {prep} the {reference}",
        "move the {target} {prep2} the {reference}",
    )
    _preps: ClassVar[dict[str, tuple[str, str]]] = {"tray": ("in", "into"), "plate": ("on", "onto")}

    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        scene = context.scene
        tray_side = 1.0 if rng.random() < 0.5 else -1.0
        tray = np.array([rng.uniform(0.54, 0.6), tray_side * rng.uniform(0.16, 0.2)])
        plate = np.array([rng.uniform(0.52, 0.6), -tray_side * rng.uniform(0.14, 0.2)])
        keep_out = [(tray, 0.17 + scene.block_size), (plate, scene.plate_radius + scene.block_size)]
        colors = _choose_colors(rng, int(rng.integers(2, 5)))
        points = _sample_positions(rng, len(colors), keep_out, x_range=(0.34, 0.62), y_range=(-0.25, 0.25))
        containers = (
            ContainerSpec("tray", (float(tray[0]), float(tray[1]))),
            ContainerSpec("plate", (float(plate[0]), float(plate[1]))),
        )
        layout = Layout(_blocks(rng, colors, points), containers, tcp_start=_home(rng))
        target = layout.blocks[0].name
        reference = "tray" if rng.random() < 0.5 else "plate"
        prep, prep2 = self._preps[reference]
        instruction = self._say(rng, target=target, reference=reference, prep=prep, prep2=prep2)
        return TaskInstance(self.name, instruction, layout, target, reference)

    def success(self, task: TaskInstance, world: WorldState) -> bool:
        scene = world.scene
        block, container = world.positions[task.target], world.positions[task.reference]
        if task.target in world.touching_robot:
            return False
        if task.reference == "tray":
            inside = bool(np.all(np.abs(block[:2] - container[:2]) <= scene.tray_half_inner))
            floor = scene.tray_floor_z
        else:
            inside = _horizontal(block, container) <= scene.plate_radius
            floor = TABLE_TOP_Z + scene.plate_height
        resting = block[2] - floor <= scene.block_size / 2.0 + 0.01
        return bool(inside and resting)


class StackBlocks(TaskFamily):
    """Put the named block on top of the other named block and let go of it."""

    name = "stack_blocks"
    templates = (
        "stack the {target} on the {reference}",
        "put the {target} on top of the {reference}",
        "place the {target} onto the {reference}",
    )

    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        colors = _choose_colors(rng, int(rng.integers(2, 5)))
        layout = Layout(_blocks(rng, colors, _sample_positions(rng, len(colors))), tcp_start=_home(rng))
        target, reference = layout.blocks[0].name, layout.blocks[1].name
        return TaskInstance(self.name, self._say(rng, target=target, reference=reference), layout, target, reference)

    def success(self, task: TaskInstance, world: WorldState) -> bool:
        size = world.scene.block_size
        top, base = world.positions[task.target], world.positions[task.reference]
        aligned = _horizontal(top, base) <= size / 2.0
        height = 0.7 * size <= top[2] - base[2] <= 1.3 * size
        return bool(aligned and height and _on_table(base, world.scene) and task.target not in world.touching_robot)


class PushBlock(TaskFamily):
    """Push the named block at least 10 cm to the left or right as seen in the static camera image."""

    name = "push_block"
    templates = (
        "push the {target} to the {direction}",
        "slide the {target} to the {direction}",
        "push the {target} {direction}",
    )
    distance = 0.10
    corridor = 0.08  # other blocks stay this far from the push path

    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        right = np.asarray(context.image_right, dtype=np.float64)
        word = "left" if rng.random() < 0.5 else "right"
        direction = -right if word == "left" else right
        colors = _choose_colors(rng, int(rng.integers(2, 5)))
        # The pushed block starts on the side opposite to the push so that the path stays on the table.
        for _ in range(200):
            start = np.array([rng.uniform(0.4, 0.6), 0.0]) - direction * rng.uniform(0.0, 0.1)
            path = [start + direction * s for s in np.linspace(-0.12, 0.22, 18)]
            keep_out = [(q, self.corridor) for q in path]
            try:
                others = _sample_positions(rng, len(colors) - 1, keep_out, fixed=[start])
            except ConfigError:
                continue
            break
        else:
            raise ConfigError("could not lay out push_block")
        layout = Layout(_blocks(rng, colors, [start, *others]), tcp_start=_home(rng))
        target = layout.blocks[0].name
        instruction = self._say(rng, target=target, direction=word)
        return TaskInstance(
            self.name, instruction, layout, target, direction=(float(direction[0]), float(direction[1]))
        )

    def success(self, task: TaskInstance, world: WorldState) -> bool:
        moved = world.positions[task.target][:2] - world.initial_positions[task.target][:2]
        along = float(moved @ np.asarray(task.direction))
        return bool(along >= self.distance and _on_table(world.positions[task.target], world.scene))


class MoveNextTo(TaskFamily):
    """Move the named block so that it rests on the table beside the other named block (gap under 5 cm)."""

    name = "move_next_to"
    templates = (
        "move the {target} next to the {reference}",
        "put the {target} beside the {reference}",
        "place the {target} near the {reference}",
    )
    max_distance = 0.09  # centre to centre
    start_distance = 0.15

    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        colors = _choose_colors(rng, int(rng.integers(2, 5)))
        for _ in range(200):
            points = _sample_positions(rng, len(colors))
            if np.linalg.norm(points[0] - points[1]) >= self.start_distance:
                break
        else:
            raise ConfigError("could not lay out move_next_to")
        layout = Layout(_blocks(rng, colors, points), tcp_start=_home(rng))
        target, reference = layout.blocks[0].name, layout.blocks[1].name
        return TaskInstance(self.name, self._say(rng, target=target, reference=reference), layout, target, reference)

    def success(self, task: TaskInstance, world: WorldState) -> bool:
        block, other = world.positions[task.target], world.positions[task.reference]
        near = 0.9 * world.scene.block_size <= _horizontal(block, other) <= self.max_distance
        resting = _on_table(block, world.scene) and _on_table(other, world.scene)
        return bool(near and resting and task.target not in world.touching_robot)


class GripperOverBlock(TaskFamily):
    """Bring the gripper over the named block and close it (starting open) or open it (starting closed)."""

    name = "gripper_over_block"
    close_templates = (
        "close the gripper over the {target}",
        "move above the {target} and close the gripper",
        "close the gripper above the {target}",
    )
    open_templates = (
        "open the gripper over the {target}",
        "move above the {target} and open the gripper",
        "open the gripper above the {target}",
    )
    templates = close_templates + open_templates
    max_offset = 0.025  # horizontal, TCP to block centre
    height_range = (0.01, 0.12)  # TCP above the block's top face

    def sample(self, rng: np.random.Generator, context: TaskContext) -> TaskInstance:
        want_open = bool(rng.random() < 0.5)
        colors = _choose_colors(rng, int(rng.integers(2, 5)))
        layout = Layout(
            _blocks(rng, colors, _sample_positions(rng, len(colors))), gripper_open=not want_open, tcp_start=_home(rng)
        )
        target = layout.blocks[0].name
        templates = self.open_templates if want_open else self.close_templates
        instruction = templates[int(rng.integers(len(templates)))].format(target=target)
        return TaskInstance(self.name, instruction, layout, target, gripper_open=want_open)

    def success(self, task: TaskInstance, world: WorldState) -> bool:
        block = world.positions[task.target]
        top = block[2] + world.scene.block_size / 2.0
        over = _horizontal(world.tcp_position, block) <= self.max_offset
        height = self.height_range[0] <= world.tcp_position[2] - top <= self.height_range[1]
        state = world.gripper_width > 0.07 if task.gripper_open else world.gripper_width < 0.01
        return bool(over and height and state)


TASK_FAMILIES: dict[str, TaskFamily] = {
    family.name: family
    for family in (PickBlock(), PlaceInContainer(), StackBlocks(), PushBlock(), MoveNextTo(), GripperOverBlock())
}


def get_family(name: str) -> TaskFamily:
    """The registered family `name`, or a ConfigError naming the known ones."""
    try:
        return TASK_FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; known: {sorted(TASK_FAMILIES)}") from None
