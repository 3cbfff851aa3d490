"""RLDS / TFDS build directories (Bridge V2, Open X-Embodiment) -> Episode, read without TensorFlow.

A TFDS build directory `<name>/<version>/` holds `dataset_info.json` (splits, shard lengths, the
shard file template), `features.json` (the nested feature tree: shapes and dtypes, which the records
do not store) and TFRecord shards in which each record is one episode as a `tf.train.Example` with
keys like `steps/observation/image_0`. An `RLDSMapping` says which of those keys become which
Episode fields; one is chosen from the dataset name in `dataset_info.json` (or by option), so another
Open-X dataset needs only a new mapping.

Episode keys come from `shardLengths` (no file is opened to list them); a shard's record offsets are
found on first use by scanning only the 12-byte framing headers. One episode is read at a time.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.actions import gripper_from_continuous, gripper_from_libero, gripper_from_relative_closedness
from datasets_build.episode import Episode, LanguageWindow
from datasets_build.errors import ConfigError, DataError
from datasets_build.sources.base import EpisodeLayout, EpisodeSummary, Source, register_source
from datasets_build.sources.tfrecord import ExampleView, decode_values, parse_example, read_record, scan_records

INFO_FILE = "dataset_info.json"
FEATURES_FILE = "features.json"
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
STEPS = "steps"

# --------------------------------------------------------------------------------------- TFDS metadata


@dataclass(frozen=True)
class FeatureSpec:
    """One leaf of features.json: flat key, class, per-step (or per-episode) shape and dtype."""

    key: str  # "steps/observation/image_0"
    kind: str  # "tensor", "image", "text", or "unsupported"
    shape: tuple[int | None, ...]  # None: a dimension of unknown size
    dtype: str  # numpy name ("float32", "bool", "uint8") or "string"
    encoding: str = "none"  # tensor encoding, or the image encodingFormat
    in_steps: bool = False  # under the `steps` Dataset: one value per step

    @property
    def record_kind(self) -> str:
        """The tf.train.Feature list that stores it: "bytes", "float" or "int64"."""
        if self.kind in ("image", "text") or self.dtype == "string" or self.encoding != "none":
            return "bytes"
        return "float" if self.dtype.startswith(("float", "bfloat")) else "int64"

    @property
    def size(self) -> int:
        """Values per step (product of a fully known shape)."""
        if any(d is None for d in self.shape):
            raise ValueError(f"{self.key} has unknown dimensions {self.shape}")
        return math.prod(d for d in self.shape if d is not None)


def _dimensions(node: dict[str, Any]) -> tuple[int | None, ...]:
    dims = node.get("shape", {}).get("dimensions", [])
    return tuple(None if int(d) < 0 else int(d) for d in dims)


def _walk_features(node: dict[str, Any], prefix: str, in_steps: bool, out: dict[str, FeatureSpec]) -> None:
    key = prefix.rstrip("/")
    if "featuresDict" in node:
        for name, child in node["featuresDict"].get("features", {}).items():
            _walk_features(child, f"{prefix}{name}/", in_steps, out)
    elif "sequence" in node:
        if in_steps:  # a ragged sequence inside a step: not stored as a flat list
            out[key] = FeatureSpec(key, "unsupported", (), "", "sequence", in_steps)
        else:
            _walk_features(node["sequence"].get("feature", {}), prefix, True, out)
    elif "image" in node:
        image = node["image"]
        fmt = str(image.get("encodingFormat") or "png")
        out[key] = FeatureSpec(key, "image", _dimensions(image), str(image.get("dtype", "uint8")), fmt, in_steps)
    elif "tensor" in node:
        tensor = node["tensor"]
        dtype = str(tensor.get("dtype", "float32"))
        out[key] = FeatureSpec(key, "tensor", _dimensions(tensor), dtype, str(tensor.get("encoding", "none")), in_steps)
    elif "text" in node:
        out[key] = FeatureSpec(key, "text", (), "string", "none", in_steps)
    elif "classLabel" in node:
        out[key] = FeatureSpec(key, "tensor", (), "int64", "none", in_steps)
    else:
        out[key] = FeatureSpec(key, "unsupported", (), "", str(node.get("pythonClassName", "?")), in_steps)


def load_features(path: Path) -> dict[str, FeatureSpec]:
    """Flatten features.json into {flat key: FeatureSpec}, keys joined with "/" as in the records."""
    try:
        root = json.loads(path.read_text())
    except OSError as exc:
        raise DataError("missing or unreadable", path) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"not JSON ({exc})", path) from exc
    if not isinstance(root, dict) or "featuresDict" not in root:
        raise DataError("expected a FeaturesDict at the top (TFDS >= 4.5 features.json)", path, "featuresDict")
    out: dict[str, FeatureSpec] = {}
    try:
        _walk_features(root, "", False, out)
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(f"malformed feature tree ({exc})", path) from exc
    return out


@dataclass(frozen=True)
class SplitInfo:
    """One split of dataset_info.json."""

    name: str
    shard_lengths: list[int] | None
    template: str

    def shard_name(self, dataset: str, file_format: str, index: int, count: int) -> str:
        """The file name of shard `index` of `count`, from the TFDS template."""
        width = max(5, len(str(count)))
        return (
            self.template.replace("{DATASET}", dataset)
            .replace("{SPLIT}", self.name)
            .replace("{FILEFORMAT}", file_format)
            .replace("{SHARD_X_OF_Y}", f"{index:0{width}d}-of-{count:0{width}d}")
            .replace("{SHARD_INDEX}", f"{index:0{width}d}")
            .replace("{NUM_SHARDS}", f"{count:0{width}d}")
        )

    def glob_pattern(self, dataset: str, file_format: str) -> str:
        """A glob matching every shard of this split (when shard lengths are not recorded)."""
        return (
            self.template.replace("{DATASET}", dataset)
            .replace("{SPLIT}", self.name)
            .replace("{FILEFORMAT}", file_format)
            .replace("{SHARD_X_OF_Y}", "*-of-*")
            .replace("{SHARD_INDEX}", "*")
            .replace("{NUM_SHARDS}", "*")
        )


@dataclass(frozen=True)
class TFDSInfo:
    """What dataset_info.json says about the files: name, version, format and splits."""

    name: str
    version: str
    file_format: str
    splits: dict[str, SplitInfo]

    @classmethod
    def load(cls, path: Path) -> TFDSInfo:
        """Parse dataset_info.json (proto JSON: int64 values such as shardLengths are strings)."""
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise DataError("missing or unreadable", path) from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"not JSON ({exc})", path) from exc
        splits: dict[str, SplitInfo] = {}
        try:
            for split in raw.get("splits", []):
                lengths = split.get("shardLengths")
                splits[str(split["name"])] = SplitInfo(
                    name=str(split["name"]),
                    shard_lengths=None if lengths is None else [int(n) for n in lengths],
                    template=str(split.get("filepathTemplate") or DEFAULT_TEMPLATE),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed splits ({exc})", path, "splits") from exc
        if not splits:
            raise DataError("no splits", path, "splits")
        return cls(
            name=str(raw.get("name", "")),
            version=str(raw.get("version", "")),
            file_format=str(raw.get("fileFormat") or "tfrecord"),
            splits=splits,
        )


def find_version_dir(path: Path) -> Path:
    """The TFDS version folder: `path` itself, or its only sub-folder holding a dataset_info.json."""
    if (path / INFO_FILE).is_file():
        return path
    candidates = sorted(p.parent for p in path.glob(f"*/{INFO_FILE}"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise DataError(f"no {INFO_FILE} here or in a version sub-folder", path)
    raise DataError(f"several versions ({', '.join(p.name for p in candidates)}); pass one folder", path)


# ------------------------------------------------------------------------------------------- mappings


@dataclass(frozen=True)
class RLDSMapping:
    """How one RLDS dataset's features become Episode fields. Step keys are relative to `steps/`.

    The action is `arm` keys concatenated (first 6 columns: xyz delta, rpy delta) plus the gripper
    column `gripper_index` of `gripper`, converted to the convention by `gripper_convert`.
    """

    name: str
    datasets: tuple[str, ...]  # dataset_info.json names (or folder names) this mapping is chosen for
    cameras: dict[str, str]  # camera name -> image key, e.g. {"image_0": "observation/image_0"}
    default_cameras: tuple[str, ...]
    arm: tuple[str, ...]
    gripper: str
    gripper_index: int = -1
    gripper_convert: Callable[[np.ndarray], np.ndarray] = gripper_from_continuous
    state: tuple[str, ...] = ()  # concatenated into Episode.state; empty: no state
    instruction: str | None = "language_instruction"
    camera_flags: dict[str, str] = field(default_factory=dict)  # camera -> episode bool "has this view"
    extras: dict[str, str] = field(default_factory=dict)  # meta name -> step key, copied when present
    fps: float = 10.0
    versions: tuple[str, ...] = ()  # versions the mapping was written against (preferred on a tie)
    relabel_from_state: bool = False  # Bridge: `bridge_labels="paper"` (OpenVLA's labels) is available


_RL_EXTRAS = {k: k for k in ("reward", "discount", "is_first", "is_last", "is_terminal")}

BRIDGE_V2 = RLDSMapping(
    name="bridge_v2",
    datasets=("bridge_dataset", "bridge_orig"),
    versions=("1.0.0",),
    cameras={f"image_{i}": f"observation/image_{i}" for i in range(4)},
    default_cameras=("image_0",),
    arm=("action",),
    gripper="action",
    gripper_index=6,
    gripper_convert=gripper_from_continuous,
    state=("observation/state",),
    instruction="language_instruction",
    camera_flags={f"image_{i}": f"episode_metadata/has_image_{i}" for i in range(4)},
    extras=_RL_EXTRAS,
    fps=5.0,
    relabel_from_state=True,
)

OXE_BRIDGE = RLDSMapping(
    name="oxe_bridge",
    datasets=("bridge",),
    versions=("0.1.0",),
    cameras={"image": "observation/image"},
    default_cameras=("image",),
    arm=("action/world_vector", "action/rotation_delta"),
    gripper="action/open_gripper",
    gripper_index=0,
    gripper_convert=gripper_from_continuous,  # bool open_gripper: 1 open, 0 closed
    state=("observation/state",),
    instruction="observation/natural_language_instruction",
    extras={**_RL_EXTRAS, "terminate_episode": "action/terminate_episode"},
    fps=5.0,
    relabel_from_state=True,
)

FRACTAL = RLDSMapping(
    name="fractal",
    datasets=("fractal20220817_data",),
    versions=("0.1.0",),
    cameras={"image": "observation/image"},
    default_cameras=("image",),
    arm=("action/world_vector", "action/rotation_delta"),
    gripper="action/gripper_closedness_action",
    gripper_index=0,
    gripper_convert=gripper_from_relative_closedness,  # +1 close, -1 open, 0 keep
    state=("observation/base_pose_tool_reached", "observation/gripper_closed"),
    instruction="observation/natural_language_instruction",
    extras={**_RL_EXTRAS, "terminate_episode": "action/terminate_episode"},
    fps=3.0,
)

# OpenVLA's LIBERO RLDS release (`openvla/modified_libero_rlds`, e.g. `libero_10_no_noops/1.0.0`, whose
# dataset_info.json names the builder `liber_o10`): the regenerated demos (no-op steps removed, failed replays
# dropped, 256x256 images, rotated upright in the conversion). Actions as LIBERO stores them (OSC deltas,
# gripper -1 open / +1 close); state = EEF position and orientation (6) + the 2 finger joints.
LIBERO_RLDS = RLDSMapping(
    name="libero_no_noops",
    datasets=tuple(f"libero_{suite}_no_noops" for suite in ("10", "goal", "object", "spatial", "90")),
    versions=("1.0.0",),
    cameras={"image": "observation/image", "wrist_image": "observation/wrist_image"},
    default_cameras=("image",),
    arm=("action",),
    gripper="action",
    gripper_index=6,
    gripper_convert=gripper_from_libero,
    state=("observation/state",),
    instruction="language_instruction",
    extras=_RL_EXTRAS,
    fps=20.0,
)

MAPPINGS: dict[str, RLDSMapping] = {m.name: m for m in (BRIDGE_V2, OXE_BRIDGE, FRACTAL, LIBERO_RLDS)}
BRIDGE_LABELS = ("raw", "paper")


def register_mapping(mapping: RLDSMapping) -> RLDSMapping:
    """Add a mapping, chosen automatically for the dataset names it lists."""
    MAPPINGS[mapping.name] = mapping
    return mapping


def mapping_for(names: Sequence[str], version: str = "") -> RLDSMapping | None:
    """The mapping for the first dataset name that has one (a mapping listing `version` wins)."""
    for name in names:
        hits = [m for m in MAPPINGS.values() if name in m.datasets]
        if hits:
            return next((m for m in hits if version in m.versions), hits[0])
    return None


# ---------------------------------------------------------------------------------------- Bridge labels


def binarize_gripper(values: np.ndarray, open_above: float = 0.95, closed_below: float = 0.05) -> np.ndarray:
    """OpenVLA's Bridge gripper binarisation: > 0.95 open (1), < 0.05 closed (0); a value in between takes the
    next decided step's value, and a run of in-between values at the very end keeps the raw last value."""
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    out = np.empty_like(values)
    carry = float(values[-1]) if len(values) else 0.0
    for i in range(len(values) - 1, -1, -1):
        if values[i] > open_above:
            carry = 1.0
        elif values[i] < closed_below:
            carry = 0.0
        out[i] = carry
    return out


