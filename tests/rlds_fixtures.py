"""Write TFDS/RLDS build directories in their true on-disk layout, for tests.

Independent of the reader: its own CRC32C table, TFRecord framing and `tf.train.Example` protobuf
encoder (Example.features=1 -> Features.feature=1 map<string, Feature> -> Feature.{bytes_list=1,
float_list=2, int64_list=3} -> repeated value=1), features.json trees with TFDS's class names, and
dataset_info.json with proto-JSON strings for int64 fields.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# ------------------------------------------------------------------------------------ CRC32C + framing


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def ref_crc32c(data: bytes) -> int:
    """Plain table-driven CRC32C (Castagnoli)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def ref_masked(data: bytes) -> int:
    """TFRecord's masked CRC of `data`."""
    crc = ref_crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord record: length, masked CRC of length, data, masked CRC of data."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", ref_masked(length)) + data + struct.pack("<I", ref_masked(data))


# -------------------------------------------------------------------------------------------- protobuf


def varint(value: int) -> bytes:
    """Protobuf base-128 varint (negative int64 as its 10-byte two's complement)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def encode_feature(kind: str, values: Sequence[Any], packed: bool = True) -> bytes:
    """A tf.train.Feature holding a bytes/float/int64 list."""
    if kind == "bytes":
        body = b"".join(len_field(1, v) for v in values)
        return len_field(1, body)
    if kind == "float":
        raw = np.asarray(values, dtype="<f4")
        if packed:
            body = len_field(1, raw.tobytes()) if raw.size else b""
        else:
            body = b"".join(varint(1 << 3 | 5) + v.tobytes() for v in raw)
        return len_field(2, body)
    ints = [int(v) for v in values]
    if packed:
        body = len_field(1, b"".join(varint(v) for v in ints)) if ints else b""
    else:
        body = b"".join(varint(1 << 3 | 0) + varint(v) for v in ints)
    return len_field(3, body)


def encode_example(features: dict[str, tuple[str, Sequence[Any]]], packed: bool = True) -> bytes:
    """A serialized tf.train.Example from {key: (kind, values)}."""
    entries = b"".join(
        len_field(1, len_field(1, key.encode()) + len_field(2, encode_feature(kind, values, packed)))
        for key, (kind, values) in features.items()
    )
    return len_field(1, entries)


# ----------------------------------------------------------------------------------- features.json

_CLS = "tensorflow_datasets.core.features."
FEATURES_DICT = _CLS + "features_dict.FeaturesDict"
DATASET = _CLS + "dataset_feature.Dataset"
TENSOR = _CLS + "tensor_feature.Tensor"
SCALAR = _CLS + "scalar.Scalar"
IMAGE = _CLS + "image_feature.Image"
TEXT = _CLS + "text_feature.Text"

# Flat spec: key -> ("tensor", shape, dtype) | ("scalar", dtype) | ("image", (H, W, 3), fmt) | ("text",)
Spec = dict[str, tuple[Any, ...]]


def _leaf(entry: tuple[Any, ...]) -> dict[str, Any]:
    kind = entry[0]
    if kind in ("tensor", "scalar"):
        shape, dtype = (entry[1], entry[2]) if kind == "tensor" else ((), entry[1])
        shape_json: dict[str, Any] = {"dimensions": [str(d) for d in shape]} if shape else {}
        return {
            "pythonClassName": TENSOR if kind == "tensor" else SCALAR,
            "tensor": {"shape": shape_json, "dtype": dtype, "encoding": "none"},
            "description": "",
        }
    if kind == "image":
        return {
            "pythonClassName": IMAGE,
            "image": {
                "shape": {"dimensions": [str(d) for d in entry[1]]},
                "dtype": "uint8",
                "encodingFormat": entry[2],
            },
            "description": "",
        }
    return {"pythonClassName": TEXT, "text": {}, "description": ""}


def features_json(spec: Spec) -> dict[str, Any]:
    """The features.json tree of a flat spec (`steps/...` keys go under a Dataset feature)."""

    def new_dict() -> dict[str, Any]:
        return {"pythonClassName": FEATURES_DICT, "featuresDict": {"features": {}}}

    root = new_dict()
    for key, entry in spec.items():
        parts = key.split("/")
        node = root
        for i, part in enumerate(parts[:-1]):
            children = node["featuresDict"]["features"]
            if part not in children:
                child = new_dict()
                if i == 0 and part == "steps":
                    child = {"pythonClassName": DATASET, "sequence": {"feature": new_dict(), "length": "-1"}}
                children[part] = child
            node = children[part]
            if node["pythonClassName"] == DATASET:
                node = node["sequence"]["feature"]
        node["featuresDict"]["features"][parts[-1]] = _leaf(entry)
    return root


# -------------------------------------------------------------------------------------------- records


def encode_image(image: np.ndarray, fmt: str = "jpeg") -> bytes:
    """JPEG (quality 95) or PNG bytes of an RGB uint8 array."""
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=95)
    else:
        Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _record_features(spec: Spec, episode: dict[str, Any], length: int) -> dict[str, tuple[str, Sequence[Any]]]:
    """Every feature of `spec` as TFDS serializes it (absent values filled with zeros / blanks)."""
    out: dict[str, tuple[str, Sequence[Any]]] = {}
    for key, entry in spec.items():
        per_step = key.startswith("steps/")
        n = length if per_step else 1
        value = episode.get(key)
        kind = entry[0]
        if kind == "image":
            if value is None:
                value = np.zeros((n, *entry[1]), dtype=np.uint8)
            blobs = value if isinstance(value, list) else [encode_image(v, entry[2]) for v in value]
            out[key] = ("bytes", blobs)
        elif kind == "text" or (kind == "tensor" and entry[2] == "string"):
            if value is None:
                value = [""] * n
            texts = [value] if isinstance(value, str) else list(value)
            out[key] = ("bytes", [t.encode() if isinstance(t, str) else t for t in texts])
        else:
            shape, dtype = (entry[1], entry[2]) if kind == "tensor" else ((), entry[1])
            if value is None:
                value = np.zeros((n, *shape))
            flat = np.asarray(value).reshape(-1)
            if dtype.startswith("float"):
                out[key] = ("float", flat.astype(np.float32))
            else:
                out[key] = ("int64", [int(v) for v in flat])
    return out


def write_rlds(
    root: Path,
    name: str,
    version: str,
    spec: Spec,
    episodes: list[dict[str, Any]],
    shard_sizes: Sequence[int],
    split: str = "train",
    template: str | None = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
    file_format: str | None = "tfrecord",
    packed: bool = True,
) -> Path:
    """Write a TFDS build directory `root/name/version` (one record per episode); return it."""
    assert sum(shard_sizes) == len(episodes)
    out = root / name / version
    out.mkdir(parents=True, exist_ok=True)
    (out / "features.json").write_text(json.dumps(features_json(spec), indent=4))
    n_shards = len(shard_sizes)
    total = 0
    it = iter(episodes)
    for index, size in enumerate(shard_sizes):
        blob = b""
        for _ in range(size):
            episode = next(it)
            length = int(episode["_length"])
            blob += frame(encode_example(_record_features(spec, episode, length), packed))
        shard = f"{name}-{split}.tfrecord-{index:05d}-of-{n_shards:05d}"
        (out / shard).write_bytes(blob)
        total += len(blob)
    split_json: dict[str, Any] = {"name": split, "numBytes": str(total), "shardLengths": [str(n) for n in shard_sizes]}
    if template is not None:
        split_json["filepathTemplate"] = template
    info: dict[str, Any] = {
        "citation": "@misc{fixture}",
        "description": f"{name} fixture",
        "moduleName": f"{name}.{name}_dataset_builder",
        "name": name,
        "releaseNotes": {version: "Initial release."},
        "splits": [split_json],
        "version": version,
    }
    if file_format is not None:
        info["fileFormat"] = file_format
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return out


def shard_records(path: Path) -> list[tuple[int, int]]:
    """(offset, data length) of each record of a shard, by walking the framing."""
    raw = path.read_bytes()
    out = []
    pos = 0
    while pos < len(raw):
        (length,) = struct.unpack_from("<Q", raw, pos)
        out.append((pos, length))
        pos += 12 + length + 4
    return out


# ------------------------------------------------------------------------------------------- datasets

RED = (255, 0, 0)


def camera_frames(length: int, height: int, width: int, shade0: int = 40) -> np.ndarray:
    """Frames whose background brightness encodes the step ((shade0 + 30 * t) % 256), red 8x8 top-left corner."""
    frames = np.empty((length, height, width, 3), dtype=np.uint8)
    for t in range(length):
        frames[t] = (shade0 + 30 * t) % 256
    frames[:, :8, :8] = RED
    return frames


def bridge_v2_spec(height: int, width: int) -> Spec:
    """bridge_dataset 1.0.0 (the Bridge V2 RLDS export OpenVLA/Octo use)."""
    spec: Spec = {
        "steps/action": ("tensor", (7,), "float32"),
        "steps/discount": ("scalar", "float32"),
        "steps/is_first": ("scalar", "bool"),
        "steps/is_last": ("scalar", "bool"),
        "steps/is_terminal": ("scalar", "bool"),
        "steps/language_embedding": ("tensor", (512,), "float32"),
        "steps/language_instruction": ("text",),
    }
    for i in range(4):
        spec[f"steps/observation/image_{i}"] = ("image", (height, width, 3), "jpeg")
    spec["steps/observation/state"] = ("tensor", (7,), "float32")
    spec["steps/reward"] = ("scalar", "float32")
    spec["episode_metadata/file_path"] = ("text",)
    spec["episode_metadata/episode_id"] = ("scalar", "int32")
    for i in range(4):
        spec[f"episode_metadata/has_image_{i}"] = ("scalar", "bool")
    spec["episode_metadata/has_language"] = ("scalar", "bool")
    return spec


def _rl_steps(length: int) -> dict[str, Any]:
    return {
        "steps/is_first": [t == 0 for t in range(length)],
        "steps/is_last": [t == length - 1 for t in range(length)],
        "steps/is_terminal": [t == length - 1 for t in range(length)],
        "steps/reward": [float(t == length - 1) for t in range(length)],
    }


def bridge_v2_episodes(lengths: Sequence[int] = (3, 4, 5), height: int = 24, width: int = 32) -> list[dict[str, Any]]:
    """Episodes with known values: zero first action, continuous gripper, image_3 only in episode 1."""
    episodes = []
    for e, length in enumerate(lengths):
        action = np.zeros((length, 7), dtype=np.float32)
        for t in range(1, length):
            action[t, :6] = [0.01 * t, -0.02 * e, 0.003, 0.1, -0.05 * t, 0.02]
            action[t, 6] = 0.98 if t < length - 1 else 0.02  # open, then closing at the end
        state = np.arange(length * 7, dtype=np.float32).reshape(length, 7) / 10 + e
        episode: dict[str, Any] = {
            "_length": length,
            "steps/action": action,
            "steps/discount": np.ones(length),
            "steps/language_instruction": [f"put the spoon in pot {e}"] * length if e != 2 else [""] * length,
            "steps/observation/image_0": camera_frames(length, height, width),
            "steps/observation/image_1": np.zeros((length, height, width, 3), dtype=np.uint8),  # unflagged blank
            "steps/observation/state": state,
            "episode_metadata/file_path": f"/data/bridge/raw/traj{e}.pkl",
            "episode_metadata/episode_id": e,
            "episode_metadata/has_image_0": True,
            "episode_metadata/has_image_1": True,
            "episode_metadata/has_image_2": False,
            "episode_metadata/has_image_3": e == 1,
            "episode_metadata/has_language": e != 2,
            **_rl_steps(length),
        }
        if e == 1:
            episode["steps/observation/image_3"] = camera_frames(length, height, width, shade0=100)
        episodes.append(episode)
    return episodes


def oxe_bridge_spec(height: int, width: int) -> Spec:
    """OXE `bridge` 0.1.0 (tfds.robotics.rtx.Bridge)."""
    return {
        "steps/action/open_gripper": ("tensor", (), "bool"),
        "steps/action/rotation_delta": ("tensor", (3,), "float32"),
        "steps/action/terminate_episode": ("tensor", (), "float32"),
        "steps/action/world_vector": ("tensor", (3,), "float32"),
        "steps/is_first": ("tensor", (), "bool"),
        "steps/is_last": ("tensor", (), "bool"),
        "steps/is_terminal": ("tensor", (), "bool"),
        "steps/observation/image": ("image", (height, width, 3), "jpeg"),
        "steps/observation/natural_language_embedding": ("tensor", (512,), "float32"),
        "steps/observation/natural_language_instruction": ("tensor", (), "string"),
        "steps/observation/state": ("tensor", (7,), "float32"),
        "steps/reward": ("scalar", "float32"),
    }


def oxe_bridge_episodes(lengths: Sequence[int] = (4, 3), height: int = 24, width: int = 32) -> list[dict[str, Any]]:
    """Episodes whose gripper is a bool `open_gripper`."""
    episodes = []
    for e, length in enumerate(lengths):
        t = np.arange(length, dtype=np.float32)
        episodes.append(
            {
                "_length": length,
                "steps/action/world_vector": np.stack([0.1 * t, 0.2 * t + e, -0.1 * t], axis=1),
                "steps/action/rotation_delta": np.stack([0.01 * t, 0.02 * t, 0.03 * t], axis=1),
                "steps/action/open_gripper": [s < 2 for s in range(length)],
                "steps/action/terminate_episode": [float(s == length - 1) for s in range(length)],
                "steps/observation/image": camera_frames(length, height, width),
                "steps/observation/natural_language_instruction": [f"open the drawer {e}"] * length,
                "steps/observation/state": np.full((length, 7), e, dtype=np.float32),
                **_rl_steps(length),
            }
        )
    return episodes


def fractal_spec(height: int, width: int) -> Spec:
    """fractal20220817_data 0.1.0 (RT-1), as in the TFDS catalog."""
    spec: Spec = {}
    for name in ("already_success", "feasible", "has_aspects", "success", "undesirable"):
        spec[f"aspects/{name}"] = ("tensor", (), "bool")
    for name in ("collection_mode", "data_type", "env", "location", "objects_family", "task_family"):
        spec[f"attributes/{name}"] = ("tensor", (), "int64")
        spec[f"attributes/{name}_name"] = ("tensor", (), "string")
    spec.update(
        {
            "steps/action/base_displacement_vector": ("tensor", (2,), "float32"),
            "steps/action/base_displacement_vertical_rotation": ("tensor", (1,), "float32"),
            "steps/action/gripper_closedness_action": ("tensor", (1,), "float32"),
            "steps/action/rotation_delta": ("tensor", (3,), "float32"),
            "steps/action/terminate_episode": ("tensor", (3,), "int32"),
            "steps/action/world_vector": ("tensor", (3,), "float32"),
            "steps/is_first": ("tensor", (), "bool"),
            "steps/is_last": ("tensor", (), "bool"),
            "steps/is_terminal": ("tensor", (), "bool"),
            "steps/observation/base_pose_tool_reached": ("tensor", (7,), "float32"),
            "steps/observation/gripper_closed": ("tensor", (1,), "float32"),
            "steps/observation/gripper_closedness_commanded": ("tensor", (1,), "float32"),
            "steps/observation/height_to_bottom": ("tensor", (1,), "float32"),
            "steps/observation/image": ("image", (height, width, 3), "jpeg"),
            "steps/observation/natural_language_embedding": ("tensor", (512,), "float32"),
            "steps/observation/natural_language_instruction": ("tensor", (), "string"),
            "steps/observation/orientation_box": ("tensor", (2, 3), "float32"),
            "steps/observation/orientation_start": ("tensor", (4,), "float32"),
            "steps/observation/robot_orientation_positions_box": ("tensor", (3, 3), "float32"),
            "steps/observation/rotation_delta_to_go": ("tensor", (3,), "float32"),
            "steps/observation/src_rotation": ("tensor", (4,), "float32"),
            "steps/observation/vector_to_go": ("tensor", (3,), "float32"),
            "steps/observation/workspace_bounds": ("tensor", (3, 3), "float32"),
            "steps/reward": ("scalar", "float32"),
        }
    )
    return spec


FRACTAL_GRIPPER = [[0, 1, 0, 0, -1, 0], [-1, 0, 0, 1, 0], [0, 0, 0, 0]]  # relative: +1 close, -1 open, 0 keep


def fractal_episodes(height: int = 32, width: int = 40) -> list[dict[str, Any]]:
    """Episodes with relative gripper commands FRACTAL_GRIPPER and a one-hot terminate_episode."""
    episodes = []
    for e, grip in enumerate(FRACTAL_GRIPPER):
        length = len(grip)
        t = np.arange(length, dtype=np.float32)
        terminate = np.zeros((length, 3), dtype=np.int32)
        terminate[:, 1] = 1
        terminate[-1] = [1, 0, 0]
        episodes.append(
            {
                "_length": length,
                "steps/action/world_vector": np.stack([t, -t, 0.5 * t], axis=1) / 100,
                "steps/action/rotation_delta": np.stack([t, t, -t], axis=1) / 50,
                "steps/action/gripper_closedness_action": np.asarray(grip, dtype=np.float32)[:, None],
                "steps/action/terminate_episode": terminate,
                "steps/observation/base_pose_tool_reached": np.tile(np.arange(7, dtype=np.float32), (length, 1)),
                "steps/observation/gripper_closed": np.full((length, 1), 0.5, dtype=np.float32),
                "steps/observation/image": camera_frames(length, height, width),
                "steps/observation/natural_language_instruction": [f"pick coke can {e}"] * length,
                "attributes/env_name": "mobile_manipulator",
                "aspects/success": True,
                **_rl_steps(length),
            }
        )
    return episodes


def libero_rlds_spec(height: int, width: int) -> Spec:
    """OpenVLA's modified_libero_rlds suites (e.g. libero_10_no_noops 1.0.0, builder name `liber_o10`)."""
    return {
        "steps/action": ("tensor", (7,), "float32"),
        "steps/discount": ("scalar", "float32"),
        "steps/is_first": ("scalar", "bool"),
        "steps/is_last": ("scalar", "bool"),
        "steps/is_terminal": ("scalar", "bool"),
        "steps/language_instruction": ("text",),
        "steps/observation/image": ("image", (height, width, 3), "jpeg"),
        "steps/observation/wrist_image": ("image", (height, width, 3), "jpeg"),
        "steps/observation/state": ("tensor", (8,), "float32"),
        "steps/observation/joint_state": ("tensor", (7,), "float32"),
        "steps/reward": ("scalar", "float32"),
        "episode_metadata/file_path": ("text",),
    }


