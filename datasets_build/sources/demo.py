"""The demo sim's recordings: a LeRobot v3.0 dataset with the sim's ground-truth geometry as extra features.

Defined once here for both directions: `demo_features`/`episode_to_columns` (used by the
`demo-episodes` recorder) and `DemoSource` (reads them back into Episodes with depth,
segmentation, camera models and per-step object poses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from datasets_build.actions import ACTION_NAMES
from datasets_build.camera import CameraModel
from datasets_build.episode import Episode, ObjectInfo
from datasets_build.errors import DataError
from datasets_build.sources.base import EpisodeSummary, register_source
from datasets_build.sources.lerobot import LeRobotMapping, LeRobotSource

POSE_NAMES = ("x", "y", "z", "qx", "qy", "qz", "qw")
DEPTH_SCALE = 0.001  # depth is stored as uint16 PNG in millimetres
EXTRA_PREFIX = "demo/"


def _keys(camera: str) -> dict[str, str]:
    return {
        "rgb": f"observation.images.{camera}",
        "depth": f"observation.depth.{camera}",
        "segmentation": f"observation.segmentation.{camera}",
        "intrinsics": f"observation.camera.{camera}.intrinsics",
        "extrinsics": f"observation.camera.{camera}.extrinsics",
    }


OBJECT_POSES = "observation.objects.pose"


def demo_features(image_sizes: dict[str, tuple[int, int]], max_objects: int, video: bool = False) -> dict[str, Any]:
    """LeRobot feature dict of a demo recording; `image_sizes` maps camera -> (height, width)."""
    from datasets_build.sim.env import STATE_NAMES  # the sim (pybullet) only when recording or reading

    features: dict[str, Any] = {
        "action": {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)},
        "observation.state": {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": list(STATE_NAMES)},
        OBJECT_POSES: {
            "dtype": "float32",
            "shape": [max_objects * len(POSE_NAMES)],
            "names": [f"slot{i}.{n}" for i in range(max_objects) for n in POSE_NAMES],
        },
    }
    for camera, (h, w) in image_sizes.items():
        keys = _keys(camera)
        features[keys["rgb"]] = {
            "dtype": "video" if video else "image",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
        }
        features[keys["depth"]] = {
            "dtype": "image",
            "shape": [h, w, 1],
            "names": ["height", "width", "channels"],
            "info": {"encoding": "uint16 PNG", "unit": "mm", "depth_scale": DEPTH_SCALE},
        }
        features[keys["segmentation"]] = {
            "dtype": "image",
            "shape": [h, w, 1],
            "names": ["height", "width", "channels"],
            "info": {"encoding": "uint8 PNG of segmentation ids (see demo/objects in meta/episodes)"},
        }
        features[keys["intrinsics"]] = {"dtype": "float32", "shape": [9], "names": None}
        features[keys["extrinsics"]] = {"dtype": "float32", "shape": [16], "names": None}
    return features


def episode_to_columns(episode: Episode, max_objects: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Episode -> (per-frame columns, extra meta/episodes columns) for `LeRobotWriter.add_episode`."""
    length = len(episode)
    if len(episode.objects) > max_objects:
        raise DataError(f"{len(episode.objects)} objects > max_objects={max_objects}", episode.episode_id, "objects")
    columns: dict[str, Any] = {"action": episode.actions, "observation.state": episode.state}
    poses = np.full((length, max_objects, len(POSE_NAMES)), np.nan, dtype=np.float32)
    objects_meta = []
    for slot, obj in enumerate(episode.objects.values()):
        poses[:, slot, :3] = np.broadcast_to(obj.positions, (length, 3)) if len(obj.positions) == 1 else obj.positions
        if obj.orientations is not None:
            poses[:, slot, 3:] = obj.orientations
        objects_meta.append(
            {
                "slot": slot,
                "name": obj.name,
                "category": obj.category,
                "size": None if obj.size is None else [float(v) for v in obj.size],
                "segmentation_id": obj.segmentation_id,
            }
        )
    columns[OBJECT_POSES] = poses.reshape(length, -1)
    for camera in episode.frames:
        keys = _keys(camera)
        columns[keys["rgb"]] = episode.frames[camera]
        depth_mm = np.clip(np.round(episode.depth[camera] / DEPTH_SCALE), 0, np.iinfo(np.uint16).max)
        columns[keys["depth"]] = depth_mm.astype(np.uint16)
        seg = episode.segmentation[camera]
        if seg.min() < 0 or seg.max() > 255:
            raise DataError("segmentation ids must lie in [0, 255]", episode.episode_id, f"segmentation[{camera}]")
        columns[keys["segmentation"]] = seg.astype(np.uint8)
        cam = episode.camera[camera]
        moving = episode.camera_extrinsics.get(camera)
        ext = moving if moving is not None else np.tile(cam.extrinsics, (length, 1, 1))
        columns[keys["intrinsics"]] = np.tile(cam.intrinsics.reshape(1, 9), (length, 1)).astype(np.float32)
        columns[keys["extrinsics"]] = ext.reshape(length, 16).astype(np.float32)
    meta = episode.meta
    extra = {
        f"{EXTRA_PREFIX}objects": json.dumps(objects_meta),
        f"{EXTRA_PREFIX}task_family": episode.task,
        f"{EXTRA_PREFIX}success": bool(episode.success),
        f"{EXTRA_PREFIX}meta": json.dumps(meta, default=float),
    }
    return columns, extra


