"""The tabletop world: table, Panda, coloured blocks and containers, with stable segmentation ids.

Every reset rebuilds the world from a `Layout` in a fresh pybullet simulation so that the same
layout always gives bit-identical physics. Segmentation ids are stable across episodes:
0 background (floor, sky), 1 table, 2 robot, then 3, 4, ... for the containers and then the
blocks, in layout order.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pybullet as p
import pybullet_data

from datasets_build.episode import ObjectInfo
from datasets_build.errors import ConfigError
from datasets_build.sim.robot import FINGER_LINKS, Panda, RobotConfig

BACKGROUND_ID = 0
TABLE_ID = 1
ROBOT_ID = 2
FIRST_OBJECT_ID = 3

TABLE_TOP_Z = 0.625  # height of pybullet_data's table/table.urdf top surface, base at z=0
ROBOT_BASE = (0.0, 0.0, TABLE_TOP_Z)
TABLE_BASE = (0.5, 0.0, 0.0)
HOME_TCP = (0.45, 0.0, TABLE_TOP_Z + 0.25)  # nominal start of the TCP, gripper pointing down

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.75),
    "orange": (1.00, 0.50, 0.05),
}
CONTAINER_KINDS = ("tray", "plate")


@dataclass(frozen=True)
class BlockSpec:
    """A cube to place: its colour (a PALETTE key), table position (x, y) and yaw (rad)."""

    color: str
    xy: tuple[float, float]
    yaw: float = 0.0

    @property
    def name(self) -> str:
        """Its name in language, e.g. "red block"."""
        return f"{self.color} block"


@dataclass(frozen=True)
class ContainerSpec:
    """A static container to place: "tray" (a walled box) or "plate" (a flat disc), at (x, y)."""

    kind: str
    xy: tuple[float, float]

    @property
    def name(self) -> str:
        """Its name in language: the kind itself."""
        return self.kind


@dataclass(frozen=True)
class Layout:
    """Everything a reset needs: blocks, containers, the TCP start position and the gripper state."""

    blocks: tuple[BlockSpec, ...]
    containers: tuple[ContainerSpec, ...] = ()
    gripper_open: bool = True
    tcp_start: tuple[float, float, float] = HOME_TCP


@dataclass(frozen=True)
class SceneConfig:
    """Sizes and contact parameters of the scene's objects (metres, kilograms)."""

    block_size: float = 0.04
    block_mass: float = 0.05
    block_friction: float = 1.0
    finger_friction: float = 1.5
    tray_scale: float = 0.4  # traybox.urdf is 0.6 m wide; 0.4 gives a 0.24 m tray
    plate_radius: float = 0.08
    plate_height: float = 0.01
    solver_iterations: int = 50
    robot_meshes: str = "simple"  # "simple": collision meshes drawn (~2x faster rendering); "full"

    @property
    def tray_half_inner(self) -> float:
        """Half-width of the tray's flat floor (walls slope outward from there)."""
        return 0.2 * self.tray_scale

    @property
    def tray_floor_z(self) -> float:
        """World height of the tray's floor surface."""
        return TABLE_TOP_Z + 0.015 * self.tray_scale


@dataclass
class SceneObject:
    """One object of the current scene: its pybullet body, stable segmentation id and extents."""

    name: str
    body: int
    segmentation_id: int
    category: str  # "block" or "container"
    size: np.ndarray  # full extents (3,)
    color: str = ""
    static: bool = False


@dataclass
class Scene:
    """The built world of one pybullet client: robot, objects by name, and the segmentation lookup."""

    client: int
    config: SceneConfig
    robot: Panda
    table: int
    objects: dict[str, SceneObject] = field(default_factory=dict)
    seg_lookup: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int32))

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World position (3,) and quaternion xyzw (4,) of object `name`."""
        pos, quat = p.getBasePositionAndOrientation(self.objects[name].body, physicsClientId=self.client)
        return np.asarray(pos, dtype=np.float64), np.asarray(quat, dtype=np.float64)

    def positions(self) -> dict[str, np.ndarray]:
        """Current position of every object."""
        return {name: self.pose(name)[0] for name in self.objects}

    def touching_robot(self, name: str, fingers_only: bool = False) -> bool:
        """Whether object `name` is in contact with the robot (or only with its fingers)."""
        contacts = p.getContactPoints(self.robot.body, self.objects[name].body, physicsClientId=self.client)
        if fingers_only:
            return any(c[3] in FINGER_LINKS for c in contacts)
        return len(contacts) > 0

    def map_segmentation(self, raw: np.ndarray) -> np.ndarray:
        """pybullet's segmentation (body uid, -1 for none) -> stable ids (int32)."""
        raw = np.asarray(raw, dtype=np.int64)
        index = np.clip(raw + 1, 0, len(self.seg_lookup) - 1)
        return self.seg_lookup[index]

    def object_infos(self) -> dict[str, ObjectInfo]:
        """The current pose of every object as `ObjectInfo` (one time step)."""
        infos = {}
        for name, obj in self.objects.items():
            pos, quat = self.pose(name)
            infos[name] = ObjectInfo(
                name=name,
                positions=pos[None],
                orientations=quat[None],
                size=obj.size,
                segmentation_id=obj.segmentation_id,
                category=obj.category,
            )
        return infos


