"""Tiny CALVIN splits written by code in the true on-disk layout, for the reader's tests and benchmark.

One `np.savez_compressed` npz per frame under global indices (not starting at 0), inclusive
`ep_start_end_ids.npy`, a pickled `scene_info.npy` dict, a pickled `auto_lang_ann.npy` (written the
way numpy 1.x wrote it: pickle protocol 3 naming `numpy.core.multiarray`) and a
`.hydra/merged_config.yaml`. The static frames are renderings: each block is a disc of its colour
at its scene_obs position projected with the static camera, and depth_static holds that point's
camera-z there, so a test can project the reader's object poses and find the block's colour.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from datasets_build.camera import CameraModel

FIRST_FRAME = 358000
BLOCK_COLOURS: dict[str, tuple[int, int, int]] = {
    "red block": (255, 0, 0),
    "blue block": (0, 0, 255),
    "pink block": (255, 0, 255),
}
BACKGROUND = (90, 90, 90)
BACKGROUND_DEPTH = 4.5
DISC_RADIUS = 4
DEFAULT_CAMERA: dict[str, Any] = {
    "fov": 10,
    "aspect": 1,
    "width": 200,
    "height": 200,
    "look_from": [2.871459009488717, -2.166602199425597, 2.555159848480571],
    "look_at": [-0.026242351159453392, -0.0302329882979393, 0.3920000493526459],
    "up_vector": [0.4041403970338857, 0.22629790978217404, 0.8862616969685161],
}
# A static camera deliberately off the defaults, so a reader that ignores the config misses the blocks.
CONFIG_CAMERA: dict[str, Any] = {
    **DEFAULT_CAMERA,
    "look_from": [2.6, -2.4, 2.3],
    "look_at": [0.1, -0.12, 0.42],
    "fov": 12,
}
SEGMENTS = [(0, 11), (12, 19), (20, 31)]  # inclusive, relative to `start`
SCENES = {"calvin_scene_B": (0, 11), "calvin_scene_C": (12, 19), "calvin_scene_A": (20, 31)}
ANNOTATIONS = [  # (start, end inclusive, instruction, task), relative to `start`
    (2, 9, "push the red block to the left", "push_red_left"),
    (12, 18, "open the drawer", "open_drawer"),
    (20, 30, "lift the pink block from the table", "lift_pink_block_table"),
    (24, 27, "turn on the led light", "turn_on_led"),
]


@dataclass
class CalvinFixture:
    """Where a written split lies and what was written into it (global, inclusive frame indices)."""

    root: Path  # the task folder
    split_dir: Path
    segments: list[tuple[int, int]]
    annotations: list[tuple[int, int, str, str]]
    scene_info: dict[str, tuple[int, int]] | None
    camera: CameraModel
    name_format: str
    frames: list[int] = field(default_factory=list)

    def frame_path(self, index: int) -> Path:
        """The npz file of global frame `index`."""
        return self.split_dir / self.name_format.format(index)


def camera_model(cfg: dict[str, Any], height: int = 200, width: int = 200) -> CameraModel:
    """The pinhole model pybullet renders with for a calvin_env static-camera config."""
    return CameraModel.from_look_at(cfg["look_from"], cfg["look_at"], cfg["up_vector"], cfg["fov"], width, height)


def rel_action(index: int) -> np.ndarray:
    """CALVIN rel_actions of frame `index`: normalised deltas, gripper +1 open / -1 close (closed in blocks of 5)."""
    x = float(index)
    gripper = -1.0 if (index // 5) % 2 else 1.0
    return np.array(
        [np.sin(0.1 * x), np.cos(0.1 * x), 0.5 * np.sin(0.05 * x), 0.3, -0.2, 0.1 * (index % 7 - 3), gripper],
        dtype=np.float32,
    )


def robot_obs(index: int) -> np.ndarray:
    """15 values: tcp xyz, tcp euler, gripper width, 7 joints, gripper action."""
    obs = np.arange(15, dtype=np.float32) * 0.01 + (index - FIRST_FRAME) * 1e-3
    obs[14] = rel_action(index)[6]
    return obs


def block_poses(index: int) -> dict[str, np.ndarray]:
    """xyz + euler (pybullet xyz) of each block at frame `index`; they drift apart slowly on the table."""
    k = float(index - FIRST_FRAME)
    return {
        "red block": np.array([-0.14 + 0.002 * k, -0.08, 0.46, 0.0, 0.0, 0.05 * k]),
        "blue block": np.array([0.0, 0.06 - 0.001 * k, 0.46, 0.0, 0.0, -0.03 * k]),
        "pink block": np.array([0.15, -0.05 + 0.001 * k, 0.46, 0.1, 0.0, 0.5]),
    }


def scene_obs(index: int, quaternions: bool = False) -> np.ndarray:
    """Door, drawer, button, switch, lightbulb, green light, then red/blue/pink xyz + euler (24) or + xyzw (27)."""
    scalars = [0.1, 0.05, 0.0, 0.02, 1.0, 0.0]
    poses = []
    for pose in block_poses(index).values():
        orientation = Rotation.from_euler("xyz", pose[3:]).as_quat() if quaternions else pose[3:]
        poses.extend([*pose[:3], *orientation])
    return np.asarray(scalars + poses, dtype=np.float32)


def render_static(index: int, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, depth float32 HxW): a grey table with a disc per block, nearest block on top."""
    rgb = np.empty((camera.height, camera.width, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    depth = np.full((camera.height, camera.width), BACKGROUND_DEPTH, dtype=np.float32)
    rows, cols = np.mgrid[0 : camera.height, 0 : camera.width]
    poses = block_poses(index)
    uv, z = camera.project(np.stack([p[:3] for p in poses.values()]))
    for i in np.argsort(-z):
        name = list(poses)[i]
        disc = (cols + 0.5 - uv[i, 0]) ** 2 + (rows + 0.5 - uv[i, 1]) ** 2 <= DISC_RADIUS**2
        rgb[disc] = BLOCK_COLOURS[name]
        depth[disc] = z[i]
    return rgb, depth


def frame_arrays(index: int, camera: CameraModel, quaternions: bool = False) -> dict[str, np.ndarray]:
    """Every key of one CALVIN frame npz."""
    rgb, depth = render_static(index, camera)
    gripper = np.full((84, 84, 3), index % 256, dtype=np.uint8)
    gripper[:, :, 1] = np.arange(84, dtype=np.uint8)[None, :]
    rel = rel_action(index)
    return {
        "actions": np.concatenate([robot_obs(index)[:6], rel[6:]]).astype(np.float64),
        "rel_actions": rel,
        "robot_obs": robot_obs(index),
        "scene_obs": scene_obs(index, quaternions),
        "rgb_static": rgb,
        "rgb_gripper": gripper,
        "rgb_tactile": np.zeros((160, 120, 6), dtype=np.uint8),
        "depth_static": depth,
        "depth_gripper": np.full((84, 84), 0.1 + 0.001 * (index % 100), dtype=np.float32),
        "depth_tactile": np.zeros((160, 120, 2), dtype=np.float32),
    }


def legacy_pickled_npy(path: Path, obj: Any) -> None:
    """np.save of a Python object as numpy 1.x wrote it (protocol 3, `numpy.core.multiarray` globals)."""
    array = np.empty((), dtype=object)
    array[()] = obj
    payload = pickle.dumps(array, protocol=3).replace(b"numpy._core.", b"numpy.core.")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    path.write_bytes(header.getvalue() + payload)


def merged_config(camera: dict[str, Any], table_scene: str = "A") -> dict[str, Any]:
    """The parts of calvin_env's rendering config the reader uses (cameras, env, scene)."""
    return {
        "cameras": {
            "static": {
                "_target_": "calvin_env.camera.static_camera.StaticCamera",
                "name": "static",
                "nearval": 0.01,
                "farval": 10,
                **camera,
            },
            "gripper": {
                "_target_": "calvin_env.camera.gripper_camera.GripperCamera",
                "name": "gripper",
                "fov": 75,
                "aspect": 1,
                "nearval": 0.01,
                "farval": 2,
                "width": 84,
                "height": 84,
            },
        },
        "env": {"_target_": "calvin_env.envs.play_table_env.PlayTableSimEnv", "control_freq": 30, "use_egl": True},
        "scene": {
            "_target_": "calvin_env.scene.play_table_scene.PlayTableScene",
            "data_path": "${data_path}",
            "global_scaling": 0.8,
            "objects": {
                "fixed_objects": {
                    "table": {"file": f"calvin_table_{table_scene}/urdf/calvin_table_{table_scene}.urdf"}
                },
                "movable_objects": {
                    "block_red": {"file": "blocks/block_red_middle.urdf", "initial_pos": "any", "initial_orn": "any"},
                    "block_blue": {"file": "blocks/block_blue_small.urdf", "initial_pos": "any", "initial_orn": "any"},
                    "block_pink": {"file": "blocks/block_pink_big.urdf", "initial_pos": "any", "initial_orn": "any"},
                },
            },
        },
    }


def write_calvin(
    root: Path,
    split: str = "training",
    start: int = FIRST_FRAME,
    segments: list[tuple[int, int]] | None = None,
    scenes: dict[str, tuple[int, int]] | None = SCENES,
    annotations: list[tuple[int, int, str, str]] | None = None,
    config: bool = True,
    name_format: str = "episode_{:07d}.npz",
    quaternions: bool = False,
    image_size: int = 200,
) -> CalvinFixture:
    """Write `root/<split>/` (root is the task folder); offsets in the arguments are relative to `start`.
    `image_size` renders the static camera smaller than CALVIN's 200 (large fixtures for benchmarks)."""
    segments = SEGMENTS if segments is None else segments
    annotations = ANNOTATIONS if annotations is None else annotations
    split_dir = root / split
    (split_dir / "lang_annotations").mkdir(parents=True, exist_ok=True)
    cam_cfg = CONFIG_CAMERA if config else DEFAULT_CAMERA
    camera = camera_model(cam_cfg, image_size, image_size)
    glob_segments = [(start + s, start + e) for s, e in segments]
    frames = sorted({i for s, e in glob_segments for i in range(s, e + 1)})
    for index in frames:
        np.savez_compressed(split_dir / name_format.format(index), **frame_arrays(index, camera, quaternions))
    np.save(split_dir / "ep_start_end_ids.npy", np.asarray(glob_segments, dtype=np.int64))
    np.save(split_dir / "ep_lens.npy", np.asarray([e - s + 1 for s, e in glob_segments], dtype=np.int64))
    glob_scenes = None
    if scenes is not None:
        glob_scenes = {name: (start + a, start + b) for name, (a, b) in scenes.items()}
        np.save(split_dir / "scene_info.npy", {k: list(v) for k, v in glob_scenes.items()}, allow_pickle=True)
    glob_anns = [(start + s, start + e, text, task) for s, e, text, task in annotations]
    lang = {
        "language": {
            "ann": [a[2] for a in glob_anns],
            "task": [a[3] for a in glob_anns],
            "emb": np.zeros((len(glob_anns), 1, 384), dtype=np.float32),
        },
        "info": {"indx": [(np.int64(a[0]), np.int64(a[1])) for a in glob_anns], "episodes": []},
    }
    legacy_pickled_npy(split_dir / "lang_annotations" / "auto_lang_ann.npy", lang)
    if config:
        (split_dir / ".hydra").mkdir(exist_ok=True)
        text = yaml.safe_dump(merged_config(cam_cfg), sort_keys=False)
        (split_dir / ".hydra" / "merged_config.yaml").write_text(text)
    (split_dir / "statistics.yaml").write_text("act_min_bound: [-1, -1, -1, -1, -1, -1, 0]\n")
    return CalvinFixture(root, split_dir, glob_segments, glob_anns, glob_scenes, camera, name_format, frames)
