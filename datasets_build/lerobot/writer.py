"""Write LeRobot v3.0 datasets: many episodes per parquet/mp4 file, meta/ tables, stats.

Streaming: each episode is appended as one parquet row group (and, for video features, to an open
mp4 stream), so memory holds one episode. The dataset is built in a temporary folder beside the
target and renamed into place by `close()`; an interrupted write leaves no dataset under the
final name.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from datasets_build.atomic import CommitOrAbort
from datasets_build.errors import DataError
from datasets_build.lerobot import layout
from datasets_build.lerobot.video import VideoStreamWriter
from datasets_build.outputs import check_output_folder, commit_folder, partial_folder
from datasets_build.stats import RunningStats, feature_stats

OUTPUT_KIND = "lerobot"  # the marker kind of a LeRobot dataset this writer wrote (datasets_build.outputs)
_NUMERIC = {"float32", "float64", "int64", "int32", "bool"}


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _arrow_type(feature: Mapping[str, Any]) -> pa.DataType:
    dtype = feature["dtype"]
    if dtype == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    value = pa.from_numpy_dtype(np.dtype(dtype))
    shape = list(feature["shape"])
    if shape == [1]:
        return value
    if len(shape) != 1:
        raise DataError(f"only 1-D numeric features are written (flatten {shape})", "features", str(feature))
    return pa.list_(value, shape[0])  # what datasets.Sequence(length=n) stores


def check_output(root: Path, overwrite: bool) -> None:
    """Refuse an unwritable `root`, or an existing non-empty one unless `overwrite` may replace it (checked
    before any work; see datasets_build.outputs)."""
    check_output_folder(root, OUTPUT_KIND, overwrite)


def prepare_output(root: Path, overwrite: bool) -> Path:
    """Check `root` may be written and return the temporary folder to build into."""
    check_output(root, overwrite)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder ({exc.strerror})", root.parent) from exc
    tmp = partial_folder(root)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise DataError(f"output folder is not writable ({exc.strerror})", root.parent) from exc
    return tmp


class LeRobotWriter(CommitOrAbort):
    """Append episodes to a new LeRobot v3.0 dataset at `root`.

    `features` is LeRobot's feature dict without the default columns (added here). Frame columns
    passed to `add_episode` are arrays with time first; "image" features take uint8 (T,H,W,3),
    uint8 (T,H,W) or uint16 (T,H,W) arrays (stored as PNG), "video" features uint8 (T,H,W,3).
    """

    def __init__(
        self,
        root: str | Path,
        fps: int,
        features: Mapping[str, Mapping[str, Any]],
        *,
        robot_type: str | None = None,
        overwrite: bool = False,
        video_codec: str = "libsvtav1",
        data_file_size_in_mb: int = layout.DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_file_size_in_mb: int = layout.DEFAULT_VIDEO_FILE_SIZE_IN_MB,
        chunks_size: int = layout.DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.root = Path(root)
        self.fps = fps
        self.features = {k: dict(v) for k, v in features.items()}
        for key in self.features:
            if key in layout.DEFAULT_FEATURES:
                raise DataError("is a reserved LeRobot column", "features", key)
        self.all_features = {**self.features, **layout.DEFAULT_FEATURES}
        self.robot_type = robot_type
        self.video_codec = video_codec
        self.data_limit = data_file_size_in_mb * 1024 * 1024
        self.video_limit = video_file_size_in_mb * 1024 * 1024
        self.chunks_size = chunks_size
        self._tmp = prepare_output(self.root, overwrite)
        self._schema = pa.schema([(k, _arrow_type(f)) for k, f in self.all_features.items() if f["dtype"] != "video"])
        self._data_file = 0
        self._data_writer: pq.ParquetWriter | None = None
        self._data_path: Path | None = None
        self._videos: dict[str, VideoStreamWriter] = {}
        self._video_file: dict[str, int] = {}
        self._episodes: list[dict[str, Any]] = []
        self._tasks: dict[str, int] = {}
        self._numeric = {
            k: RunningStats(int(np.prod(f["shape"]))) for k, f in self.features.items() if f["dtype"] in _NUMERIC
        }
        self._frames = 0
        self._closed = False

    # -- helpers -------------------------------------------------------------------------------
    def _index(self, file_index: int) -> dict[str, int]:
        return {"chunk_index": file_index // self.chunks_size, "file_index": file_index % self.chunks_size}

    def _open_data_file(self) -> None:
        self._data_path = self._tmp / layout.DATA_PATH.format(**self._index(self._data_file))
        self._data_path.parent.mkdir(parents=True, exist_ok=True)
        self._data_writer = pq.ParquetWriter(self._data_path, self._schema)

    def _column(self, key: str, values: Any, length: int) -> pa.Array:
        feature = self.all_features[key]
        if feature["dtype"] == "image":
            arr = np.asarray(values)
            return pa.array(
                [{"bytes": _png_bytes(arr[t]), "path": None} for t in range(length)], type=self._schema.field(key).type
            )
        arr = np.asarray(values, dtype=np.dtype(feature["dtype"]))
        expected = tuple(feature["shape"])
        got = arr.shape[1:] if expected != (1,) else (arr.shape[1:] or (1,))
        if got != expected:
            raise DataError(f"expected per-frame shape {expected}, got {arr.shape[1:]}", self.root, key)
        if expected == (1,):
            return pa.array(arr.reshape(length))
        return pa.array(arr.reshape(length, *expected).tolist(), type=self._schema.field(key).type)

    # -- public API ----------------------------------------------------------------------------
    def add_episode(self, columns: Mapping[str, Any], task: str, extra: Mapping[str, Any] | None = None) -> int:
        """Append one episode; `columns` holds every user feature; `extra` adds columns to its meta row."""
        missing = set(self.features) - set(columns)
        if missing:
            raise DataError(f"episode lacks features {sorted(missing)}", self.root, "columns")
        length = len(next(iter(columns.values())))
        if length == 0:
            raise DataError("empty episode", self.root, "columns")
        for key, values in columns.items():
            if len(values) != length:
                raise DataError(f"{len(values)} frames, expected {length}", self.root, key)
        episode_index = len(self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        defaults = {
            "timestamp": np.arange(length, dtype=np.float32) / self.fps,
            "frame_index": np.arange(length),
            "episode_index": np.full(length, episode_index),
            "index": np.arange(self._frames, self._frames + length),
            "task_index": np.full(length, task_index),
        }
        row: dict[str, Any] = {
            "episode_index": episode_index,
            "tasks": [task],
            "length": length,
        }
        table_columns = {**columns, **defaults}
        if self._data_writer is None:
            self._open_data_file()
        table = pa.table(
            {k: self._column(k, table_columns[k], length) for k in self._schema.names}, schema=self._schema
        )
        assert self._data_writer is not None
        assert self._data_path is not None
        self._data_writer.write_table(table)
        row.update({f"data/{k}": v for k, v in self._index(self._data_file).items()})
        row["dataset_from_index"] = self._frames
        row["dataset_to_index"] = self._frames + length
        for key, feature in self.features.items():
            if feature["dtype"] == "video":
                row.update(self._add_video(key, np.asarray(columns[key])))
        for key in self._numeric:
            values = np.asarray(columns[key], dtype=np.float64).reshape(length, -1)
            self._numeric[key].update(values)
            for name, value in feature_stats(values).items():
                row[f"stats/{key}/{name}"] = value
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        row.update(extra or {})
        self._episodes.append(row)
        self._frames += length
        if self._data_path.stat().st_size > self.data_limit:
            self._data_writer.close()
            self._data_writer = None
            self._data_file += 1
        return episode_index

    def _add_video(self, key: str, frames: np.ndarray) -> dict[str, Any]:
        stream = self._videos.get(key)
        file_index = self._video_file.setdefault(key, 0)
        if stream is not None and stream.bytes_written() > self.video_limit:
            stream.close()
            stream = None
            file_index = self._video_file[key] = file_index + 1
        if stream is None:
            path = self._tmp / layout.VIDEO_PATH.format(video_key=key, **self._index(file_index))
            stream = self._videos[key] = VideoStreamWriter(
                path, self.fps, frames.shape[2], frames.shape[1], self.video_codec
            )
        start = stream.frames_written / self.fps
        stream.write(frames)
        index = self._index(file_index)
        return {
            f"videos/{key}/chunk_index": index["chunk_index"],
            f"videos/{key}/file_index": index["file_index"],
            f"videos/{key}/from_timestamp": start,
            f"videos/{key}/to_timestamp": stream.frames_written / self.fps,
        }

    def close(self) -> Path:
        """Finish every file, write meta/ (info, tasks, episodes, stats) and move the dataset into place."""
        if self._closed:
            return self.root
        if self._data_writer is not None:
            self._data_writer.close()
        video_info: dict[str, dict[str, Any]] = {}
        for key, stream in self._videos.items():
            video_info[key] = stream.close()
        meta = self._tmp / "meta"
        meta.mkdir(exist_ok=True)
        tasks = pd.DataFrame({"task_index": list(self._tasks.values())}, index=list(self._tasks))
        tasks.to_parquet(self._tmp / layout.TASKS_PATH)
        episodes_path = self._tmp / layout.EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self._episodes), episodes_path)
        stats = {k: v.result() for k, v in self._numeric.items() if v.count}
        (self._tmp / layout.STATS_PATH).write_text(json.dumps(stats, indent=2))
        features = {}
        for key, feature in self.all_features.items():
            entry = dict(feature)
            if key in video_info:
                entry["info"] = {**video_info[key], **entry.get("info", {})}
            features[key] = entry
        info = {
            "codebase_version": layout.CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self._frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_limit // (1024 * 1024),
            "video_files_size_in_mb": self.video_limit // (1024 * 1024),
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": layout.DATA_PATH,
            "video_path": layout.VIDEO_PATH if self._videos else None,
            "features": features,
        }
        (self._tmp / layout.INFO_PATH).write_text(json.dumps(info, indent=4))
        commit_folder(self._tmp, self.root, OUTPUT_KIND)
        self._closed = True
        return self.root

    def abort(self) -> None:
        """Drop everything written so far (the final folder is never touched)."""
        if self._data_writer is not None:
            self._data_writer.close()
        for stream in self._videos.values():
            stream.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._closed = True
