"""LeRobot v3.0 and v2.1 datasets -> Episode, through a mapping from LeRobot feature keys to Episode fields.

v3.0: `meta/info.json`, `meta/tasks.parquet`, `meta/episodes/*/*.parquet`, many episodes per data
parquet and mp4. v2.1: `meta/episodes.jsonl`, `meta/tasks.jsonl`, one parquet (and one mp4 per video
key) per episode. v2.1 episode rows are normalised to v3.0's columns on load, so everything after
that reads both the same way: one episode's rows of its data parquet (and its span of each mp4).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from datasets_build.actions import (
    ACTION_DIM,
    GRIPPER,
    gripper_from_continuous,
    gripper_from_relative_closedness,
    gripper_from_signed,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError, DataError, one_line
from datasets_build.lerobot import layout
from datasets_build.lerobot.video import decode_video
from datasets_build.sources.base import EpisodeLayout, EpisodeSummary, Source, register_source

OPEN_FILES = 64  # data parquet files a random-access reader keeps open
# How a dataset's stored gripper value maps to the convention (1 open, 0 closed), by LeRobotMapping.gripper.
GRIPPER_MODES: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "binary_open": lambda g, _t: g,  # already the convention: kept, checked by Episode
    "signed_open_positive": lambda g, _t: gripper_from_signed(g, open_value=1.0),  # +1 open, -1 close (CALVIN)
    "signed_close_positive": lambda g, _t: gripper_from_signed(g, open_value=-1.0),  # -1 open, +1 close (LIBERO)
    "continuous": lambda g, t: gripper_from_continuous(g, threshold=t),  # openness in [0, 1]
    "relative": lambda g, _t: gripper_from_relative_closedness(g),  # +1 close, -1 open, 0 keep (Fractal)
}


@dataclass
class LeRobotMapping:
    """Which LeRobot keys become which Episode fields, and how the stored action maps to the convention.

    Empty camera maps mean "every image/video feature". `action_dims` picks 7 columns of a longer
    stored action (in convention order, gripper last); `gripper` names the stored gripper's meaning.
    """

    action: str = "action"
    state: str | None = "observation.state"
    cameras: dict[str, str] = field(default_factory=dict)  # episode camera name -> feature key
    depth: dict[str, str] = field(default_factory=dict)  # camera -> feature key (uint16 mm PNG or float m)
    segmentation: dict[str, str] = field(default_factory=dict)
    depth_scale: float = 0.001  # metres per stored depth unit
    gripper: str = "binary_open"  # a key of GRIPPER_MODES
    gripper_threshold: float = 0.5  # "continuous": openness above this is open
    action_dims: tuple[int, ...] | None = None  # stored action columns -> the 7 convention dims

    def __post_init__(self) -> None:
        if self.gripper not in GRIPPER_MODES:
            raise ConfigError(f"unknown gripper mode {self.gripper!r}; available: {', '.join(GRIPPER_MODES)}")
        if self.action_dims is not None:
            self.action_dims = tuple(int(d) for d in self.action_dims)
            if len(self.action_dims) != ACTION_DIM or min(self.action_dims) < 0:
                raise ConfigError(
                    f"action_dims must be {ACTION_DIM} non-negative column indices, got {self.action_dims}"
                )

    def convert_actions(self, stored: np.ndarray, where: str) -> np.ndarray:
        """Stored action (T, D) -> float32 (T, 7) in the convention (DataError naming `where` and the key)."""
        stored = np.asarray(stored, dtype=np.float32)
        if stored.ndim != 2:
            raise DataError(f"expected (T, D), got {stored.shape}", where, self.action)
        if self.action_dims is not None:
            if max(self.action_dims) >= stored.shape[1]:
                raise DataError(
                    f"action_dims {self.action_dims} outside the stored {stored.shape[1]} dims", where, self.action
                )
            stored = stored[:, list(self.action_dims)]
        elif stored.shape[1] != ACTION_DIM:
            raise DataError(
                f"stored action has {stored.shape[1]} dims; set LeRobotMapping.action_dims to pick {ACTION_DIM}",
                where,
                self.action,
            )
        actions = np.array(stored, dtype=np.float32)  # a copy: the gripper column is rewritten
        actions[:, GRIPPER] = GRIPPER_MODES[self.gripper](stored[:, GRIPPER], self.gripper_threshold)
        return actions


def decode_image_cell(cell: dict[str, Any], where: str) -> np.ndarray:
    """A parquet image cell {bytes, path} -> array as stored (uint8 RGB/L or uint16)."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise DataError("image cell without bytes", where)
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError) as exc:  # not an image, or a truncated one
        raise DataError(f"cannot decode image ({one_line(exc)})", where) from exc
    if image.mode == "I;16":
        return np.asarray(image, dtype=np.uint16)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return np.asarray(image)


