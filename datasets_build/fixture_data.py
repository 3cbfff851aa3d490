"""`fixture_data`: demo-sim expert episodes written in a source's own on-disk format, for a recipe's tiny profile.

A paper recipe reads CALVIN npz splits, Bridge RLDS tfrecords or LIBERO hdf5 files; its `profile=tiny` reads
the same formats, written here from a few episodes of the demo tabletop sim (real renders, scripted-expert
actions, language), so the tiny chain exercises the real readers end to end:

- `calvin`: a `training/` split: one npz per frame under contiguous global indices (`rgb_static`,
  `rgb_gripper`, `depth_static`, `depth_gripper`, `rel_actions` = clip(delta / (0.02 m, 0.05 rad)) with the
  gripper +1 open, `robot_obs`, `scene_obs`), `ep_start_end_ids.npy`, `scene_info.npy` and
  `lang_annotations/auto_lang_ann.npy` with one language window per episode;
- `rlds`: a TFDS build folder named like Bridge V2 (`bridge_dataset` 1.0.0: `features.json`,
  `dataset_info.json`, `bridge_dataset-train.tfrecord-0000i-of-0000n` of `tf.train.Example` records with
  `steps/observation/image_0` JPEGs, `steps/observation/state`, `steps/action`, `steps/language_instruction`);
- `libero`: one `<TASK>_demo.hdf5` per task family (`data/demo_i/actions` with LIBERO's -1 open / +1 close
  gripper, `obs/agentview_rgb` and `obs/eye_in_hand_rgb` stored upside down as robosuite renders them);
- `lerobot`: the demo recording itself (LeRobot v3.0), as `demo_episodes` writes it.

Everything is written under a temporary name and renamed when complete; `fixture_data.json` (written last)
records what is there.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.errors import ConfigError
from datasets_build.outputs import staged_output_folder

FORMATS = ("calvin", "rlds", "libero", "lerobot")
MARKER = "fixture_data.json"
OUTPUT_KIND = "fixture-data"  # the marker kind of its folders (datasets_build.outputs)
CALVIN_SCALE = np.array([0.02, 0.02, 0.02, 0.05, 0.05, 0.05])  # rel_actions units: metres / radians per 1.0


@dataclass
class FixtureDataConfig:
    """How many demo episodes, in which format, where; `tasks` are demo task families (all when empty)."""

    format: str = "lerobot"
    out: str = ""
    episodes: int = 6
    seed: int = 0
    tasks: list[str] = field(default_factory=list)
    image_size: int = 64
    shards: int = 2  # rlds: tfrecord files
    workers: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format: must be one of {list(FORMATS)}, got {self.format!r}")
        if not self.out:
            raise ConfigError("out: the output folder is required")
        if self.episodes < 1 or self.shards < 1 or self.image_size < 16:
            raise ConfigError("episodes and shards must be >= 1, image_size >= 16")


def write_fixture_data(cfg: FixtureDataConfig) -> dict[str, Any]:
    """Record the episodes and write them in `cfg.format` into `cfg.out`; returns what was written."""
    from datasets_build.demo_episodes import DemoEpisodesConfig, iter_expert_episodes, record_demo_episodes

    out = Path(cfg.out)
    with staged_output_folder(out, OUTPUT_KIND, cfg.overwrite) as tmp:
        demo = DemoEpisodesConfig(
            out=str(tmp / "lerobot"), episodes=cfg.episodes, seed=cfg.seed, tasks=list(cfg.tasks),
            workers=cfg.workers, image_size=cfg.image_size, wrist_size=cfg.image_size,
        )  # fmt: skip
        if cfg.format == "lerobot":
            summary = record_demo_episodes(demo)
            for item in (tmp / "lerobot").iterdir():
                item.rename(tmp / item.name)
            (tmp / "lerobot").rmdir()
            steps = int(summary["steps"])
        else:
            episodes = list(iter_expert_episodes(demo))
            write_episodes(episodes, cfg.format, tmp, shards=cfg.shards)
            steps = sum(len(e) for e in episodes)
        record = {"format": cfg.format, "episodes": cfg.episodes, "steps": steps, "seed": cfg.seed, "out": str(out)}
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def write_episodes(episodes: list[Any], fmt: str, root: Path, shards: int = 1) -> None:
    """Write Episodes (all with a `static` camera) into the existing folder `root` in format calvin, rlds or libero."""
    if fmt == "calvin":
        _write_calvin(root, episodes)
    elif fmt == "rlds":
        _write_rlds(root, episodes, shards)
    elif fmt == "libero":
        _write_libero(root, episodes)
    else:
        raise ConfigError(f"format: {fmt!r} is not written from episodes (calvin, rlds or libero)")


# ------------------------------------------------------------------------------------------------- CALVIN
def _write_calvin(root: Path, episodes: list[Any]) -> None:
    from datasets_build.actions import gripper_to_calvin

    split = root / "training"
    (split / "lang_annotations").mkdir(parents=True)
    bounds: list[tuple[int, int]] = []
    start = 0
    for episode in episodes:
        length = len(episode)
        arm = np.clip(episode.actions[:, :6] / CALVIN_SCALE, -1.0, 1.0)
        rel = np.concatenate([arm, gripper_to_calvin(episode.actions[:, 6])[:, None]], axis=1)
        state = np.zeros((length, 15))
        if episode.state is not None:
            state[:, :7] = episode.state[:, :7]
        state[:, 14] = rel[:, 6]
        static = episode.frames["static"]
        wrist = episode.frames.get("wrist", static)
        depth = episode.depth.get("static")
        wrist_depth = episode.depth.get("wrist")
        for t in range(length):
            arrays: dict[str, np.ndarray] = {
                "rgb_static": static[t],
                "rgb_gripper": wrist[t],
                "rel_actions": rel[t],
                "actions": rel[t],
                "robot_obs": state[t],
                "scene_obs": np.zeros(24),
            }
            if depth is not None:
                arrays["depth_static"] = depth[t].astype(np.float32)
            arrays["depth_gripper"] = (
                wrist_depth[t] if wrist_depth is not None else np.zeros(wrist.shape[1:3])
            ).astype(np.float32)
            np.savez_compressed(split / f"episode_{start + t:07d}.npz", **arrays)  # type: ignore[arg-type]
        bounds.append((start, start + length - 1))
        start += length
    np.save(split / "ep_start_end_ids.npy", np.asarray(bounds, dtype=np.int64))
    np.save(split / "ep_lens.npy", np.asarray([e - s + 1 for s, e in bounds], dtype=np.int64))
    _save_pickled(split / "scene_info.npy", {"calvin_scene_A": [0, start - 1]})
    language = {
        "language": {
            "ann": [e.instruction for e in episodes],
            "task": [e.task or "demo" for e in episodes],
            "emb": np.zeros((len(episodes), 1, 384), dtype=np.float32),
        },
        "info": {"indx": bounds, "episodes": []},
    }
    _save_pickled(split / "lang_annotations" / "auto_lang_ann.npy", language)


def _save_pickled(path: Path, obj: Any) -> None:
    """An object array as CALVIN ships them: a .npy holding one pickled Python object."""
    array = np.empty((), dtype=object)
    array[()] = obj
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    path.write_bytes(header.getvalue() + pickle.dumps(array, protocol=3))


# -------------------------------------------------------------------------------------------------- RLDS
_TFDS = "tensorflow_datasets.core.features."
_STEP_SPEC: dict[str, tuple[str, Any]] = {  # key -> (kind, shape) in the Bridge V2 (bridge_dataset 1.0.0) layout
    "action": ("float32", (7,)),
    "discount": ("float32", ()),
    "reward": ("float32", ()),
    "is_first": ("bool", ()),
    "is_last": ("bool", ()),
    "is_terminal": ("bool", ()),
    "language_instruction": ("text", ()),
    "observation/image_0": ("image", None),
    "observation/state": ("float32", (7,)),
}
_EPISODE_SPEC: dict[str, tuple[str, Any]] = {
    "episode_metadata/file_path": ("text", ()),
    "episode_metadata/episode_id": ("int32", ()),
    "episode_metadata/has_image_0": ("bool", ()),
    "episode_metadata/has_language": ("bool", ()),
}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _feature(values: list[Any], kind: str) -> bytes:
    """A tf.train.Feature: bytes_list (1), float_list (2, packed) or int64_list (3, packed)."""
    if kind in ("text", "image"):
        return _field(1, b"".join(_field(1, v) for v in values))
    if kind == "float32":
        return _field(2, _field(1, np.asarray(values, dtype="<f4").tobytes()))
    return _field(3, _field(1, b"".join(_varint(int(v)) for v in values)))


def _example(features: dict[str, tuple[str, list[Any]]]) -> bytes:
    """tf.train.Example{features: Features{feature: map<string, Feature>}}."""
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, _feature(values, kind)))
        for key, (kind, values) in sorted(features.items())
    )
    return _field(1, entries)


def _frame_record(data: bytes) -> bytes:
    """TFRecord framing: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    from datasets_build.sources.tfrecord import masked_crc32c

    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _leaf(kind: str, shape: Any, size: int) -> dict[str, Any]:
    if kind == "image":
        dims = {"dimensions": [str(size), str(size), "3"]}
        return {"pythonClassName": _TFDS + "image_feature.Image",
                "image": {"shape": dims, "dtype": "uint8", "encodingFormat": "jpeg"}}  # fmt: skip
    if kind == "text":
        return {"pythonClassName": _TFDS + "text_feature.Text", "text": {}}
    cls = "tensor_feature.Tensor" if shape else "scalar.Scalar"
    tensor_shape = {"dimensions": [str(d) for d in shape]} if shape else {}
    return {"pythonClassName": _TFDS + cls, "tensor": {"shape": tensor_shape, "dtype": kind, "encoding": "none"}}


