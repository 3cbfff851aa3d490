"""Episodes made by code for tests that must not depend on the simulator."""

from __future__ import annotations

import numpy as np

from datasets_build.camera import CameraModel
from datasets_build.episode import Episode, ObjectInfo


def synthetic_episode(length: int = 6, size: int = 32, seed: int = 0, episode_id: str = "ep0") -> Episode:
    """A small episode with every geometry field, values known per step."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(length, size, size, 3), dtype=np.uint8)
    frames[:, :4, :4] = [255, 0, 0]  # red top-left corner
    wrist = rng.integers(0, 255, size=(length, size // 2, size // 2, 3), dtype=np.uint8)
    actions = np.zeros((length, 7), dtype=np.float32)
    actions[:, 0] = np.linspace(-0.02, 0.02, length)
    actions[:, 5] = 0.01 * np.arange(length)
    actions[:, 6] = (np.arange(length) < length // 2).astype(np.float32)
    depth = np.linspace(0.5, 1.5, length * size * size, dtype=np.float32).reshape(length, size, size)
    seg = np.zeros((length, size, size), dtype=np.int32)
    seg[:, 10:20, 10:20] = 3
    cam = CameraModel.from_look_at([1, 0, 1], [0, 0, 0], [0, 0, 1], 60, size, size)
    wrist_cam = CameraModel.from_look_at([0.5, 0, 0.5], [0, 0, 0], [0, 0, 1], 60, size // 2, size // 2)
    wrist_ext = np.tile(wrist_cam.extrinsics, (length, 1, 1))
    wrist_ext[:, 2, 3] += np.arange(length) * 0.01
    block = ObjectInfo(
        name="red block",
        positions=np.cumsum(np.full((length, 3), 0.01, dtype=np.float32), axis=0),
        orientations=np.tile([0, 0, 0, 1], (length, 1)),
        size=[0.04, 0.04, 0.04],
        segmentation_id=3,
        category="block",
    )
    return Episode(
        episode_id=episode_id,
        source="demo",
        frames={"static": frames, "wrist": wrist},
        actions=actions,
        instruction="pick up the red block",
        state=rng.normal(size=(length, 8)).astype(np.float32),
        depth={"static": depth, "wrist": depth[:, : size // 2, : size // 2].copy()},
        segmentation={"static": seg, "wrist": seg[:, : size // 2, : size // 2].copy()},
        camera={"static": cam, "wrist": wrist_cam},
        camera_extrinsics={"wrist": wrist_ext},
        objects={"red block": block},
        fps=10,
        task="pick_block",
        success=True,
        meta={"seed": seed},
    )