@register_source("lerobot")
class LeRobotSource(Source):
    """A LeRobot v3.0 or v2.1 dataset folder."""

    name = "lerobot"

    def __init__(
        self, path: Path, mapping: LeRobotMapping | dict[str, Any] | None = None, skip_bad: bool = False
    ) -> None:
        """`mapping` may be a dict of LeRobotMapping fields (as a recipe states it)."""
        super().__init__(path, skip_bad)
        self.info = layout.LeRobotInfo.load(self.path)  # DataError for a version other than v3.0/v2.1
        if isinstance(mapping, dict):
            try:
                mapping = LeRobotMapping(**mapping)
            except TypeError as exc:
                raise ConfigError(f"bad LeRobot mapping ({exc})") from exc
        self.mapping = mapping or LeRobotMapping()
        if not self.mapping.cameras:
            self.mapping.cameras = {
                k.split(".")[-1]: k for k in self.info.keys_of("image", "video") if k.startswith("observation.images.")
            }
        self._episodes = self._load_episode_table()
        self._tasks = self._load_tasks()
        self._row_groups: dict[Path, tuple[pq.ParquetFile, np.ndarray, np.ndarray, np.ndarray]] = {}
        self.random_access = self._cheap_frames()

    def _cheap_frames(self) -> bool:
        """Whether one frame reads cheaply: every camera is a video (one seek), or the data parquet keeps a row
        group per episode or so (the writers of this project and LeRobot's per-episode v2.1 files do)."""
        keys = list(self.mapping.cameras.values())
        if keys and all(self.info.features.get(k, {}).get("dtype") == "video" for k in keys):
            return True
        if not self._episodes:
            return False
        path = self._file_path("data_path", self._episodes[0], "data")
        try:
            meta = pq.ParquetFile(path).metadata
        except (OSError, pa.ArrowInvalid):
            return False
        lengths = [int(row["length"]) for row in self._episodes]
        return meta.num_rows / max(1, meta.num_row_groups) <= 4 * (sum(lengths) / len(lengths))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. into DataLoader workers) without open parquet files."""
        state = dict(self.__dict__)
        state["_row_groups"] = {}
        return state

    def _row_group_of(self, path: Path, episode: int, frame: int) -> tuple[pq.ParquetFile, int, int]:
        """(file, row group, row within it) of one frame, from the file's index columns (read once per file)."""
        if path not in self._row_groups:
            try:
                handle = pq.ParquetFile(path)
                index = handle.read(columns=["episode_index", "frame_index"])
            except (OSError, pa.ArrowInvalid) as exc:
                raise DataError(f"cannot read parquet ({exc})", path) from exc
            bounds = np.cumsum([0] + [handle.metadata.row_group(i).num_rows for i in range(handle.num_row_groups)])
            codes = (index.column("episode_index").to_numpy().astype(np.int64) << 32) | index.column(
                "frame_index"
            ).to_numpy().astype(np.int64)
            order = np.argsort(codes, kind="stable")
            if len(self._row_groups) >= OPEN_FILES:  # v2.1 keeps a file per episode: bound the open handles
                self._row_groups.pop(next(iter(self._row_groups)))[0].close()
            self._row_groups[path] = (handle, codes[order], order, bounds)
        handle, codes, order, bounds = self._row_groups[path]
        code = (episode << 32) | frame
        at = int(np.searchsorted(codes, code))
        if at >= len(codes) or codes[at] != code:
            raise DataError(f"no row for episode {episode} frame {frame}", path)
        row = int(order[at])
        group = int(np.searchsorted(bounds, row, side="right")) - 1
        return handle, group, row - int(bounds[group])

    @property
    def is_v21(self) -> bool:
        """Whether this is a v2.1 dataset (one file per episode, jsonl metadata)."""
        return self.info.version == "v2.1"

    def _load_episode_table(self) -> list[dict[str, Any]]:
        if self.is_v21:
            rows = [self._v3_row(r) for r in _read_jsonl(self.path / layout.LEGACY_EPISODES_PATH)]
        else:
            files = sorted((self.path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
            if not files:
                raise DataError("no episode metadata (meta/episodes/chunk-*/file-*.parquet)", self.path)
            rows = []
            for file in files:
                rows.extend(_check_row(row, file) for row in _read_parquet_rows(file))
        rows.sort(key=lambda r: int(r["episode_index"]))
        return rows

    def _v3_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A v2.1 `episodes.jsonl` row with v3.0's file/span columns added (its file is its own, chunked by index)."""
        where = self.path / layout.LEGACY_EPISODES_PATH
        for key in ("episode_index", "length"):
            if key not in row:
                raise DataError("missing in an episode row", where, key)
        row = _check_row(row, where, legacy=True)
        index = int(row["episode_index"])
        chunk = index // int(self.info.raw.get("chunks_size", layout.DEFAULT_CHUNK_SIZE))
        out = dict(row)
        out["data/chunk_index"], out["data/file_index"] = chunk, index
        for key in self.info.keys_of("video"):
            out[f"videos/{key}/chunk_index"], out[f"videos/{key}/file_index"] = chunk, index
            out[f"videos/{key}/from_timestamp"] = 0.0
            out[f"videos/{key}/to_timestamp"] = int(row["length"]) / self.info.fps
        return out

    def _load_tasks(self) -> dict[int, str]:
        if self.is_v21:
            rows = _read_jsonl(self.path / layout.LEGACY_TASKS_PATH)
            where = self.path / layout.LEGACY_TASKS_PATH
            try:
                return {int(r["task_index"]): task_text(r["task"], where) for r in rows}
            except KeyError as exc:
                raise DataError("missing in a task row", where, str(exc)) from exc
        path = self.path / layout.TASKS_PATH
        if not path.is_file():
            raise DataError("missing tasks table", path)
        table = _read_parquet(path)
        try:  # a column name that is not UTF-8, or corrupt pandas index metadata, fails here and not at read time
            if "task_index" in table.column_names:
                frame = table.to_pandas()
                pairs = zip(frame.index, frame["task_index"], strict=True)
                return {int(i): task_text(task, path) for task, i in pairs}
        except DataError:
            raise
        except (pa.ArrowException, ValueError, TypeError, OverflowError, KeyError) as exc:
            message = f"cannot read the tasks table ({type(exc).__name__}: {one_line(exc)})"
            raise DataError(message, path, "task_index") from exc
        raise DataError("missing column", path, "task_index")

    def _file_path(self, template_key: str, row: dict[str, Any], prefix: str, video_key: str = "") -> Path:
        """Fill info.json's `data_path`/`video_path`, whichever version's placeholders it uses."""
        chunk, file = int(row[f"{prefix}/chunk_index"]), int(row[f"{prefix}/file_index"])
        try:
            relative = self.info.raw[template_key].format(
                chunk_index=chunk,
                file_index=file,
                episode_chunk=chunk,  # v2.1 names
                episode_index=int(row["episode_index"]),
                video_key=video_key,
            )
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise DataError(
                f"cannot fill the path template ({exc})", self.path / layout.INFO_PATH, template_key
            ) from exc
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise DataError(f"{relative!r} leaves the dataset folder", self.path / layout.INFO_PATH, template_key)
        return self.path / relative

    def episode_keys(self) -> list[Any]:
        """The episodes' `meta/episodes` rows, in episode order."""
        return self._episodes

    def load_episode(self, key: Any) -> Episode:
        """The Episode of one `meta/episodes` row."""
        with _episode_errors(self.path, key):
            return self.to_episode(key, self.read_frames(key))

    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """Actions, state and task without reading any image."""
        with _episode_errors(self.path, key):
            return self._summarize_episode(key)

    def _summarize_episode(self, key: Any) -> EpisodeSummary:
        m = self.mapping
        table = self.read_frames(key, columns=[k for k in (m.action, m.state) if k and k in self.info.features])
        where = f"{self.path}:episode {key['episode_index']}"
        actions = m.convert_actions(self.feature_array(table, key, m.action), where)
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

    def episode_layout(self, key: Any) -> EpisodeLayout:
        """Actions and instruction of one episode (its action column and indices only)."""
        with _episode_errors(self.path, key):
            return self._episode_layout(key)

    def _episode_layout(self, key: Any) -> EpisodeLayout:
        m = self.mapping
        table = self.read_frames(key, columns=[m.action])
        where = f"{self.path}:episode {key['episode_index']}"
        actions = self.feature_array(table, key, m.action)
        if not np.isfinite(actions).all():
            raise DataError("NaN/inf in actions", where, m.action)
        task_ids = table.column("task_index").to_pylist()
        instruction = self._tasks.get(int(task_ids[0]), "") if task_ids else ""
        return EpisodeLayout(
            f"{int(key['episode_index']):06d}", m.convert_actions(actions, where), instruction, [], tuple(m.cameras)
        )

    def read_image(self, key: Any, camera: str, step: int) -> np.ndarray:
        """Frame `step` of `camera`: one parquet row (image features) or one frame of the episode's video span."""
        with _episode_errors(self.path, key):
            return self._read_image(key, camera, step)

    def _read_image(self, key: Any, camera: str, step: int) -> np.ndarray:
        feature_key = self.mapping.cameras.get(camera)
        where = f"{self.path}:episode {key['episode_index']}"
        if feature_key is None:
            raise DataError(f"no camera {camera!r} (has {list(self.mapping.cameras)})", where)
        if not 0 <= step < int(key["length"]):
            raise DataError(f"step {step} outside [0, {key['length']})", where)
        feature = self.info.features[feature_key]
        if feature["dtype"] == "video":
            video = self._file_path("video_path", key, f"videos/{feature_key}", video_key=feature_key)
            start = float(key[f"videos/{feature_key}/from_timestamp"]) + step / self.info.fps
            return decode_video(video, start, start + 1.0 / self.info.fps, self.info.fps)[0]
        path = self._file_path("data_path", key, "data")
        handle, group, row = self._row_group_of(path, int(key["episode_index"]), step)
        try:
            table = handle.read_row_group(group, columns=[feature_key], use_threads=False)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"cannot read parquet ({exc})", path) from exc
        image = decode_image_cell(table.column(feature_key)[row].as_py(), f"{where}:{feature_key}")
        if image.ndim != 3 or image.shape[-1] != 3:
            raise DataError(f"expected an RGB image, got {image.shape}", where, feature_key)
        return image

    def episode_rows(self) -> list[dict[str, Any]]:
        """The `meta/episodes` rows (one dict per episode, extra columns included)."""
        return self._episodes

    def read_frames(self, row: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
        """The data-parquet rows of one episode (only `columns` plus the index columns, when given)."""
        path = self._file_path("data_path", row, "data")
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
            video = self._file_path("video_path", row, f"videos/{key}", video_key=key)
            return decode_video(
                video,
                float(row[f"videos/{key}/from_timestamp"]),
                float(row[f"videos/{key}/to_timestamp"]),
                self.info.fps,
            )
        column = table.column(key).to_pylist()
        if feature["dtype"] == "image":
            frames = [decode_image_cell(c, f"{where}:{key}") for c in column]
            for step, frame in enumerate(frames):
                if frame.shape != frames[0].shape or frame.dtype != frames[0].dtype:
                    raise DataError(
                        f"frame {step} is {frame.dtype} {frame.shape}, frame 0 {frames[0].dtype} {frames[0].shape} "
                        "(images of one camera share one size and mode)",
                        where,
                        key,
                    )
            return np.stack(frames)
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
            "actions": m.convert_actions(actions, where),
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
        names = self.info.features.get(m.state, {}).get("names") if m.state else None
        if fields["state"] is not None and isinstance(names, list) and len(names) == fields["state"].shape[-1]:
            fields["meta"] = {"state_names": [str(n) for n in names]}
        if extra is not None:
            added = extra(self, row, table)
            if "meta" in added:
                added["meta"] = {**fields.get("meta", {}), **added["meta"]}
            fields.update(added)
        return Episode(**fields)


def task_text(task: Any, where: Path) -> str:
    """A task string as stored: text, or UTF-8 bytes decoded (bytes that are not UTF-8 are refused, never
    put into a prompt as "b'...'")."""
    if isinstance(task, bytes):
        try:
            return task.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"task {task[:20]!r} is bytes that are not UTF-8 text", where, "task") from exc
    if not isinstance(task, str):
        raise DataError(f"task must be text, got {type(task).__name__}", where, "task")
    return task


def _read_parquet(path: Path) -> pa.Table:
    """A parquet file as a table (DataError naming the file when it is not a readable parquet file)."""
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot read parquet ({one_line(exc)})", path) from exc


@contextlib.contextmanager
def _episode_errors(root: Path, row: dict[str, Any]) -> Iterator[None]:
    """Turn what malformed data makes pyarrow/numpy raise while reading one episode into a one-line DataError."""
    try:
        yield
    except (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        if isinstance(exc, DataError):
            raise
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        raise DataError(
            f"cannot read episode ({type(exc).__name__}: {text})", f"{root}:episode {row.get('episode_index')}"
        ) from exc


def _read_parquet_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a metadata parquet file as dicts (DataError naming the file when it is not readable parquet)."""
    table = _read_parquet(path)
    try:
        return list(table.to_pylist())
    except (pa.ArrowException, ValueError) as exc:  # e.g. string columns that are not UTF-8
        raise DataError(f"cannot read parquet rows ({type(exc).__name__}: {one_line(exc)})", path) from exc


_ROW_INTS = ("episode_index", "length", "data/chunk_index", "data/file_index")


def _check_row(row: dict[str, Any], where: Path, legacy: bool = False) -> dict[str, Any]:
    """One episode row with the integer columns the reader uses checked (DataError naming file and column)."""
    for key in _ROW_INTS[:2] if legacy else _ROW_INTS:
        value = row.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"must be an integer >= 0, got {value!r}", f"{where}: episode row", key)
    return row


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (DataError naming the file and line when one is not a JSON object)."""
    if not path.is_file():
        raise DataError("missing", path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise DataError(f"invalid JSON ({exc})", f"{path}:{number}") from exc
        if not isinstance(row, dict):
            raise DataError("expected a JSON object per line", f"{path}:{number}")
        rows.append(row)
    return rows