def paper_bridge_labels(state: np.ndarray, gripper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bridge actions as OpenVLA's `bridge_orig_dataset_transform` (VLM4VLA's Bridge data) makes them from a
    trajectory of T steps: step 0 dropped, the gripper binarised on the rest, arm dims 0-5 replaced by the
    differences of consecutive `state[:, :6]`, the last step dropped. Returns (arm (T-2, 6), gripper (T-2,) in
    {0, 1}) for the original steps 1..T-2; a gripper left undecided by the binarisation counts as closed, as
    VLM4VLA's `refine_action_at_gripper_dim` sets every value other than 1 to 0."""
    state = np.asarray(state, dtype=np.float64)
    arm = (state[2:, :6] - state[1:-1, :6]).astype(np.float32)
    binary = binarize_gripper(gripper[1:])[:-1]
    return arm, (binary == 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RecordKey:
    """One episode: record `record` of shard file `shard` (shard number `shard_index`)."""

    shard: Path
    shard_index: int
    record: int


@dataclass
class _Steps:
    """One decoded record, images not yet decoded."""

    episode_id: str
    where: str
    view: ExampleView
    start: int  # first step kept (1 when a zero first action was dropped, or with bridge_labels="paper")
    total: int  # steps stored in the record
    actions: np.ndarray
    state: np.ndarray | None
    instructions: list[str]
    meta: dict[str, Any]


def _numpy_dtype(name: str) -> np.dtype[Any]:
    """features.json dtype name -> numpy dtype (float for names numpy lacks, e.g. bfloat16)."""
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(np.float32)


def _jsonable(values: np.ndarray | list[bytes] | str) -> Any:
    if isinstance(values, str):
        return values
    if isinstance(values, list):
        texts = [v.decode("utf-8", errors="replace") for v in values]
        return texts[0] if len(texts) == 1 else texts
    return values.tolist()  # a 0-d array gives a plain scalar


def _constant(frames: np.ndarray) -> bool:
    """Whether every pixel of every frame has one value (cheap: most real views fail on frame 0)."""
    first = frames[0]
    if int(first.min()) != int(first.max()):
        return False
    return int(frames.min()) == int(frames.max()) == int(first.flat[0])


def decode_image(blob: bytes, where: str, key: str, step: int) -> np.ndarray:
    """One encoded JPEG/PNG -> uint8 (H, W, 3)."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            return np.asarray(rgb)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"step {step}: cannot decode image ({exc})", where, key) from exc


def image_shape(blob: bytes, where: str, key: str) -> tuple[int, int, int]:
    """(H, W, 3) of an encoded image from its header only (PIL opens lazily; nothing is decoded)."""
    try:
        with Image.open(io.BytesIO(blob)) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image header ({exc})", where, key) from exc
    return height, width, 3


@register_source("rlds")
class RLDSSource(Source):
    """A TFDS/RLDS build directory (`.../bridge_dataset/1.0.0`, or its parent holding one version).

    Options: `dataset` (a mapping name from MAPPINGS or an RLDSMapping; default: chosen from the
    dataset name), `split`, `cameras` (names of the mapping's cameras, image keys under
    `steps/observation/`, or "all"; default the main camera), `drop_first_zero_action` (drop step 0
    when its action is all zero, as Bridge V2 stores it), `bridge_labels` ("raw": the commanded
    `action` as stored; "paper": OpenVLA's Bridge labels, which VLM4VLA trains on: see
    `paper_bridge_labels`; Bridge mappings only; it always drops the first and last step), `verify_crc`,
    and `allow_missing_shards` (list only the shards present, for partial downloads; `missing_shards`
    names the others).
    A camera whose `has_image_*` flag is false, or whose frames are one constant value throughout an
    episode (padding for a missing view), is left out of that episode.
    """

    name = "rlds"

    def __init__(
        self,
        path: str | Path,
        skip_bad: bool = False,
        dataset: str | RLDSMapping | None = None,
        split: str = "train",
        cameras: Sequence[str] | str | None = None,
        drop_first_zero_action: bool = False,
        bridge_labels: str = "raw",
        verify_crc: bool = True,
        allow_missing_shards: bool = False,
    ) -> None:
        root = find_version_dir(Path(path))
        super().__init__(root, skip_bad)
        self.info = TFDSInfo.load(root / INFO_FILE)
        if self.info.file_format != "tfrecord":
            raise DataError(f"only tfrecord shards are read, not {self.info.file_format}", root / INFO_FILE)
        self.features = load_features(root / FEATURES_FILE)
        self.mapping = self._choose_mapping(dataset)
        if split not in self.info.splits:
            raise ConfigError(f"no split {split!r} in {root / INFO_FILE}; available: {', '.join(self.info.splits)}")
        self.split = self.info.splits[split]
        self.cameras = self._choose_cameras(cameras)
        self.drop_first_zero_action = drop_first_zero_action
        if bridge_labels not in BRIDGE_LABELS:
            raise ConfigError(f"bridge_labels must be one of {', '.join(BRIDGE_LABELS)}, got {bridge_labels!r}")
        if bridge_labels == "paper" and not self.mapping.relabel_from_state:
            raise ConfigError(f"bridge_labels=paper is only defined for Bridge data, not mapping {self.mapping.name!r}")
        self.bridge_labels = bridge_labels
        self.verify_crc = verify_crc
        self.allow_missing_shards = allow_missing_shards
        self.missing_shards: list[Path] = []
        self._check_mapping()
        self._keys: list[RecordKey] | None = None
        self._expected: dict[Path, int] = {}
        self._offsets: dict[Path, tuple[list[int], DataError | None]] = {}

    # ------------------------------------------------------------------------------------ set-up

    def _choose_mapping(self, dataset: str | RLDSMapping | None) -> RLDSMapping:
        if isinstance(dataset, RLDSMapping):
            return dataset
        if dataset is not None:
            found = MAPPINGS.get(dataset) or mapping_for([dataset], self.info.version)
            if found is None:
                raise ConfigError(f"unknown RLDS dataset mapping {dataset!r}; known: {', '.join(sorted(MAPPINGS))}")
            return found
        names = [self.info.name, self.path.parent.name]
        found = mapping_for(names, self.info.version)
        if found is None:
            raise ConfigError(
                f"no mapping for dataset {self.info.name!r} {self.info.version}; pass dataset= one of "
                f"{', '.join(sorted(MAPPINGS))} or an RLDSMapping"
            )
        return found

    def _choose_cameras(self, cameras: Sequence[str] | str | None) -> dict[str, str]:
        m = self.mapping
        if cameras is None:
            names: Sequence[str] = m.default_cameras
        elif cameras == "all":
            names = list(m.cameras)
        elif isinstance(cameras, str):
            names = [cameras]
        else:
            names = cameras
        chosen: dict[str, str] = {}
        for name in names:
            if name in m.cameras:
                chosen[name] = m.cameras[name]
                continue
            for key in (f"observation/{name}", name):
                spec = self.features.get(f"{STEPS}/{key}")
                if spec is not None and spec.kind == "image":
                    chosen[name.split("/")[-1]] = key
                    break
            else:
                images = [k.removeprefix(f"{STEPS}/") for k, s in self.features.items() if s.kind == "image"]
                raise ConfigError(f"unknown camera {name!r}; mapping has {list(m.cameras)}, image features {images}")
        return chosen

    def _step_spec(self, key: str) -> FeatureSpec | None:
        return self.features.get(f"{STEPS}/{key}")

    def _check_mapping(self) -> None:
        """Every key the mapping needs must be in features.json with a usable class and shape."""
        where = self.path / FEATURES_FILE
        m = self.mapping
        needed = [*m.arm, m.gripper, *m.state]
        for key in needed:
            spec = self._step_spec(key)
            if spec is None:
                raise DataError(f"mapping {m.name!r} needs this step feature", where, f"{STEPS}/{key}")
            if spec.kind != "tensor" or spec.record_kind == "bytes" or None in spec.shape:
                raise DataError(f"expected a numeric fixed-shape tensor, got {spec.kind}", where, spec.key)
        arm_width = sum(spec.size for k in m.arm if (spec := self._step_spec(k)) is not None)
        if arm_width < 6:
            raise DataError(f"arm keys give {arm_width} columns, need 6", where, f"{STEPS}/{m.arm[0]}")
        grip = self._step_spec(m.gripper)
        if grip is not None and not -grip.size <= m.gripper_index < grip.size:
            raise DataError(f"gripper column {m.gripper_index} outside {grip.size}", where, grip.key)
        if m.instruction is not None:
            spec = self._step_spec(m.instruction)
            if spec is not None and spec.record_kind != "bytes":
                raise DataError("instruction must be a text/string feature", where, spec.key)
        for camera, key in self.cameras.items():
            spec = self._step_spec(key)
            if spec is None or spec.kind != "image":
                raise DataError(f"camera {camera!r}: no image feature", where, f"{STEPS}/{key}")

    # ----------------------------------------------------------------------------------- listing

    def shard_paths(self) -> list[Path]:
        """The split's shard files, in shard order."""
        lengths = self.split.shard_lengths
        if lengths is not None:
            n = len(lengths)
            return [self.path / self.split.shard_name(self.info.name, self.info.file_format, i, n) for i in range(n)]
        return sorted(self.path.glob(self.split.glob_pattern(self.info.name, self.info.file_format)))

    def episode_keys(self) -> list[Any]:
        """(shard, record) for every episode, from `shardLengths` without opening any shard.

        Without shardLengths, each shard's framing headers are scanned instead.
        """
        if self._keys is not None:
            return list(self._keys)
        keys: list[RecordKey] = []
        lengths = self.split.shard_lengths
        for i, shard in enumerate(self.shard_paths()):
            if self.allow_missing_shards and not shard.is_file():
                self.missing_shards.append(shard)
                continue
            if lengths is not None:
                count = lengths[i]
                self._expected[shard] = count
            else:
                offsets, error = self._scan(shard)
                count = len(offsets) + (error is not None)
            keys.extend(RecordKey(shard, i, r) for r in range(count))
        self._keys = keys
        return list(keys)

    def _scan(self, shard: Path) -> tuple[list[int], DataError | None]:
        if shard not in self._offsets:
            if not shard.is_file():
                raise DataError("shard file missing", shard, "shard")
            self._offsets[shard] = scan_records(shard)
        return self._offsets[shard]

    def _record_bytes(self, key: RecordKey) -> bytes:
        offsets, error = self._scan(key.shard)
        expected = self._expected.get(key.shard)
        if error is None and expected is not None and len(offsets) != expected:
            raise DataError(
                f"{len(offsets)} records but {INFO_FILE} shardLengths says {expected}", key.shard, "shard_length"
            )
        if key.record >= len(offsets):
            if error is None:
                raise DataError("no such record", f"{key.shard}: record {key.record}", "shard_length")
            if key.record == len(offsets):
                raise error
            raise DataError(
                f"unreachable: an earlier record is bad ({error})", f"{key.shard}: record {key.record}", error.field
            )
        with key.shard.open("rb") as handle:
            return read_record(handle, key.shard, offsets[key.record], key.record, self.verify_crc)

    # ---------------------------------------------------------------------------------- decoding

    def _values(self, view: ExampleView, spec: FeatureSpec, length: int | None, where: str) -> np.ndarray:
        """A numeric feature reshaped to (T, *shape) (steps) or shape (episode) from features.json."""
        key = spec.key
        if key not in view:
            raise DataError("missing from the record", where, key)
        if view.kind(key) not in (spec.record_kind, "empty"):
            raise DataError(f"stored as {view.kind(key)}_list, features.json implies {spec.record_kind}", where, key)
        if spec.encoding != "none":
            raise DataError(f"tensor encoding {spec.encoding!r} is not supported", where, key)
        values = decode_values(view, key, where)
        assert isinstance(values, np.ndarray)
        dims = tuple(d for d in spec.shape if d is not None)
        if len(dims) != len(spec.shape):
            if length is None:  # an episode-level tensor of variable size: keep it flat
                return values.astype(_numpy_dtype(spec.dtype))
            raise DataError(f"step feature with unknown dimensions {list(spec.shape)}", where, key)
        per = math.prod(dims)
        want = per if length is None else per * length
        if values.size != want:
            steps = "" if length is None else f" x {length} steps"
            raise DataError(
                f"{values.size} values, features.json shape {list(spec.shape)}{steps} needs {want}", where, key
            )
        shape = dims if length is None else (length, *dims)
        return values.reshape(shape).astype(_numpy_dtype(spec.dtype))

    def _strings(self, view: ExampleView, spec: FeatureSpec, length: int, where: str) -> list[str]:
        key = spec.key
        if key not in view:
            raise DataError("missing from the record", where, key)
        values = decode_values(view, key, where)
        if not isinstance(values, list) or len(values) != length:
            count = len(values) if isinstance(values, list) else f"non-bytes ({view.kind(key)})"
            raise DataError(f"{count} strings for {length} steps", where, key)
        try:
            return [v.decode("utf-8") for v in values]
        except UnicodeDecodeError as exc:
            raise DataError(f"not UTF-8 ({exc})", where, key) from exc

    def _length(self, view: ExampleView, where: str) -> int:
        """Number of steps: from a per-step scalar (is_first...) when there is one, else the arm."""
        for name in ("is_first", "is_last", "is_terminal", "reward", "discount"):
            spec = self._step_spec(name)
            if spec is not None and spec.kind == "tensor" and spec.shape == () and spec.key in view:
                return len(decode_values(view, spec.key, where))
        spec = self._step_spec(self.mapping.arm[0])
        assert spec is not None
        if spec.key not in view:
            raise DataError("missing from the record", where, spec.key)
        count = len(decode_values(view, spec.key, where))
        if count % spec.size:
            raise DataError(
                f"{count} values, not a multiple of features.json shape {list(spec.shape)}", where, spec.key
            )
        return count // spec.size

    def _decode(self, key: RecordKey) -> _Steps:
        where = f"{key.shard}: record {key.record}"
        view = parse_example(self._record_bytes(key), where)
        m = self.mapping
        length = self._length(view, where)
        if length == 0:
            raise DataError("episode has no steps", where, STEPS)

        def steps(name: str) -> np.ndarray:
            spec = self._step_spec(name)
            assert spec is not None
            return self._values(view, spec, length, where).reshape(length, -1)

        arm = np.concatenate([steps(k).astype(np.float32) for k in m.arm], axis=1)[:, :6]
        grip = steps(m.gripper).astype(np.float32)[:, m.gripper_index]
        for name, values in ((m.arm[0], arm), (m.gripper, grip)):
            if not np.isfinite(values).all():
                bad = int(np.argwhere(~np.isfinite(values.reshape(length, -1)))[0][0])
                raise DataError(f"non-finite value at step {bad}", where, f"{STEPS}/{name}")
        state = np.concatenate([steps(k).astype(np.float32) for k in m.state], axis=1) if m.state else None
        instructions = [""] * length
        if m.instruction is not None and (spec := self._step_spec(m.instruction)) is not None:
            instructions = self._strings(view, spec, length, where)
        meta: dict[str, Any] = {
            "dataset": self.info.name,
            "version": self.info.version,
            "split": self.split.name,
            "shard": key.shard.name,
            "record": key.record,
        }
        for name, step_key in m.extras.items():
            spec = self._step_spec(step_key)
            if spec is not None and spec.key in view and spec.kind == "tensor" and spec.record_kind != "bytes":
                meta[name] = self._values(view, spec, length, where).tolist()
        for spec in self.features.values():
            if not spec.in_steps and spec.key in view and spec.kind in ("tensor", "text"):
                if spec.record_kind == "bytes":
                    meta[spec.key] = _jsonable(decode_values(view, spec.key, where))
                else:
                    meta[spec.key] = _jsonable(self._values(view, spec, None, where))
        start, stop = 0, length
        if self.bridge_labels == "paper":
            if state is None or state.shape[1] < 6 or length < 3:
                raise DataError(f"bridge_labels=paper needs >= 3 steps and a 6-d state, got {length}", where, STEPS)
            arm, grip = paper_bridge_labels(state, grip)
            start, stop = 1, length - 1
            meta["bridge_labels"] = "paper"
        else:
            if self.drop_first_zero_action and length > 1 and not arm[0].any() and grip[0] == 0:
                start = 1
                meta["dropped_zero_first_step"] = True
            arm, grip = arm[start:], m.gripper_convert(grip[start:])
        if start or stop != length:
            for name in m.extras:
                if name in meta:
                    meta[name] = meta[name][start:stop]
        actions = np.concatenate([arm, grip[:, None]], axis=1).astype(np.float32)
        return _Steps(
            episode_id=f"{self.split.name}-{key.shard_index:05d}-{key.record:04d}",
            where=where,
            view=view,
            start=start,
            total=length,
            actions=actions,
            state=None if state is None else state[start:stop],
            instructions=instructions[start:stop],
            meta=meta,
        )

    def _camera_blobs(self, decoded: _Steps, length: int) -> dict[str, list[bytes]]:
        """Encoded frames of each chosen camera present in this episode (flagged-off views left out)."""
        out: dict[str, list[bytes]] = {}
        for camera, key in self.cameras.items():
            flag = self.mapping.camera_flags.get(camera)
            if flag is not None and decoded.meta.get(flag) is False:
                continue
            spec = self._step_spec(key)
            assert spec is not None
            full = spec.key
            if full not in decoded.view:
                raise DataError("missing from the record", decoded.where, full)
            blobs = decode_values(decoded.view, full, decoded.where)
            if not isinstance(blobs, list) or len(blobs) != decoded.total:
                count = len(blobs) if isinstance(blobs, list) else f"non-bytes ({decoded.view.kind(full)})"
                raise DataError(f"{count} images for {decoded.total} steps", decoded.where, full)
            out[camera] = blobs[decoded.start : decoded.start + length]
        return out

    def _decode_frames(self, blobs: list[bytes], spec: FeatureSpec, where: str, offset: int = 0) -> np.ndarray:
        """Decode one camera's frames into (T, H, W, 3); `offset` numbers steps as stored (for errors)."""
        first = decode_image(blobs[0], where, spec.key, offset)
        want = spec.shape[:2]
        if len(want) == 2 and any(w is not None and w != g for w, g in zip(want, first.shape[:2], strict=True)):
            raise DataError(f"image is {first.shape}, features.json says {list(spec.shape)}", where, spec.key)
        frames = np.empty((len(blobs), *first.shape), dtype=np.uint8)
        frames[0] = first
        for step in range(1, len(blobs)):
            image = decode_image(blobs[step], where, spec.key, step + offset)
            if image.shape != first.shape:
                message = f"step {step + offset}: image is {image.shape}, step {offset} is {first.shape}"
                raise DataError(message, where, spec.key)
            frames[step] = image
        return frames

    @staticmethod
    def _language(instructions: list[str]) -> tuple[str, list[LanguageWindow]]:
        """The episode instruction (first non-empty) and windows when it changes within the episode."""
        distinct = [s for s in dict.fromkeys(instructions) if s]
        if len(distinct) <= 1:
            return (distinct[0] if distinct else ""), []
        windows: list[LanguageWindow] = []
        start = 0
        for i in range(1, len(instructions) + 1):
            if i == len(instructions) or instructions[i] != instructions[start]:
                if instructions[start]:
                    windows.append(LanguageWindow(start, i, instructions[start]))
                start = i
        return distinct[0], windows

    # ------------------------------------------------------------------------------------ public

    def load_episode(self, key: Any) -> Episode:
        """The Episode of one record (its chosen cameras decoded)."""
        decoded = self._decode(key)
        length = len(decoded.actions)
        frames: dict[str, np.ndarray] = {}
        for camera, blobs in self._camera_blobs(decoded, length).items():
            spec = self._step_spec(self.cameras[camera])
            assert spec is not None
            video = self._decode_frames(blobs, spec, decoded.where, decoded.start)
            if _constant(video):  # padding for a view this episode lacks
                decoded.meta.setdefault("blank_cameras", []).append(camera)
                continue
            frames[camera] = video
        instruction, windows = self._language(decoded.instructions)
        return Episode(
            episode_id=decoded.episode_id,
            source=self.name,
            frames=frames,
            actions=decoded.actions,
            instruction=instruction,
            language=windows,
            state=decoded.state,
            fps=self.mapping.fps,
            meta=decoded.meta,
        )

    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """Actions, state and instructions; camera shapes from the first frame's header (no decoding).

        Views are left out only by their `has_image_*` flag here (spotting constant padding would
        need decoding), so a flag-less dataset may list a blank view that load_episode drops.
        """
        decoded = self._decode(key)
        length = len(decoded.actions)
        cameras = {
            camera: image_shape(blobs[0], decoded.where, f"{STEPS}/{self.cameras[camera]}")
            for camera, blobs in self._camera_blobs(decoded, length).items()
        }
        instructions = [s for s in dict.fromkeys(decoded.instructions) if s]
        return EpisodeSummary(
            episode_id=decoded.episode_id,
            length=length,
            actions=decoded.actions,
            state=decoded.state,
            instructions=instructions,
            cameras=cameras,
        )

    def episode_layout(self, key: Any) -> EpisodeLayout:
        """Actions and language of one record (no image decoded)."""
        decoded = self._decode(key)
        instruction, windows = self._language(decoded.instructions)
        return EpisodeLayout(decoded.episode_id, decoded.actions, instruction, windows, tuple(self.cameras))

    def load_encoded(self, key: Any, camera: str = "") -> tuple[EpisodeLayout, list[bytes]] | None:
        """The layout and `camera`'s JPEG/PNG frames as stored ("" = the first chosen camera; DataError when this
        record lacks the view)."""
        camera = camera or next(iter(self.cameras))
        decoded = self._decode(key)
        blobs = self._camera_blobs(decoded, len(decoded.actions)).get(camera)
        if blobs is None:
            raise DataError(
                f"no camera {camera!r} in this episode", decoded.where, f"{STEPS}/{self.cameras.get(camera)}"
            )
        instruction, windows = self._language(decoded.instructions)
        return EpisodeLayout(decoded.episode_id, decoded.actions, instruction, windows, tuple(self.cameras)), blobs
