"""LeRobot v3.0 datasets -> Episode, through a mapping from LeRobot feature keys to Episode fields.

Reads `meta/info.json`, `meta/tasks.parquet`, `meta/episodes/*/*.parquet`, then one episode's rows
of its data parquet (and its span of each mp4) at a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from datasets_build.episode import Episode
from datasets_build.errors import DataError
from datasets_build.lerobot import layout
from datasets_build.lerobot.video import decode_video
from datasets_build.sources.base import EpisodeSummary, Source, register_source


@dataclass
class LeRobotMapping:
    """Which LeRobot keys become which Episode fields. Empty camera maps mean "every image/video feature"."""

    action: str = "action"
    state: str | None = "observation.state"
    cameras: dict[str, str] = field(default_factory=dict)  # episode camera name -> feature key
    depth: dict[str, str] = field(default_factory=dict)  # camera -> feature key (uint16 mm PNG or float m)
    segmentation: dict[str, str] = field(default_factory=dict)
    depth_scale: float = 0.001  # metres per stored depth unit


def decode_image_cell(cell: dict[str, Any], where: str) -> np.ndarray:
    """A parquet image cell {bytes, path} -> array as stored (uint8 RGB/L or uint16)."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise DataError("image cell without bytes", where)
    image: Image.Image = Image.open(io.BytesIO(data))
    if image.mode == "I;16":
        return np.asarray(image, dtype=np.uint16)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return np.asarray(image)


@register_source("lerobot")
class LeRobotSource(Source):
    """A LeRobot v3.0 dataset folder."""

    name = "lerobot"

    def __init__(self, path: Path, mapping: LeRobotMapping | None = None, skip_bad: bool = False) -> None:
        super().__init__(path, skip_bad)
        self.info = layout.LeRobotInfo.load(self.path)
        if self.info.version != "v3.0":
            raise DataError(
                f"LeRobot {self.info.version} is read by issue-4's converter path, not yet here",
                self.path / layout.INFO_PATH,
                "codebase_version",
            )
        self.mapping = mapping or LeRobotMapping()
        if not self.mapping.cameras:
            self.mapping.cameras = {
                k.split(".")[-1]: k for k in self.info.keys_of("image", "video") if k.startswith("observation.images.")
            }
        self._episodes = self._load_episode_table()
        self._tasks = self._load_tasks()

    def _load_episode_table(self) -> list[dict[str, Any]]:
        files = sorted((self.path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DataError("no episode metadata (meta/episodes/chunk-*/file-*.parquet)", self.path)
        rows: list[dict[str, Any]] = []
        for file in files:
            rows.extend(pq.read_table(file).to_pylist())
        rows.sort(key=lambda r: int(r["episode_index"]))
        return rows

    def _load_tasks(self) -> dict[int, str]:
        path = self.path / layout.TASKS_PATH
        if not path.is_file():
            raise DataError("missing tasks table", path)
        frame = pq.read_table(path).to_pandas()
        return {int(i): str(task) for task, i in zip(frame.index, frame["task_index"], strict=True)}

    def episode_keys(self) -> list[Any]:
        """The episodes' `meta/episodes` rows, in episode order."""
        return self._episodes

    def load_episode(self, key: Any) -> Episode:
        """The Episode of one `meta/episodes` row."""
        return self.to_episode(key, self.read_frames(key))

    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """Actions, state and task without reading any image."""
        m = self.mapping
        table = self.read_frames(key, columns=[k for k in (m.action, m.state) if k and k in self.info.features])
        actions = self.feature_array(table, key, m.action).astype(np.float32)
        features = self.info.features
        cameras = {cam: tuple(int(d) for d in features[k]["shape"]) for cam, k in m.cameras.items()}
        geometry = [name for name, keys in (("depth", m.depth), ("segmentation", m.segmentation)) if keys]
        return EpisodeSummary(
            episode_id=f"{int(key['episode_index']):06d}",
            length=len(actions),
            actions=actions,
            state=self.feature_array(table, key, m.state) if m.state and m.state in features else None,
            instructions=[self._tasks.get(int(i), "") for i in sorted(set(table.column("task_index").to_pylist()))],
            cameras=cameras,  # type: ignore[arg-type]
            geometry=geometry,
        )

    def episode_rows(self) -> list[dict[str, Any]]:
        """The `meta/episodes` rows (one dict per episode, extra columns included)."""
        return self._episodes

    def read_frames(self, row: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
        """The data-parquet rows of one episode (only `columns` plus the index columns, when given)."""
        path = self.path / self.info.raw["data_path"].format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
        )
        if not path.is_file():
            raise DataError("data file missing", path)
        try:
            table = pq.read_table(
                path,
                columns=None if columns is None else sorted({*columns, "episode_index", "frame_index", "task_index"}),
                filters=[("episode_index", "=", int(row["episode_index"]))],
            )
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"cannot read parquet ({exc})", path) from exc
        if table.num_rows != int(row["length"]):
            raise DataError(f"episode {row['episode_index']}: {table.num_rows} rows, meta says {row['length']}", path)
        return table.sort_by("frame_index")

    def feature_array(self, table: pa.Table, row: dict[str, Any], key: str) -> np.ndarray:
        """One feature of one episode as a numpy array with time first (images decoded)."""
        feature = self.info.features.get(key)
        where = f"{self.path}:episode {row['episode_index']}"
        if feature is None:
            raise DataError("feature not in meta/info.json", where, key)
        if feature["dtype"] == "video":
            video = self.path / self.info.raw["video_path"].format(
                video_key=key,
                chunk_index=int(row[f"videos/{key}/chunk_index"]),
                file_index=int(row[f"videos/{key}/file_index"]),
            )
            return decode_video(
                video,
                float(row[f"videos/{key}/from_timestamp"]),
                float(row[f"videos/{key}/to_timestamp"]),
                self.info.fps,
            )
        column = table.column(key).to_pylist()
        if feature["dtype"] == "image":
            return np.stack([decode_image_cell(c, f"{where}:{key}") for c in column])
        return np.asarray(column, dtype=np.dtype(feature["dtype"]))

    def to_episode(
        self, row: dict[str, Any], table: pa.Table, extra: Callable[..., dict[str, Any]] | None = None
    ) -> Episode:
        """Build the Episode of one meta row from its frames via the mapping."""
        m = self.mapping
        where = f"{self.path}:episode {row['episode_index']}"
        actions = self.feature_array(table, row, m.action)
        if not np.isfinite(actions).all():
            raise DataError("NaN/inf in actions", where, m.action)
        task_ids = table.column("task_index").to_pylist()
        fields: dict[str, Any] = {
            "episode_id": f"{int(row['episode_index']):06d}",
            "source": self.name,
            "frames": {cam: self.feature_array(table, row, key) for cam, key in m.cameras.items()},
            "actions": actions.astype(np.float32),
            "instruction": self._tasks.get(int(task_ids[0]), ""),
            "fps": self.info.fps,
            "state": self.feature_array(table, row, m.state).astype(np.float32)
            if m.state and m.state in self.info.features
            else None,
            "depth": {
                cam: self.feature_array(table, row, key).astype(np.float32) * m.depth_scale
                for cam, key in m.depth.items()
            },
            "segmentation": {
                cam: self.feature_array(table, row, key).astype(np.int32) for cam, key in m.segmentation.items()
            },
        }
        if extra is not None:
            fields.update(extra(self, row, table))
        return Episode(**fields)