def libero_rlds_episodes(lengths: Sequence[int] = (5, 4), height: int = 16, width: int = 16) -> list[dict[str, Any]]:
    """Episodes with LIBERO's raw actions: arm deltas, gripper -1 (open) then +1 (close) from the middle."""
    episodes = []
    for e, length in enumerate(lengths):
        t = np.arange(length, dtype=np.float32)
        action = np.zeros((length, 7), dtype=np.float32)
        action[:, :6] = np.stack([t, -t, 0.5 * t, 0.1 * t, 0.0 * t, e + 0.0 * t], axis=1) / 10
        action[:, 6] = np.where(t < length // 2, -1.0, 1.0)
        episodes.append(
            {
                "_length": length,
                "steps/action": action,
                "steps/discount": np.ones(length),
                "steps/language_instruction": [f"put both moka pots on the stove {e}"] * length,
                "steps/observation/image": camera_frames(length, height, width),
                "steps/observation/wrist_image": camera_frames(length, height, width, shade0=100),
                "steps/observation/state": np.tile(np.arange(8, dtype=np.float32), (length, 1)) + e,
                "steps/observation/joint_state": np.zeros((length, 7), dtype=np.float32),
                "episode_metadata/file_path": f"/data/libero_10/KITCHEN_SCENE3_demo_{e}.hdf5",
                **_rl_steps(length),
            }
        )
    return episodes


def many_bridge_episodes(count: int, length: int = 8, height: int = 8, width: int = 8, seed: int = 0) -> list[dict]:
    """`count` small Bridge V2 episodes with random arm actions and a continuous gripper (benchmarks, sampler
    tests): every episode's instruction names its index."""
    rng = np.random.default_rng(seed)
    spec_cameras = ("steps/observation/image_0",)
    episodes = []
    for e in range(count):
        action = rng.uniform(-0.02, 0.02, size=(length, 7)).astype(np.float32)
        action[:, 6] = np.where(np.arange(length) < length // 2, 1.0, 0.0)
        action[0] = 0.0
        episodes.append(
            {
                "_length": length,
                "steps/action": action,
                "steps/language_instruction": [f"task {e}"] * length,
                **{key: camera_frames(length, height, width, shade0=e % 200) for key in spec_cameras},
                "steps/observation/state": np.cumsum(action, axis=0),
                "episode_metadata/has_image_0": True,
                **_rl_steps(length),
            }
        )
    return episodes
