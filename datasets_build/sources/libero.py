"""LIBERO hdf5 demonstrations (one `<TASK>_demo.hdf5` per task) -> Episode.

Reads both the original LIBERO files (128x128 images, `problem_info` etc. as attributes of `data`)
and OpenVLA's regenerated `*_no_noops` files (256x256, no attributes: the instruction comes from
the file name). Per demo: actions (T, 7) = OSC deltas in [-1, 1] kept as stored + gripper converted
from LIBERO's -1 open / +1 close; images rotated 180 degrees to upright (they are stored as OpenGL
renders them); state = ee_pos (3) + ee_ori (3, axis-angle as LIBERO stores it) + gripper_states (2).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import h5py
import numpy as np

from datasets_build.actions import ARM, GRIPPER, gripper_from_libero
from datasets_build.crash_log import first_line
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError, DataError, ToolkitError
from datasets_build.sources.base import EpisodeLayout, EpisodeSummary, Source, register_source

# Episode camera name -> dataset under `data/demo_i/obs`.
CAMERA_KEYS: dict[str, str] = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}
STATIC_CAMERAS = ("agentview",)
FPS = 20.0  # LIBERO records at robosuite's control frequency, 20 Hz
NOOP_THRESHOLD = 1e-4  # arm-action norm under which OpenVLA's regeneration treats a step as a no-op
_SCENE_PREFIX = re.compile(r"^(?:[A-Z]+_)*SCENE\d+_")
_HDF5_SUFFIXES = (".hdf5", ".h5")


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _hdf5_errors(method: _Method) -> _Method:
    """What h5py raises on a corrupt file (OSError, RuntimeError, KeyError, TypeError...) while reading, as a one-line
    DataError naming the file and demo."""

    @functools.wraps(method)
    def reading(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except ToolkitError:
            raise
        except (OSError, RuntimeError, KeyError, TypeError, ValueError, IndexError) as exc:
            where = f"{args[0][0]}:{args[0][1]}" if args and isinstance(args[0], tuple | list) else str(self.path)
            raise DataError(f"cannot read hdf5 ({first_line(exc)})", where, "hdf5") from exc

    return reading  # type: ignore[return-value]


class LiberoKey(NamedTuple):
    """One demo: the hdf5 file and the group name under `data` (empty for a file that failed to list)."""

    file: Path
    demo: str


def task_name_from_filename(name: str) -> str:
    """`KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5` -> `KITCHEN_SCENE3_turn_on_the_stove` (LIBERO's task name)."""
    stem = Path(name).name
    for suffix in _HDF5_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return stem.removesuffix("_demo")


def instruction_from_filename(name: str) -> str:
    """The language instruction LIBERO derives from a task's file name.

    libero_90/libero_10 names carry a scene prefix (`LIVING_ROOM_SCENE2_`, `KITCHEN_SCENE10_`) that
    is dropped; libero_goal/object/spatial names are the instruction itself. Underscores become spaces.
    """
    task = _SCENE_PREFIX.sub("", task_name_from_filename(name))
    return " ".join(word for word in task.split("_") if word)


def noop_keep_mask(actions: np.ndarray, threshold: float = NOOP_THRESHOLD) -> np.ndarray:
    """Steps OpenVLA's LIBERO regeneration keeps (True) on raw LIBERO actions (T, 7).

    A step is a no-op when its arm action norm is below `threshold` and its gripper command equals
    that of the previous kept step; before any step is kept only the norm counts. Because a dropped
    step repeats the last kept gripper command, "previous kept" equals "previous" after the first
    kept step, which makes the rule vectorisable.
    """
    actions = np.asarray(actions)
    still = np.linalg.norm(actions[:, ARM].astype(np.float64), axis=1) < threshold
    moving = np.flatnonzero(~still)
    if moving.size == 0:
        return np.zeros(len(actions), dtype=bool)
    keep = np.ones(len(actions), dtype=bool)
    first = int(moving[0])
    keep[:first] = False
    gripper = actions[:, GRIPPER]
    same_gripper = np.zeros(len(actions), dtype=bool)
    same_gripper[1:] = gripper[1:] == gripper[:-1]
    keep[first + 1 :] = ~(still[first + 1 :] & same_gripper[first + 1 :])
    return keep


def _decode_attr(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _instruction_from_problem_info(raw: Any) -> str:
    """`language_instruction` of the `problem_info` JSON attribute ("" when absent or malformed)."""
    try:
        info = json.loads(_decode_attr(raw))
    except ValueError:
        return ""
    value = info.get("language_instruction", "") if isinstance(info, dict) else ""
    if isinstance(value, list):  # some exports keep the BDDL token list
        value = "".join(value) if all(len(str(v)) == 1 for v in value) else " ".join(str(v) for v in value)
    return " ".join(str(value).strip().strip('"').split())


class _FileInfo(NamedTuple):
    task: str
    instruction: str
    rotate: bool


@register_source("libero")
class LiberoSource(Source):
    """A LIBERO task file, or a folder of them (e.g. `libero_10/`, `libero_10_no_noops/`; not recursive)."""

    name = "libero"
    random_access = True  # hdf5 datasets read by row

    def __init__(
        self,
        path: str | Path,
        skip_bad: bool = False,
        filter_noops: bool = False,
        cameras: tuple[str, ...] | list[str] = ("agentview", "wrist"),
        rotate_images: bool | None = None,
        noop_threshold: float = NOOP_THRESHOLD,
    ) -> None:
        """`rotate_images` None: rotate unless the file records `macros_image_convention` "opencv"."""
        super().__init__(path, skip_bad)
        unknown = [c for c in cameras if c not in CAMERA_KEYS]
        if unknown:
            raise ConfigError(f"unknown LIBERO camera(s) {unknown}; available: {', '.join(CAMERA_KEYS)}")
        self.cameras = tuple(cameras)
        self.filter_noops = filter_noops
        self.rotate_images = rotate_images
        self.noop_threshold = noop_threshold
        self.files = self._find_files()
        self._keys: list[LiberoKey] | None = None
        self._info: dict[Path, _FileInfo] = {}
        self._handles: dict[Path, h5py.File] = {}  # open files (a suite has a few dozen; random access hops)
        self._kept: dict[tuple[Path, str], np.ndarray] = {}  # stored row of each kept step (filter_noops)

    def _find_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        if not self.path.is_dir():
            raise DataError("no such file or folder", self.path)
        files = sorted(p for p in self.path.iterdir() if p.suffix in _HDF5_SUFFIXES and p.is_file())
        if not files:
            raise DataError("no *.hdf5 files in folder (point at a suite folder such as libero_10)", self.path)
        return files

    # --- files -------------------------------------------------------------------------------------

    def _data(self, file: Path) -> h5py.Group:
        """The `data` group of `file`, which stays open (a suite's files are few; samplers hop between them)."""
        handle = self._handles.get(file)
        if handle is None:
            try:
                handle = h5py.File(file, "r")
            except OSError as exc:
                raise DataError(f"cannot open hdf5 ({exc})", file, "hdf5") from exc
            self._handles[file] = handle
        data = handle.get("data")
        if not isinstance(data, h5py.Group):
            raise DataError("no 'data' group (not a LIBERO/robomimic demo file)", file, "data")
        if file not in self._info:
            self._info[file] = self._file_info(file, data)
        return data

    def _file_info(self, file: Path, data: h5py.Group) -> _FileInfo:
        attrs = data.attrs
        instruction = _instruction_from_problem_info(attrs["problem_info"]) if "problem_info" in attrs else ""
        rotate = self.rotate_images
        if rotate is None:
            convention = _decode_attr(attrs.get("macros_image_convention", "opengl")).lower()
            rotate = convention != "opencv"
        return _FileInfo(
            task=task_name_from_filename(file.name),
            instruction=instruction or instruction_from_filename(file.name),
            rotate=rotate,
        )

    def close(self) -> None:
        """Close the open hdf5 files."""
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.close()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (e.g. into DataLoader workers) without open file handles."""
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown h5py may be half torn down
            self.close()

    # --- Source API --------------------------------------------------------------------------------

    @_hdf5_errors
    def episode_keys(self) -> list[Any]:
        """(file, demo) pairs: files by name, demos numerically (demo_2 before demo_10)."""
        if self._keys is None:
            keys: list[LiberoKey] = []
            for file in self.files:
                try:
                    names = [n for n in self._data(file) if n.startswith("demo")]
                except DataError:
                    if not self.skip_bad:
                        raise
                    keys.append(LiberoKey(file, ""))  # loads raise again, so skip_bad counts the file
                    continue
                names.sort(key=lambda n: ([int(d) for d in re.findall(r"\d+", n)], n))
                keys.extend(LiberoKey(file, n) for n in names)
            self._keys = keys
        return list(self._keys)

    @_hdf5_errors
    def load_episode(self, key: Any) -> Episode:
        """The Episode of one demo (images read in full, rotated upright as views)."""
        file, demo_name = LiberoKey(*key)
        demo, info, where = self._demo(file, demo_name)
        raw = self._raw_actions(demo, where)
        keep = noop_keep_mask(raw, self.noop_threshold) if self.filter_noops else None
        frames = {cam: self._frames(demo, cam, len(raw), keep, info.rotate, where) for cam in self.cameras}
        state, state_names = self._state(demo, len(raw), keep, where)
        dones = demo.get("dones")
        success = bool(np.asarray(dones[-1])) if isinstance(dones, h5py.Dataset) and len(dones) else None
        return Episode(
            episode_id=f"{info.task}/{demo_name}",
            source=self.name,
            frames=frames,
            actions=self._convert(raw, keep, where),
            instruction=info.instruction,
            state=state,
            fps=FPS,
            task=info.task,
            success=success,
            meta={
                "file": str(file),
                "demo": demo_name,
                "state_names": state_names,
                "noops_removed": 0 if keep is None else int((~keep).sum()),
                "images_rotated": info.rotate,
                "static_cameras": [c for c in self.cameras if c in STATIC_CAMERAS],
            },
        )

    @_hdf5_errors
    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """Actions, state and image shapes of one demo without reading any image."""
        file, demo_name = LiberoKey(*key)
        demo, info, where = self._demo(file, demo_name)
        raw = self._raw_actions(demo, where)
        keep = noop_keep_mask(raw, self.noop_threshold) if self.filter_noops else None
        actions = self._convert(raw, keep, where)
        cameras: dict[str, tuple[int, int, int]] = {}
        for cam in self.cameras:
            dataset = self._image_dataset(demo, cam, len(raw), where)
            height, width, channels = (int(d) for d in dataset.shape[1:])
            cameras[cam] = (height, width, channels)
        state, _ = self._state(demo, len(raw), keep, where)
        return EpisodeSummary(
            episode_id=f"{info.task}/{demo_name}",
            length=len(actions),
            actions=actions,
            state=state,
            instructions=[info.instruction] if info.instruction else [],
            cameras=cameras,
        )

    @_hdf5_errors
    def episode_layout(self, key: Any) -> EpisodeLayout:
        """Actions and instruction of one demo (no image read)."""
        file, demo_name = LiberoKey(*key)
        demo, info, where = self._demo(file, demo_name)
        raw = self._raw_actions(demo, where)
        keep = noop_keep_mask(raw, self.noop_threshold) if self.filter_noops else None
        actions = self._convert(raw, keep, where)
        self._kept[(file, demo_name)] = np.arange(len(raw)) if keep is None else np.flatnonzero(keep)
        return EpisodeLayout(f"{info.task}/{demo_name}", actions, info.instruction, [], self.cameras)

    @_hdf5_errors
    def read_image(self, key: Any, camera: str, step: int) -> np.ndarray:
        """One upright frame of `camera` (step counts kept steps with `filter_noops`), read as one hdf5 row."""
        file, demo_name = LiberoKey(*key)
        if camera not in self.cameras:
            raise DataError(f"no camera {camera!r} (has {list(self.cameras)})", file, "cameras")
        demo, info, where = self._demo(file, demo_name)
        rows = self._kept.get((file, demo_name))
        if rows is None:
            self.episode_layout(key)
            rows = self._kept[(file, demo_name)]
        if not 0 <= step < len(rows):
            raise DataError(f"step {step} outside [0, {len(rows)})", where)
        dataset = self._image_dataset(demo, camera, int(demo["actions"].shape[0]), where)
        frame = np.asarray(dataset[int(rows[step])])
        return np.ascontiguousarray(frame[::-1, ::-1]) if info.rotate else frame

    # --- per-demo reading --------------------------------------------------------------------------

    def _demo(self, file: Path, demo_name: str) -> tuple[h5py.Group, _FileInfo, str]:
        data = self._data(file)
        where = f"{file}:{demo_name}"
        demo = data.get(demo_name) if demo_name else None
        if not isinstance(demo, h5py.Group):
            raise DataError("no such demo group", where, "data")
        return demo, self._info[file], where

    @staticmethod
    def _raw_actions(demo: h5py.Group, where: str) -> np.ndarray:
        dataset = demo.get("actions")
        if not isinstance(dataset, h5py.Dataset):
            raise DataError("missing", where, "actions")
        raw = np.asarray(dataset[()])
        if not np.issubdtype(raw.dtype, np.number) or np.issubdtype(raw.dtype, np.complexfloating):
            raise DataError(f"expected real numbers, got {raw.dtype}", where, "actions")
        if raw.ndim != 2 or raw.shape[1] != 7:
            raise DataError(f"expected (T, 7), got {raw.shape}", where, "actions")
        if len(raw) == 0:
            raise DataError("empty demo", where, "actions")
        if not np.isfinite(raw).all():
            step = int(np.argwhere(~np.isfinite(raw))[0][0])
            raise DataError(f"non-finite value at step {step}", where, "actions")
        return raw

    @staticmethod
    def _convert(raw: np.ndarray, keep: np.ndarray | None, where: str) -> np.ndarray:
        """Raw LIBERO actions -> convention: arm kept as stored, gripper -1 open/+1 close -> 1/0."""
        if keep is not None:
            raw = raw[keep]
            if len(raw) == 0:
                raise DataError("every step is a no-op", where, "actions")
        actions = raw.astype(np.float32)
        actions[:, GRIPPER] = gripper_from_libero(raw[:, GRIPPER])
        return actions

    @staticmethod
    def _image_dataset(demo: h5py.Group, camera: str, length: int, where: str) -> h5py.Dataset:
        field = f"obs/{CAMERA_KEYS[camera]}"
        dataset = demo.get(field)
        if not isinstance(dataset, h5py.Dataset):
            raise DataError("missing camera", where, field)
        shape = dataset.shape
        if dataset.dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
            raise DataError(f"expected uint8 (T, H, W, 3), got {dataset.dtype} {shape}", where, field)
        if shape[0] != length:
            raise DataError(f"{shape[0]} frames but {length} actions", where, field)
        return dataset

    def _frames(
        self, demo: h5py.Group, camera: str, length: int, keep: np.ndarray | None, rotate: bool, where: str
    ) -> np.ndarray:
        """One camera's frames; the 180-degree rotation is a reversed view (no copy), after no-op removal."""
        frames = self._image_dataset(demo, camera, length, where)[()]
        if keep is not None and not keep.all():
            frames = frames[keep]
        return frames[:, ::-1, ::-1] if rotate else frames

    @staticmethod
    def _state(
        demo: h5py.Group, length: int, keep: np.ndarray | None, where: str
    ) -> tuple[np.ndarray | None, list[str]]:
        """ee_pos + ee_ori (axis-angle) + gripper_states as float32, or ee_states + gripper_states; None if absent."""
        obs = demo.get("obs")
        if not isinstance(obs, h5py.Group):
            return None, []
        parts: list[tuple[str, tuple[str, ...]]]
        if "ee_pos" in obs and "ee_ori" in obs:
            parts = [("ee_pos", ("x", "y", "z")), ("ee_ori", ("ax", "ay", "az"))]
        elif "ee_states" in obs:
            parts = [("ee_states", ("x", "y", "z", "ax", "ay", "az"))]
        else:
            return None, []
        parts.append(("gripper_states", ("finger_left", "finger_right")))
        arrays: list[np.ndarray] = []
        names: list[str] = []
        for key, default_names in parts:
            if key not in obs:
                return None, []
            arr = np.asarray(obs[key][()], dtype=np.float32)
            arr = arr.reshape(len(arr), -1)
            if len(arr) != length:
                raise DataError(f"{len(arr)} steps but {length} actions", where, f"obs/{key}")
            arrays.append(arr)
            width = arr.shape[1]
            names += list(default_names) if width == len(default_names) else [f"{key}_{i}" for i in range(width)]
        state = np.concatenate(arrays, axis=1)
        return (state if keep is None else state[keep]), names
