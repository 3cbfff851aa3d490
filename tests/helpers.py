"""Episodes made by code for tests that must not depend on the simulator, and shards in the older record layout."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.camera import CameraModel
from datasets_build.episode import Episode, ObjectInfo


def synthetic_episode(length: int = 6, size: int = 32, seed: int = 0, episode_id: str = "ep0") -> Episode:
    """A small episode with every geometry field, values known per step."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 255, size=(length, size, size, 3), dtype=np.uint8)
    frames[:, :4, :4] = [255, 0, 0]  # red top-left corner
    wrist = rng.integers(0, 255, size=(length, size // 2, size // 2, 3), dtype=np.uint8)
    actions = np.zeros((length, 7), dtype=np.float32)
    actions[:, 0] = np.linspace(-0.02, 0.02, length)
    actions[:, 5] = 0.01 * np.arange(length)
    actions[:, 6] = (np.arange(length) < length // 2).astype(np.float32)
    depth = np.linspace(0.5, 1.5, length * size * size, dtype=np.float32).reshape(length, size, size)
    seg = np.zeros((length, size, size), dtype=np.int32)
    seg[:, 10:20, 10:20] = 3
    cam = CameraModel.from_look_at([1, 0, 1], [0, 0, 0], [0, 0, 1], 60, size, size)
    wrist_cam = CameraModel.from_look_at([0.5, 0, 0.5], [0, 0, 0], [0, 0, 1], 60, size // 2, size // 2)
    wrist_ext = np.tile(wrist_cam.extrinsics, (length, 1, 1))
    wrist_ext[:, 2, 3] += np.arange(length) * 0.01
    block = ObjectInfo(
        name="red block",
        positions=np.cumsum(np.full((length, 3), 0.01, dtype=np.float32), axis=0),
        orientations=np.tile([0, 0, 0, 1], (length, 1)),
        size=[0.04, 0.04, 0.04],
        segmentation_id=3,
        category="block",
    )
    return Episode(
        episode_id=episode_id,
        source="demo",
        frames={"static": frames, "wrist": wrist},
        actions=actions,
        instruction="pick up the red block",
        state=rng.normal(size=(length, 8)).astype(np.float32),
        depth={"static": depth, "wrist": depth[:, : size // 2, : size // 2].copy()},
        segmentation={"static": seg, "wrist": seg[:, : size // 2, : size // 2].copy()},
        camera={"static": cam, "wrist": wrist_cam},
        camera_extrinsics={"wrist": wrist_ext},
        objects={"red block": block},
        fps=10,
        task="pick_block",
        success=True,
        meta={"seed": seed},
    )


def legacy_record(sample: Any, jpeg_quality: int = 95) -> dict[str, Any]:
    """`sample` encoded in record layout 1, exactly as toolkits before layout 2 wrote it: `{i}.jpg|png` per image,
    `target.png`, and `meta` as an object in the JSON (for tests that old shards still read)."""
    payload = {
        "schema_version": 1,
        "messages": sample.messages,
        "task": sample.task,
        "source": sample.source,
        "meta": sample.meta,
        "images": len(sample.images),
        "image_format": sample.image_format,
        "has_target": sample.target is not None,
    }
    record: dict[str, Any] = {
        "__key__": sample.key,
        "json": json.dumps(payload, separators=(",", ":"), sort_keys=True).encode(),
    }
    for i, image in enumerate(sample.images):
        buf = io.BytesIO()
        if sample.image_format == "jpg":
            image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
        else:
            image.save(buf, format="PNG")
        record[f"{i}.{sample.image_format}"] = buf.getvalue()
    if sample.target is not None:
        buf = io.BytesIO()
        sample.target.save(buf, format="PNG")
        record["target.png"] = buf.getvalue()
    return record


def write_legacy_shards(out: Path, name: str, samples: list[Any], per_shard: int = 1000) -> Path:
    """A layout-1 shard folder (tars + a schema_version 1 card) as older toolkits wrote it."""
    from webdataset import TarWriter

    from datasets_build.shards.card import DatasetCard, ShardEntry
    from datasets_build.shards.reader import sha256_file

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for start in range(0, len(samples), per_shard):
        chunk = samples[start : start + per_shard]
        path = out / f"{name}-{start // per_shard:06d}.tar"
        with open(path, "wb") as fh:
            writer = TarWriter(fh, user="", group="", mode=0o444, mtime=0, encoder=False, compress=False)
            for sample in chunk:
                writer.write(legacy_record(sample))
            writer.close()
        entries.append(ShardEntry(path.name, len(chunk), path.stat().st_size, sha256_file(path)))
    tasks = Counter(s.task for s in samples)
    sources = Counter(s.source for s in samples)
    per: dict[str, Counter[str]] = {}
    for s in samples:
        per.setdefault(s.task, Counter())[s.source] += 1
    DatasetCard(
        name=name,
        schema_version=1,
        num_samples=len(samples),
        counts_per_task=dict(tasks),
        counts_per_source=dict(sources),
        counts_per_task_source={t: dict(c) for t, c in per.items()},
        build_config={"name": name},
        shards=entries,
    ).write(out)
    return out