@register_source("demo")
class DemoSource(LeRobotSource):
    """Demo-sim recordings with their geometry (depth, segmentation, cameras, object poses)."""

    name = "demo"

    def __init__(self, path: Path, skip_bad: bool = False) -> None:
        from datasets_build.sim.env import CAMERAS

        mapping = LeRobotMapping(state="observation.state")
        super().__init__(path, mapping=mapping, skip_bad=skip_bad)
        cameras = [c for c in CAMERAS if _keys(c)["rgb"] in self.info.features]
        if not cameras:
            raise DataError(
                "no demo camera features (observation.images.static)", self.path / "meta/info.json", "features"
            )
        self.mapping.cameras = {c: _keys(c)["rgb"] for c in cameras}
        self.mapping.depth = {c: _keys(c)["depth"] for c in cameras}
        self.mapping.segmentation = {c: _keys(c)["segmentation"] for c in cameras}
        self.mapping.depth_scale = DEPTH_SCALE

    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """The LeRobot summary plus the geometry every demo recording carries."""
        summary = super().summarize_episode(key)
        summary.geometry = ["depth", "segmentation", "camera", "objects"]
        return summary

    def to_episode(self, row: dict[str, Any], table: pa.Table, extra: Any = None) -> Episode:
        """Add cameras, objects, task family, success and recording meta to the generic episode."""
        return super().to_episode(row, table, extra=_demo_extra)


def _demo_extra(source: LeRobotSource, row: dict[str, Any], table: pa.Table) -> dict[str, Any]:
    where = f"{source.path}:episode {row['episode_index']}"
    try:
        objects_meta = json.loads(row[f"{EXTRA_PREFIX}objects"])
        meta = json.loads(row.get(f"{EXTRA_PREFIX}meta") or "{}")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"bad demo episode metadata ({exc})", where, f"{EXTRA_PREFIX}objects") from exc
    cameras: dict[str, CameraModel] = {}
    extrinsics_per_step: dict[str, np.ndarray] = {}
    for camera in source.mapping.cameras:
        keys = _keys(camera)
        intr = source.feature_array(table, row, keys["intrinsics"]).reshape(-1, 3, 3)
        ext = source.feature_array(table, row, keys["extrinsics"]).reshape(-1, 4, 4)
        h, w = source.info.features[keys["rgb"]]["shape"][:2]
        cameras[camera] = CameraModel(intr[0], ext[0], int(w), int(h))
        if not np.allclose(ext, ext[0]):
            extrinsics_per_step[camera] = ext.astype(np.float64)
    poses = source.feature_array(table, row, OBJECT_POSES).reshape(len(table), -1, len(POSE_NAMES))
    objects = {}
    for entry in objects_meta:
        slot = int(entry["slot"])
        objects[entry["name"]] = ObjectInfo(
            name=entry["name"],
            positions=poses[:, slot, :3],
            orientations=poses[:, slot, 3:],
            size=entry.get("size"),
            segmentation_id=entry.get("segmentation_id"),
            category=entry.get("category", ""),
        )
    return {
        "source": "demo",
        "camera": cameras,
        "camera_extrinsics": extrinsics_per_step,
        "objects": objects,
        "task": str(row.get(f"{EXTRA_PREFIX}task_family", "")),
        "success": bool(row.get(f"{EXTRA_PREFIX}success")),
        "meta": meta,
    }