def _features_json(size: int) -> dict[str, Any]:
    def tree(spec: dict[str, tuple[str, Any]]) -> dict[str, Any]:
        root: dict[str, Any] = {
            "pythonClassName": _TFDS + "features_dict.FeaturesDict",
            "featuresDict": {"features": {}},
        }
        for key, (kind, shape) in spec.items():
            node = root
            parts = key.split("/")
            for part in parts[:-1]:
                children = node["featuresDict"]["features"]
                node = children.setdefault(
                    part, {"pythonClassName": _TFDS + "features_dict.FeaturesDict", "featuresDict": {"features": {}}}
                )
            node["featuresDict"]["features"][parts[-1]] = _leaf(kind, shape, size)
        return root

    root = tree(_EPISODE_SPEC)
    steps = {
        "pythonClassName": _TFDS + "dataset_feature.Dataset",
        "sequence": {"feature": tree(_STEP_SPEC), "length": "-1"},
    }
    root["featuresDict"]["features"]["steps"] = steps
    return root


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _write_rlds(root: Path, episodes: list[Any], shards: int) -> None:
    name = "bridge_dataset"
    shards = min(shards, len(episodes))
    per_shard = np.array_split(np.arange(len(episodes)), shards)
    total = 0
    for index, ids in enumerate(per_shard):
        blob = b""
        for i in ids:
            episode = episodes[int(i)]
            length = len(episode)
            state = np.zeros((length, 7), dtype=np.float32)
            if episode.state is not None:
                state[:, :7] = episode.state[:, :7]
            last = [t == length - 1 for t in range(length)]
            features: dict[str, tuple[str, list[Any]]] = {
                "steps/action": ("float32", episode.actions.reshape(-1).tolist()),
                "steps/discount": ("float32", [1.0] * length),
                "steps/reward": ("float32", [float(x) for x in last]),
                "steps/is_first": ("bool", [t == 0 for t in range(length)]),
                "steps/is_last": ("bool", last),
                "steps/is_terminal": ("bool", last),
                "steps/language_instruction": ("text", [episode.instruction.encode()] * length),
                "steps/observation/image_0": ("image", [_jpeg(f) for f in episode.frames["static"]]),
                "steps/observation/state": ("float32", state.reshape(-1).tolist()),
                "episode_metadata/file_path": ("text", [f"demo/{episode.episode_id}".encode()]),
                "episode_metadata/episode_id": ("int32", [int(i)]),
                "episode_metadata/has_image_0": ("bool", [True]),
                "episode_metadata/has_language": ("bool", [True]),
            }
            blob += _frame_record(_example(features))
        (root / f"{name}-train.tfrecord-{index:05d}-of-{shards:05d}").write_bytes(blob)
        total += len(blob)
    size = int(episodes[0].frames["static"].shape[1])
    (root / "features.json").write_text(json.dumps(_features_json(size), indent=2), encoding="utf-8")
    info = {
        "name": name,
        "version": "1.0.0",
        "description": "demo-sim expert episodes in the Bridge V2 RLDS layout (vlm4vla fixture_data)",
        "fileFormat": "tfrecord",
        "moduleName": f"{name}.{name}_dataset_builder",
        "splits": [{
            "name": "train",
            "numBytes": str(total),
            "shardLengths": [str(len(ids)) for ids in per_shard],
            "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        }],
    }  # fmt: skip
    (root / "dataset_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


# ------------------------------------------------------------------------------------------------- LIBERO
def _write_libero(root: Path, episodes: list[Any]) -> None:
    import h5py

    from datasets_build.actions import gripper_to_libero

    by_task: dict[str, list[Any]] = {}
    for episode in episodes:
        by_task.setdefault(episode.task or "demo", []).append(episode)
    for task, group in by_task.items():
        instruction = group[0].instruction
        with h5py.File(root / f"{task.upper()}_demo.hdf5", "w") as handle:
            data = handle.create_group("data")
            data.attrs["problem_info"] = json.dumps({"problem_name": task, "language_instruction": instruction})
            data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "demo_tabletop"})
            data.attrs["macros_image_convention"] = "opengl"  # stored upside down, as robosuite renders
            for i, episode in enumerate(group):
                length = len(episode)
                actions = np.concatenate(
                    [episode.actions[:, :6], gripper_to_libero(episode.actions[:, 6])[:, None]], axis=1
                )
                demo = data.create_group(f"demo_{i}")
                demo.create_dataset("actions", data=actions.astype(np.float64))
                rewards = np.zeros(length, dtype=np.uint8)
                rewards[-1] = int(bool(episode.success))
                demo.create_dataset("rewards", data=rewards)
                demo.create_dataset("dones", data=rewards)
                demo.create_dataset("states", data=np.zeros((length, 9)))
                obs = demo.create_group("obs")
                obs.create_dataset("agentview_rgb", data=episode.frames["static"][:, ::-1, ::-1])
                wrist = episode.frames.get("wrist", episode.frames["static"])
                obs.create_dataset("eye_in_hand_rgb", data=wrist[:, ::-1, ::-1])
                state = episode.state if episode.state is not None else np.zeros((length, 8), dtype=np.float32)
                obs.create_dataset("ee_pos", data=state[:, :3].astype(np.float64))
                obs.create_dataset("ee_ori", data=state[:, 3:6].astype(np.float64))
                obs.create_dataset("gripper_states", data=np.repeat(state[:, 6:7], 2, axis=1).astype(np.float64))
                obs.create_dataset("joint_states", data=np.zeros((length, 7)))
