"""The LeRobot on-disk layout (paths, default per-frame columns, info.json), defined once for reader and writer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_build.errors import DataError

CODEBASE_VERSION = "v3.0"
SUPPORTED_VERSIONS = ("v3.0", "v2.1")
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
# v2.1 (read only)
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200

# Columns every LeRobot frame carries besides the user features.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}


@dataclass
class LeRobotInfo:
    """`meta/info.json`, validated on load."""

    root: Path
    raw: dict[str, Any]

    @classmethod
    def load(cls, root: str | Path) -> LeRobotInfo:
        """Read and check `meta/info.json` under `root` (DataError naming the file and field)."""
        root = Path(root)
        path = root / INFO_PATH
        if not path.is_file():
            raise DataError("not a LeRobot dataset (no meta/info.json)", root)
        try:
            raw = json.loads(path.read_text())
        except (ValueError, OSError, RecursionError) as exc:
            raise DataError(f"invalid JSON ({exc})", path) from exc
        if not isinstance(raw, dict):
            raise DataError(f"must hold a JSON object, not {type(raw).__name__}", path)
        version = raw.get("codebase_version")
        if version not in SUPPORTED_VERSIONS:
            raise DataError(
                f"unsupported codebase version {version!r} (supported: {SUPPORTED_VERSIONS})", path, "codebase_version"
            )
        for key in ("fps", "features"):
            if key not in raw:
                raise DataError("missing", path, key)
        _check_info(raw, path)
        return cls(root, raw)

    @property
    def version(self) -> str:
        return str(self.raw["codebase_version"])

    @property
    def fps(self) -> float:
        return float(self.raw["fps"])

    @property
    def features(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw["features"])

    def keys_of(self, *dtypes: str) -> list[str]:
        """Feature keys whose dtype is one of `dtypes` (e.g. "image", "video")."""
        return [k for k, f in self.features.items() if f.get("dtype") in dtypes]


def _check_info(raw: dict[str, Any], path: Path) -> None:
    """Types of the info.json fields the reader uses (DataError naming the field)."""
    fps = raw["fps"]
    if not isinstance(fps, int | float) or isinstance(fps, bool) or not 0 < fps < float("inf"):
        raise DataError(f"must be a positive number, got {fps!r}", path, "fps")
    features = raw["features"]
    if not isinstance(features, dict):
        raise DataError(f"must be an object, got {type(features).__name__}", path, "features")
    for key, feature in features.items():
        if not isinstance(feature, dict) or not isinstance(feature.get("dtype"), str):
            raise DataError("must be an object with a string dtype", path, f"features.{key}")
        shape = feature.get("shape", [])
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise DataError(f"must be a list of integers, got {shape!r}", path, f"features.{key}.shape")
    for key in ("data_path", "video_path"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise DataError(f"must be a path template string, got {raw[key]!r}", path, key)
    chunks = raw.get("chunks_size", DEFAULT_CHUNK_SIZE)
    if not isinstance(chunks, int) or isinstance(chunks, bool) or chunks < 1:
        raise DataError(f"must be a positive integer, got {chunks!r}", path, "chunks_size")
