"""CALVIN splits -> Episode: language-annotated windows (default) or whole play segments.

A split folder (`task_ABC_D/training`, `.../validation`) holds one compressed npz per frame under
global contiguous indices, `ep_start_end_ids.npy` (play segments, inclusive [start, end]),
`scene_info.npy` (training: `calvin_scene_X` -> inclusive frame range), `lang_annotations/
auto_lang_ann.npy` (instructions with inclusive windows) and `.hydra/merged_config.yaml` (the
rendering config, cameras included). Pickled files go through the restricted unpickler; each npz
member is read on its own, so unused ones (tactile, absolute actions) are never decompressed.
"""

from __future__ import annotations

import io
import math
import os
import re
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from datasets_build.actions import GRIPPER, gripper_from_calvin
from datasets_build.camera import CameraModel
from datasets_build.episode import Episode, LanguageWindow, ObjectInfo
from datasets_build.errors import ConfigError, DataError
from datasets_build.safe_pickle import load_npy, load_npy_object, read_header
from datasets_build.sources.base import EpisodeLayout, EpisodeSummary, Source, register_source

# Episode camera name -> (rgb key, depth key) in a CALVIN frame npz.
CAMERA_KEYS: dict[str, tuple[str, str]] = {
    "static": ("rgb_static", "depth_static"),
    "wrist": ("rgb_gripper", "depth_gripper"),
}
MODES = ("language", "segments")
ACTION_KEY = "rel_actions"
STATE_KEY = "robot_obs"
# calvin_env's robot_obs layout: TCP position, TCP euler angles, gripper opening width, 7 joints, gripper action.
STATE_NAMES: tuple[str, ...] = (
    *("x", "y", "z", "roll", "pitch", "yaw", "gripper_width"),
    *(f"joint_{i}" for i in range(7)),
    "gripper_action",
)
SCENE_KEY = "scene_obs"
# rel_actions = clip(delta, +-scale) / scale: metres / radians per unit of dims 0-2 / 3-5.
TRANSLATION_SCALE = 0.02
ROTATION_SCALE = 0.05
DEFAULT_FPS = 30.0  # calvin_env's control frequency, used when the config does not name one
# scene_obs: sliding door, drawer, button, switch, lightbulb, green light, then one pose per block.
SCENE_SCALARS = 6
DEFAULT_BLOCKS = ("block_red", "block_blue", "block_pink")
# calvin_env's conf/cameras/cameras/static.yaml (fov is vertical, degrees); used without a config.
DEFAULT_STATIC_CAMERA: dict[str, Any] = {
    "fov": 10.0,
    "width": 200,
    "height": 200,
    "look_from": [2.871459009488717, -2.166602199425597, 2.555159848480571],
    "look_at": [-0.026242351159453392, -0.0302329882979393, 0.3920000493526459],
    "up_vector": [0.4041403970338857, 0.22629790978217404, 0.8862616969685161],
}
# Full extents (x, y, z) of calvin_env's block URDFs by size suffix, before the scene's global_scaling.
BLOCK_EXTENTS: dict[str, tuple[float, float, float]] = {
    "small": (0.05, 0.05, 0.05),
    "middle": (0.07, 0.05, 0.05),
    "big": (0.10, 0.05, 0.05),
}
_FRAME_NAME = re.compile(r"^(.*?)(\d+)\.npz$")
_SCENE_NAME = re.compile(r"^(?:calvin_scene_)?([A-Za-z0-9]+)$")


@dataclass(frozen=True)
class CalvinKey:
    """One episode: global frames [start, stop), the segment row or annotation it comes from, its scene."""

    start: int
    stop: int
    index: int
    scene: str | None


@dataclass
class _Annotations:
    """auto_lang_ann.npy as arrays: inclusive windows, instructions and task names."""

    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ends: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # inclusive
    texts: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)


