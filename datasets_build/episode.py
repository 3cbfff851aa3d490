"""`Episode`: one robot trajectory in memory, the only thing source readers yield.

Shapes: frames[camera] uint8 (T, H, W, 3); actions float32 (T, 7) in the action convention
(`datasets_build.actions`); depth[camera] float32 (T, H, W) metres; segmentation[camera] int32
(T, H, W); object poses (T, 3) / (T, 4) xyzw quaternions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from datasets_build.actions import validate_actions
from datasets_build.camera import CameraModel
from datasets_build.errors import DataError


@dataclass
class ObjectInfo:
    """A scene object: its name in language ("red block"), pose over time, size and segmentation id."""

    name: str
    positions: np.ndarray  # float32 (T, 3) world metres; T may be 1 for a static object
    orientations: np.ndarray | None = None  # float32 (T, 4) quaternion xyzw
    size: np.ndarray | None = None  # float32 (3,) full extents in metres (x, y, z in the object frame)
    segmentation_id: int | None = None  # value of this object's pixels in `Episode.segmentation`
    category: str = ""  # e.g. "block", "container"

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float32).reshape(-1, 3)
        if self.orientations is not None:
            self.orientations = np.asarray(self.orientations, dtype=np.float32).reshape(-1, 4)
        if self.size is not None:
            self.size = np.asarray(self.size, dtype=np.float32).reshape(3)

    def position_at(self, step: int) -> np.ndarray:
        """Position at `step` (the last known one for static objects)."""
        return self.positions[min(step, len(self.positions) - 1)]


@dataclass(frozen=True)
class LanguageWindow:
    """A language-annotated sub-trajectory: steps [start, end) carry `instruction`."""

    start: int
    end: int
    instruction: str
    task: str = ""


@dataclass
class Episode:
    """One trajectory. Every array's first axis is time (length T) unless noted."""

    episode_id: str
    source: str
    frames: dict[str, np.ndarray]
    actions: np.ndarray
    instruction: str = ""
    language: list[LanguageWindow] = field(default_factory=list)
    state: np.ndarray | None = None
    depth: dict[str, np.ndarray] = field(default_factory=dict)
    segmentation: dict[str, np.ndarray] = field(default_factory=dict)
    camera: dict[str, CameraModel] = field(default_factory=dict)
    camera_extrinsics: dict[str, np.ndarray] = field(default_factory=dict)  # (T, 4, 4) for moving cameras
    objects: dict[str, ObjectInfo] = field(default_factory=dict)
    fps: float = 10.0
    task: str = ""
    success: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"{self.source}:{self.episode_id}"
        self.actions = validate_actions(self.actions, where)
        length = len(self.actions)
        if length == 0:
            raise DataError("empty episode", where, "actions")
        for name, frames in self.frames.items():
            if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
                raise DataError(
                    f"expected uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}", where, f"frames[{name}]"
                )
        for kind, maps in (("depth", self.depth), ("segmentation", self.segmentation)):
            for name, arr in maps.items():
                if arr.ndim != 3:
                    raise DataError(f"expected (T, H, W), got {arr.shape}", where, f"{kind}[{name}]")
        for kind, arrays in (("frames", self.frames), ("depth", self.depth), ("segmentation", self.segmentation)):
            for name, arr in arrays.items():
                if len(arr) != length:
                    raise DataError(f"{len(arr)} steps but {length} actions", where, f"{kind}[{name}]")
        for name, ext in self.camera_extrinsics.items():
            if ext.shape != (length, 4, 4):
                raise DataError(f"expected ({length}, 4, 4), got {ext.shape}", where, f"camera_extrinsics[{name}]")
        if self.state is not None and len(self.state) != length:
            raise DataError(f"{len(self.state)} steps but {length} actions", where, "state")
        for window in self.language:
            if not 0 <= window.start < window.end <= length:
                raise DataError(f"window [{window.start}, {window.end}) outside [0, {length})", where, "language")

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def cameras(self) -> list[str]:
        """Names of the RGB cameras."""
        return list(self.frames)

    def camera_at(self, camera: str, step: int) -> CameraModel:
        """The camera model at `step` (moving cameras take that step's extrinsics)."""
        model = self.camera[camera]
        if camera not in self.camera_extrinsics:
            return model
        return replace(model, extrinsics=self.camera_extrinsics[camera][step])

    def geometry(self) -> list[str]:
        """Which ground-truth geometry this episode carries: depth, segmentation, camera, objects."""
        present = {
            "depth": bool(self.depth),
            "segmentation": bool(self.segmentation),
            "camera": bool(self.camera),
            "objects": bool(self.objects),
        }
        return [name for name, ok in present.items() if ok]

    def window(self, start: int, end: int, instruction: str | None = None) -> Episode:
        """The sub-episode of steps [start, end), with per-step arrays and object poses sliced."""

        def cut(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {k: v[start:end] for k, v in arrays.items()}

        objects = {
            name: replace(
                obj,
                positions=obj.positions[start:end] if len(obj.positions) > 1 else obj.positions,
                orientations=(
                    obj.orientations[start:end]
                    if obj.orientations is not None and len(obj.orientations) > 1
                    else obj.orientations
                ),
            )
            for name, obj in self.objects.items()
        }
        language = [
            LanguageWindow(max(w.start, start) - start, min(w.end, end) - start, w.instruction, w.task)
            for w in self.language
            if w.start < end and w.end > start
        ]
        return replace(
            self,
            episode_id=f"{self.episode_id}[{start}:{end}]",
            frames=cut(self.frames),
            actions=self.actions[start:end],
            instruction=self.instruction if instruction is None else instruction,
            language=language,
            state=None if self.state is None else self.state[start:end],
            depth=cut(self.depth),
            segmentation=cut(self.segmentation),
            camera_extrinsics=cut(self.camera_extrinsics),
            objects=objects,
        )