def build_scene(client: int, layout: Layout, config: SceneConfig, robot_config: RobotConfig) -> Scene:
    """Reset the simulation of `client` and build table, robot and the layout's objects in it."""
    p.resetSimulation(physicsClientId=client)
    p.setPhysicsEngineParameter(
        numSolverIterations=config.solver_iterations, deterministicOverlappingPairs=1, physicsClientId=client
    )
    p.setGravity(0.0, 0.0, -9.81, physicsClientId=client)
    data = pybullet_data.getDataPath()
    # The floor only catches dropped blocks; drawing it would cost ~25% of the static camera's time.
    floor_shape = p.createCollisionShape(p.GEOM_PLANE, physicsClientId=client)
    floor = p.createMultiBody(0.0, floor_shape, -1, physicsClientId=client)
    table = p.loadURDF(f"{data}/table/table.urdf", TABLE_BASE, useFixedBase=True, physicsClientId=client)
    panda_body = p.loadURDF(panda_urdf(config.robot_meshes), ROBOT_BASE, useFixedBase=True, physicsClientId=client)
    for link in FINGER_LINKS:
        p.changeDynamics(panda_body, link, lateralFriction=config.finger_friction, physicsClientId=client)
    robot = Panda(client, panda_body, robot_config)
    scene = Scene(client=client, config=config, robot=robot, table=table)
    ids = {floor: BACKGROUND_ID, table: TABLE_ID, panda_body: ROBOT_ID}
    for container in layout.containers:
        obj = _add_container(client, container, config, FIRST_OBJECT_ID + len(scene.objects))
        scene.objects[obj.name] = obj
        ids[obj.body] = obj.segmentation_id
    for block in layout.blocks:
        obj = _add_block(client, block, config, FIRST_OBJECT_ID + len(scene.objects))
        if obj.name in scene.objects:
            raise ConfigError(f"two objects named {obj.name!r} in one layout")
        scene.objects[obj.name] = obj
        ids[obj.body] = obj.segmentation_id
    lookup = np.zeros(max(ids) + 2, dtype=np.int32)
    for body, seg in ids.items():
        lookup[body + 1] = seg
    scene.seg_lookup = lookup
    down = np.asarray(p.getQuaternionFromEuler([np.pi, 0.0, 0.0]))
    robot.teleport_tcp(np.asarray(layout.tcp_start), down, gripper_open=layout.gripper_open)
    return scene


def panda_urdf(meshes: str) -> str:
    """Path of the Panda URDF: pybullet_data's own ("full", ~100k visual triangles), or a copy whose
    visuals are its collision meshes ("simple", ~3.5k triangles), written once to the temp folder."""
    source = Path(pybullet_data.getDataPath()) / "franka_panda" / "panda.urdf"
    if meshes == "full":
        return str(source)
    if meshes != "simple":
        raise ConfigError(f"robot_meshes must be 'simple' or 'full', got {meshes!r}")
    folder = source.parent / "meshes"
    text = source.read_text()
    text = re.sub(
        r"package://meshes/visual/(\w+)\.obj", lambda m: str(folder / "collision" / f"{m.group(1)}.obj"), text
    )
    text = text.replace("package://meshes/", f"{folder}/")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"datasets_build_sim_panda_simple_{digest}.urdf"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, target)
    return str(target)


def _add_block(client: int, spec: BlockSpec, config: SceneConfig, seg_id: int) -> SceneObject:
    if spec.color not in PALETTE:
        raise ConfigError(f"unknown block colour {spec.color!r}; known: {sorted(PALETTE)}")
    half = config.block_size / 2.0
    shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=[half] * 3, physicsClientId=client)
    visual = p.createVisualShape(
        p.GEOM_BOX, halfExtents=[half] * 3, rgbaColor=[*PALETTE[spec.color], 1.0], physicsClientId=client
    )
    body = p.createMultiBody(
        config.block_mass,
        shape,
        visual,
        [spec.xy[0], spec.xy[1], TABLE_TOP_Z + half],
        p.getQuaternionFromEuler([0.0, 0.0, spec.yaw]),
        physicsClientId=client,
    )
    p.changeDynamics(body, -1, lateralFriction=config.block_friction, physicsClientId=client)
    size = np.full(3, config.block_size, dtype=np.float32)
    return SceneObject(spec.name, body, seg_id, "block", size, color=spec.color)


def _add_container(client: int, spec: ContainerSpec, config: SceneConfig, seg_id: int) -> SceneObject:
    if spec.kind == "tray":
        body = p.loadURDF(
            f"{pybullet_data.getDataPath()}/tray/traybox.urdf",
            [spec.xy[0], spec.xy[1], TABLE_TOP_Z],
            useFixedBase=True,
            globalScaling=config.tray_scale,
            physicsClientId=client,
        )
        size = np.array([0.6 * config.tray_scale, 0.6 * config.tray_scale, 0.15 * config.tray_scale])
    elif spec.kind == "plate":
        radius, height = config.plate_radius, config.plate_height
        shape = p.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=client)
        visual = p.createVisualShape(
            p.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=[0.93, 0.93, 0.9, 1.0], physicsClientId=client
        )
        body = p.createMultiBody(
            0.0, shape, visual, [spec.xy[0], spec.xy[1], TABLE_TOP_Z + height / 2.0], physicsClientId=client
        )
        size = np.array([2 * radius, 2 * radius, height])
    else:
        raise ConfigError(f"unknown container {spec.kind!r}; known: {CONTAINER_KINDS}")
    return SceneObject(spec.name, body, seg_id, "container", size.astype(np.float32), static=True)