def _dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]... or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _brief(exc: BaseException, limit: int = 160) -> str:
    """'Type: message', cut short (zipfile quotes whole corrupted headers in its messages)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _inclusive_range(bounds: Any) -> tuple[int, int]:
    """A scene_info value [first, last] as two ints."""
    first, last = (int(b) for b in bounds)
    return first, last


def scene_letter(name: str) -> str:
    """'calvin_scene_A' / 'A' / 'a' -> 'A'."""
    match = _SCENE_NAME.match(str(name).strip())
    if not match:
        raise ConfigError(f"not a CALVIN scene name: {name!r}")
    return match.group(1).upper()


def euler_to_quaternion(euler: np.ndarray) -> np.ndarray:
    """pybullet/CALVIN euler angles (roll about x, pitch about y, yaw about z; R = Rz Ry Rx) -> xyzw."""
    return Rotation.from_euler("xyz", np.asarray(euler, dtype=np.float64).reshape(-1, 3)).as_quat()


@register_source("calvin")
class CalvinSource(Source):
    """One split of a CALVIN task folder; `path` is the task folder or the split folder itself.

    `mode="language"` yields one Episode per annotation (its inclusive window becomes the whole
    episode, `language=[LanguageWindow(0, T)]`); `mode="segments"` yields one per row of
    `ep_start_end_ids.npy` (cut into pieces of at most `max_segment_length` frames when given) with
    the annotations inside as language windows. `scenes` (e.g. ["A", "B"]) keeps episodes whose
    first frame lies in one of those scenes of `scene_info.npy`; a split without `scene_info.npy`
    named `validation` is scene D (CALVIN evaluates every task on D). Upstream's task_D_D training
    `scene_info.npy` names that range `calvin_scene_A` in early downloads; it is read as written.
    Actions keep CALVIN's normalised `rel_actions` scale (times 0.02 m / 0.05 rad per unit).
    """

    name = "calvin"
    random_access = True  # one npz per frame

    def __init__(
        self,
        path: str | Path,
        skip_bad: bool = False,
        split: str = "training",
        mode: str = "language",
        scenes: Sequence[str] | None = None,
        cameras: Sequence[str] = ("static", "wrist"),
        load_depth: bool = True,
        max_segment_length: int | None = None,
    ) -> None:
        super().__init__(path, skip_bad)
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        unknown = [c for c in cameras if c not in CAMERA_KEYS]
        if unknown:
            raise ConfigError(f"unknown CALVIN camera(s) {unknown}; available: {', '.join(CAMERA_KEYS)}")
        if max_segment_length is not None and max_segment_length < 1:
            raise ConfigError(f"max_segment_length must be >= 1, got {max_segment_length}")
        self.mode = mode
        self.cameras = tuple(cameras)
        self.load_depth = load_depth
        self.max_segment_length = max_segment_length
        self.split_dir = self._find_split(split)
        self.split = self.split_dir.name
        self.segments = self._load_segments()
        self.scene_ranges = self._load_scene_info()
        self.config_path = self.split_dir / ".hydra" / "merged_config.yaml"
        self.config = self._load_config()
        self.static_camera_config, self.camera_source = self._static_camera_config()
        self.fps = self._fps()
        self.annotations = self._load_annotations(required=mode == "language")
        self.block_names = self._block_names()
        self.config_scene, self.block_sizes = self._block_sizes()
        self.scenes = self._check_scenes(scenes)
        self._frame_format: tuple[str, int] | None = None
        self._camera_cache: dict[tuple[int, int], CameraModel] = {}
        self._headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
        self._keys = self._make_keys()

    # ---- layout -------------------------------------------------------------------------------

    def _find_split(self, split: str) -> Path:
        for candidate in (self.path / split, self.path):
            if (candidate / "ep_start_end_ids.npy").is_file():
                return candidate
        raise DataError(f"no CALVIN split: expected {split}/ep_start_end_ids.npy or ep_start_end_ids.npy", self.path)

    def _load_segments(self) -> np.ndarray:
        path = self.split_dir / "ep_start_end_ids.npy"
        ids = load_npy(path)
        if ids.ndim != 2 or ids.shape[1] != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"expected integer (N, 2), got {ids.dtype} {ids.shape}", path)
        return ids.astype(np.int64)

    def _load_scene_info(self) -> dict[str, tuple[int, int]] | None:
        path = self.split_dir / "scene_info.npy"
        if not path.is_file():
            return None
        info = load_npy_object(path)
        if not isinstance(info, dict):
            raise DataError(f"expected a pickled dict, got {type(info).__name__}", path)
        try:
            return {scene_letter(name): _inclusive_range(bounds) for name, bounds in info.items()}
        except (TypeError, ValueError, ConfigError) as exc:
            raise DataError(f"bad entry ({exc})", path) from exc

    def _load_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            return {}
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot parse YAML ({exc})", self.config_path) from exc
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise DataError("expected a mapping", self.config_path)
        return data

    def _static_camera_config(self) -> tuple[dict[str, Any], str]:
        """The static camera's look_from/look_at/up_vector/fov/aspect from the config, else the defaults."""
        cameras = self.config.get("cameras")
        entries: Iterable[tuple[str, Any]] = ()
        if isinstance(cameras, dict):
            entries = cameras.items()
        elif isinstance(cameras, list):
            entries = ((str(i), c) for i, c in enumerate(cameras))
        entry: dict[str, Any] | None = None
        for key, cam in entries:
            if not isinstance(cam, dict):
                continue
            if key == "static" or cam.get("name") == "static" or "StaticCamera" in str(cam.get("_target_", "")):
                entry = cam
                break
        if entry is None:
            return dict(DEFAULT_STATIC_CAMERA), "defaults"
        parsed: dict[str, Any] = {}
        for key in ("look_from", "look_at", "up_vector"):
            parsed[key] = self._config_vector(entry, key)
        for key in ("fov", "aspect", "width", "height"):
            if key in entry:
                try:
                    parsed[key] = float(entry[key])
                except (TypeError, ValueError) as exc:
                    raise DataError(f"not a number: {entry[key]!r}", self.config_path, f"cameras.static.{key}") from exc
        if "fov" not in parsed:
            raise DataError("missing", self.config_path, "cameras.static.fov")
        return parsed, "merged_config"

    def _config_vector(self, entry: dict[str, Any], key: str) -> np.ndarray:
        if key not in entry:
            raise DataError("missing", self.config_path, f"cameras.static.{key}")
        try:
            vec = np.asarray(entry[key], dtype=np.float64).reshape(3)
        except (TypeError, ValueError) as exc:
            where = f"cameras.static.{key}"
            raise DataError(f"expected 3 numbers, got {entry[key]!r}", self.config_path, where) from exc
        return vec

    def _fps(self) -> float:
        freq = _dig(self.config, "env", "control_freq")
        return float(freq) if isinstance(freq, (int, float)) and freq > 0 else DEFAULT_FPS

    def _load_annotations(self, required: bool) -> _Annotations:
        path = self.split_dir / "lang_annotations" / "auto_lang_ann.npy"
        if not path.is_file():
            if required:
                raise DataError("missing language annotations (mode='language' needs them)", path)
            return _Annotations()
        data = load_npy_object(path)
        try:
            language = data["language"]
            texts = [str(t) for t in language["ann"]]
            tasks = [str(t) for t in language["task"]] if "task" in language else [""] * len(texts)
            bounds = [(int(s), int(e)) for s, e in data["info"]["indx"]]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"unexpected layout ({_brief(exc)})", path, "language.ann/info.indx") from exc
        if not len(texts) == len(tasks) == len(bounds):
            raise DataError(f"{len(texts)} ann, {len(tasks)} task, {len(bounds)} indx entries", path)
        array = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)
        return _Annotations(array[:, 0].copy(), array[:, 1].copy(), texts, tasks)

    def _block_names(self) -> tuple[str, ...]:
        """Block order in scene_obs: the config's movable objects (calvin_env concatenates them in that order)."""
        names = tuple(self._movable_objects())
        return names if sorted(names) == sorted(DEFAULT_BLOCKS) else DEFAULT_BLOCKS

    def _movable_objects(self) -> dict[str, Any]:
        movable = _dig(self.config, "scene", "objects", "movable_objects")
        return movable if isinstance(movable, dict) else {}

    def _block_sizes(self) -> tuple[str | None, dict[str, np.ndarray]]:
        """(scene the config renders, block extents in metres) from the config's URDF names and scaling."""
        table = str(_dig(self.config, "scene", "objects", "fixed_objects", "table", "file") or "")
        match = re.search(r"calvin_table_([A-Za-z0-9]+)", table)
        scaling = _dig(self.config, "scene", "global_scaling")
        if match is None or not isinstance(scaling, (int, float)):
            return None, {}
        sizes: dict[str, np.ndarray] = {}
        for name, cfg in self._movable_objects().items():
            suffix = re.search(r"_(small|middle|big)\.urdf$", str(cfg.get("file", "")) if isinstance(cfg, dict) else "")
            if suffix:
                sizes[name] = np.asarray(BLOCK_EXTENTS[suffix.group(1)], dtype=np.float32) * float(scaling)
        return match.group(1).upper(), sizes

    def _check_scenes(self, scenes: Sequence[str] | None) -> frozenset[str] | None:
        if scenes is None:
            return None
        wanted = frozenset(scene_letter(s) for s in scenes)
        available = self.available_scenes()
        if not available:
            raise DataError("no scene_info.npy: cannot select scenes", self.split_dir)
        missing = sorted(wanted - set(available))
        if missing:
            raise ConfigError(f"scene(s) {', '.join(missing)} not in {self.split_dir} (has {', '.join(available)})")
        return wanted

    def available_scenes(self) -> list[str]:
        """Scene letters of this split (from scene_info.npy; ['D'] for a validation split without it)."""
        if self.scene_ranges is not None:
            return sorted(self.scene_ranges)
        return ["D"] if self.split == "validation" else []

    def scene_of(self, frame: int) -> str | None:
        """The scene holding global frame index `frame` (None when unknown)."""
        if self.scene_ranges is None:
            return "D" if self.split == "validation" else None
        for scene, (first, last) in self.scene_ranges.items():
            if first <= frame <= last:
                return scene
        return None

    # ---- keys -----------------------------------------------------------------------------------

    def _make_keys(self) -> list[CalvinKey]:
        keys: list[CalvinKey] = []
        if self.mode == "language":
            for i, (start, end) in enumerate(zip(self.annotations.starts, self.annotations.ends, strict=True)):
                keys.append(CalvinKey(int(start), int(end) + 1, i, self.scene_of(int(start))))
        else:
            step = self.max_segment_length
            for i, (start, end) in enumerate(self.segments):
                stop = int(end) + 1
                starts = range(int(start), stop, step) if step and stop > start else [int(start)]
                keys.extend(CalvinKey(s, min(stop, s + step) if step else stop, i, self.scene_of(s)) for s in starts)
        if self.scenes is not None:
            keys = [k for k in keys if k.scene in self.scenes]
        return keys

    def episode_keys(self) -> list[Any]:
        """Annotation windows or play segments as global frame ranges, in file order."""
        return list(self._keys)

    # ---- frames ---------------------------------------------------------------------------------

    def _frame_name_format(self) -> tuple[str, int]:
        """(prefix, digits) of the frame files, from the first .npz in the split folder."""
        if self._frame_format is None:
            with os.scandir(self.split_dir) as entries:
                for entry in entries:
                    match = _FRAME_NAME.match(entry.name)
                    if match and entry.is_file():
                        self._frame_format = (match.group(1), len(match.group(2)))
                        break
            if self._frame_format is None:
                raise DataError("no frame .npz files", self.split_dir)
        return self._frame_format

    def frame_path(self, index: int) -> Path:
        """The npz file of global frame `index`."""
        prefix, digits = self._frame_name_format()
        return self.split_dir / f"{prefix}{index:0{digits}d}.npz"

    def _open(self, index: int) -> tuple[Path, zipfile.ZipFile]:
        path = self.frame_path(index)
        try:
            return path, zipfile.ZipFile(path)
        except FileNotFoundError as exc:
            raise DataError("frame file missing", path, "npz") from exc
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise DataError(f"cannot open npz ({_brief(exc)})", path, "npz") from exc

    def _member(self, archive: zipfile.ZipFile, path: Path, key: str) -> np.ndarray:
        """One npz member as an array: inflate it once, parse its .npy header (cached), view the bytes."""
        try:
            data = archive.read(f"{key}.npy")
        except KeyError as exc:
            raise DataError("missing key", path, key) from exc
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise DataError(f"cannot read ({_brief(exc)})", path, key) from exc
        major = data[6] if len(data) > 8 and data[:6] == b"\x93NUMPY" else 0
        if major not in (1, 2, 3):
            raise DataError("not an .npy member", path, key)
        size = 2 if major == 1 else 4
        offset = 8 + size + int.from_bytes(data[8 : 8 + size], "little")
        header = data[:offset]
        parsed = self._headers.get(header)
        if parsed is None:
            shape, fortran, dtype = read_header(io.BytesIO(header), f"{path}:{key}")
            if dtype.hasobject:
                raise DataError("object arrays are not read from frame files", path, key)
            parsed = self._headers[header] = (tuple(shape), fortran, dtype)
        shape, fortran, dtype = parsed
        count = math.prod(shape)
        if len(data) - offset != count * dtype.itemsize:
            raise DataError(f"{len(data) - offset} data bytes for {dtype} {shape}", path, key)
        return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(
            shape, order="F" if fortran else "C"
        )

    def read_frames(self, start: int, stop: int, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Members `keys` of frames [start, stop), stacked along a new first axis."""
        out: dict[str, np.ndarray] = {}
        length = stop - start
        last = self.frame_path(stop - 1)
        if length > 0 and not last.is_file():  # before allocating `length` frames (a corrupt range can be huge)
            raise DataError("frame file missing", last, "npz")
        for t in range(length):
            path, archive = self._open(start + t)
            with archive:
                for key in keys:
                    value = self._member(archive, path, key)
                    if t == 0:
                        out[key] = np.empty((length, *value.shape), dtype=value.dtype)
                    elif value.shape != out[key].shape[1:]:
                        raise DataError(f"shape {value.shape}, first frame had {out[key].shape[1:]}", path, key)
                    out[key][t] = value
        return out

    def _member_shape(self, index: int, key: str) -> tuple[int, ...]:
        """Shape of one npz member from its .npy header alone (nothing decompressed past it)."""
        path = self.frame_path(index)
        try:
            with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
                shape, _, _ = read_header(member, f"{path}:{key}")
        except KeyError as exc:
            raise DataError("missing key", path, key) from exc
        except FileNotFoundError as exc:
            raise DataError("frame file missing", path, "npz") from exc
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise DataError(f"cannot open npz ({_brief(exc)})", path, "npz") from exc
        return tuple(int(d) for d in shape)

    # ---- conversion -----------------------------------------------------------------------------

    def _check_key(self, key: CalvinKey) -> None:
        if key.stop <= key.start:
            file = "lang_annotations/auto_lang_ann.npy" if self.mode == "language" else "ep_start_end_ids.npy"
            where = f"{self.split_dir / file}[{key.index}]"
            raise DataError(f"empty episode: end {key.stop - 1} < start {key.start}", where, "length")

    def _actions(self, rel: np.ndarray, start: int) -> np.ndarray:
        if rel.ndim != 2 or rel.shape[1] != 7:
            raise DataError(f"expected (7,) per frame, got {rel.shape[1:]}", self.frame_path(start), ACTION_KEY)
        finite = np.isfinite(rel).all(axis=1)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise DataError("NaN/inf in actions", self.frame_path(start + bad), ACTION_KEY)
        actions = rel.astype(np.float32)
        actions[:, GRIPPER] = gripper_from_calvin(rel[:, GRIPPER])
        return actions

    def _objects(self, scene_obs: np.ndarray, key: CalvinKey) -> dict[str, ObjectInfo]:
        """The three blocks' poses from scene_obs (6 scalars, then xyz + euler, or xyz + quaternion, per block)."""
        where = self.frame_path(key.start)
        if scene_obs.ndim != 2:
            raise DataError(f"expected a vector per frame, got {scene_obs.shape[1:]}", where, SCENE_KEY)
        width = scene_obs.shape[1] - SCENE_SCALARS
        per = width // len(self.block_names) if width > 0 and width % len(self.block_names) == 0 else 0
        if per not in (6, 7):
            raise DataError(f"length {scene_obs.shape[1]}: expected 6 + 3 x (6 or 7)", where, SCENE_KEY)
        sizes = self.block_sizes if key.scene is not None and key.scene == self.config_scene else {}
        objects: dict[str, ObjectInfo] = {}
        for i, name in enumerate(self.block_names):
            pose = scene_obs[:, SCENE_SCALARS + i * per : SCENE_SCALARS + (i + 1) * per].astype(np.float64)
            orientation = euler_to_quaternion(pose[:, 3:6]) if per == 6 else pose[:, 3:7]
            label = f"{name.removeprefix('block_')} block"
            objects[label] = ObjectInfo(
                name=label, positions=pose[:, :3], orientations=orientation, size=sizes.get(name), category="block"
            )
        return objects

    def static_camera(self, height: int, width: int) -> CameraModel:
        """The static camera for images of this size (pybullet: vertical fov, x focal = y focal / aspect * W/H)."""
        cached = self._camera_cache.get((height, width))
        if cached is not None:
            return cached
        cfg = self.static_camera_config
        model = CameraModel.from_look_at(cfg["look_from"], cfg["look_at"], cfg["up_vector"], cfg["fov"], width, height)
        aspect = cfg.get("aspect")
        if aspect and not math.isclose(float(aspect), width / height):
            intrinsics = model.intrinsics.copy()
            intrinsics[0, 0] = width / (2.0 * float(aspect) * math.tan(math.radians(cfg["fov"]) / 2.0))
            model = CameraModel(intrinsics, model.extrinsics, width, height)
        self._camera_cache[(height, width)] = model
        return model

    def _language(self, key: CalvinKey) -> tuple[str, str, list[LanguageWindow]]:
        """(instruction, task, windows) of an episode."""
        ann = self.annotations
        if self.mode == "language":
            text, task = ann.texts[key.index], ann.tasks[key.index]
            return text, task, [LanguageWindow(0, key.stop - key.start, text, task)]
        inside = np.flatnonzero((ann.starts < key.stop) & (ann.ends + 1 > key.start) & (ann.ends >= ann.starts))
        windows = [
            LanguageWindow(
                int(max(ann.starts[i], key.start) - key.start),
                int(min(ann.ends[i] + 1, key.stop) - key.start),
                ann.texts[i],
                ann.tasks[i],
            )
            for i in inside
        ]
        return "", "", windows

    def _episode_id(self, key: CalvinKey) -> str:
        kind = "ann" if self.mode == "language" else "seg"
        return f"{kind}{key.index:05d}_{key.start:07d}_{key.stop - 1:07d}"

    def _meta(self, key: CalvinKey) -> dict[str, Any]:
        return {
            "split": self.split,
            "scene": key.scene,
            "frames": [key.start, key.stop - 1],  # global frame ids, inclusive as in CALVIN
            "annotation" if self.mode == "language" else "segment": key.index,
            "action_scale": {"translation_m": TRANSLATION_SCALE, "rotation_rad": ROTATION_SCALE},
            "camera_source": self.camera_source,
            "state_names": list(STATE_NAMES),
        }

    # ---- Source API -----------------------------------------------------------------------------

    def load_episode(self, key: Any) -> Episode:
        """Read one annotation window or play segment fully."""
        self._check_key(key)
        members = [CAMERA_KEYS[c][0] for c in self.cameras]
        if self.load_depth:
            members += [CAMERA_KEYS[c][1] for c in self.cameras]
        data = self.read_frames(key.start, key.stop, [*members, ACTION_KEY, STATE_KEY, SCENE_KEY])
        actions = self._actions(data[ACTION_KEY], key.start)
        frames: dict[str, np.ndarray] = {}
        depth: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            rgb_key, depth_key = CAMERA_KEYS[cam]
            rgb = data[rgb_key]
            if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
                found = f"{rgb.dtype} {rgb.shape[1:]}"
                raise DataError(f"expected uint8 (H, W, 3), got {found}", self.frame_path(key.start), rgb_key)
            frames[cam] = rgb
            if self.load_depth:
                depth[cam] = data[depth_key].astype(np.float32, copy=False)
        camera = {}
        if "static" in frames:
            camera["static"] = self.static_camera(*frames["static"].shape[1:3])
        instruction, task, language = self._language(key)
        return Episode(
            episode_id=self._episode_id(key),
            source=self.name,
            frames=frames,
            actions=actions,
            instruction=instruction,
            language=language,
            state=data[STATE_KEY].astype(np.float32, copy=False),
            depth=depth,
            camera=camera,
            objects=self._objects(data[SCENE_KEY], key),
            fps=self.fps,
            task=task,
            meta=self._meta(key),
        )

    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """Actions, state and language of one episode; image shapes from the first frame's headers."""
        self._check_key(key)
        data = self.read_frames(key.start, key.stop, [ACTION_KEY, STATE_KEY])
        actions = self._actions(data[ACTION_KEY], key.start)
        cameras = {cam: self._member_shape(key.start, CAMERA_KEYS[cam][0]) for cam in self.cameras}
        instruction, _task, language = self._language(key)
        instructions = [instruction] if instruction else []
        instructions += [w.instruction for w in language if w.instruction not in instructions]
        geometry = [
            name
            for name, present in (
                ("depth", self.load_depth and bool(self.cameras)),
                ("camera", "static" in self.cameras),
                ("objects", True),
            )
            if present
        ]
        return EpisodeSummary(
            episode_id=self._episode_id(key),
            length=len(actions),
            actions=actions,
            state=data[STATE_KEY].astype(np.float32, copy=False),
            instructions=instructions,
            cameras=cameras,  # type: ignore[arg-type]
            geometry=geometry,
        )

    def episode_layout(self, key: Any) -> EpisodeLayout:
        """Actions (only `rel_actions` is inflated) and language windows of one episode."""
        self._check_key(key)
        actions = self._actions(self.read_frames(key.start, key.stop, [ACTION_KEY])[ACTION_KEY], key.start)
        instruction, _task, language = self._language(key)
        return EpisodeLayout(self._episode_id(key), actions, instruction, language, self.cameras)

    def read_image(self, key: Any, camera: str, step: int) -> np.ndarray:
        """One frame's rgb of `camera` from its own npz (nothing else inflated)."""
        if camera not in self.cameras:
            raise DataError(f"no camera {camera!r} (has {list(self.cameras)})", self.split_dir, "cameras")
        if not 0 <= step < key.stop - key.start:
            raise DataError(f"step {step} outside [0, {key.stop - key.start})", self._episode_id(key))
        rgb_key = CAMERA_KEYS[camera][0]
        path, archive = self._open(key.start + step)
        with archive:
            rgb = self._member(archive, path, rgb_key)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise DataError(f"expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}", path, rgb_key)
        return rgb
