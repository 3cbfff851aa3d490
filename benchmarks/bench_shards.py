"""Shard IO throughput against its raw limit, measured in one process on the same images.

Writing: `Sample` + `ShardWriter` (JPEG q95, tar, sha256, card) vs PIL JPEG q95 encode + `tarfile` write.
Reading: `ShardSet` iteration to decoded `Sample`s vs PIL JPEG decode of the same JPEG bytes in memory.
Prints toolkit/raw throughput ratios (target >= 0.6). Usage:
    python benchmarks/bench_shards.py [--samples 2000] [--image-size 224] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards import ShardSet, ShardWriter
from datasets_build.sim import TASK_FAMILIES, TabletopConfig, TabletopEnv, rollout_expert

JPEG_QUALITY = 95
TARGET_RATIO = 0.6


# -- images -----------------------------------------------------------------------------------------
def make_images(n: int, size: int, distinct: int = 64) -> tuple[list[np.ndarray], str]:
    """n static-camera frames of the demo sim's expert rollouts (`distinct` of them, cycled) and their origin."""
    env = TabletopEnv(TabletopConfig(image_size=size))
    frames: list[np.ndarray] = []
    try:
        seed = 0
        while len(frames) < min(n, distinct):
            task = sorted(TASK_FAMILIES)[seed % len(TASK_FAMILIES)]
            frames.extend(rollout_expert(env, task, seed).frames["static"][::4])
            seed += 1
    finally:
        env.close()
    frames = frames[: min(n, distinct)]
    return [frames[i % len(frames)] for i in range(n)], f"demo sim expert frames ({len(frames)} distinct, cycled)"


# -- measured bodies ---------------------------------------------------------------------------------
def _samples(images: list[np.ndarray]) -> Iterator[Sample]:
    for i, image in enumerate(images):
        yield Sample(
            key=f"b{i:07d}",
            messages=[user_turn("What is on the table?"), assistant_turn("A red block left of a blue bowl.")],
            images=[image],
            task="bench",
            source="demo",
            meta={"i": i},
        )


def toolkit_write(images: list[np.ndarray], out: Path) -> None:
    """Samples -> ShardWriter (the measured toolkit path, card included)."""
    with ShardWriter(out, "bench", overwrite=True, max_samples_per_shard=1000) as writer:
        for sample in _samples(images):
            writer.write(sample)


def raw_write(images: list[np.ndarray], out: Path) -> list[bytes]:
    """The raw limit: PIL JPEG encode + tarfile write, one member per image; returns the JPEG bytes."""
    encoded = []
    with tarfile.open(out, "w") as tar:
        for i, array in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(array).save(buf, format="JPEG", quality=JPEG_QUALITY)
            data = buf.getvalue()
            info = tarfile.TarInfo(f"b{i:07d}.0.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            encoded.append(data)
    return encoded


def toolkit_read(folder: Path) -> int:
    """ShardSet -> decoded Samples (images fully decoded)."""
    count = 0
    for sample in ShardSet(folder):
        count += len(sample.images)
    return count


def raw_read(encoded: list[bytes]) -> int:
    """The raw limit: PIL JPEG decode of the same bytes from memory."""
    for data in encoded:
        Image.open(io.BytesIO(data)).load()
    return len(encoded)


def _best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the ratios, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings per measurement")
    parser.add_argument("--json", type=Path, default=None, help="write results (and the machine) here")
    args = parser.parse_args(argv)

    images, origin = make_images(args.samples, args.image_size)
    n = len(images)
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        root = Path(tmp)
        encoded: list[bytes] = []

        def do_raw_write() -> None:
            encoded[:] = raw_write(images, root / "raw.tar")

        toolkit_write(images, root / "warmup")  # imports, allocator warm-up
        t_write = _best(lambda: toolkit_write(images, root / "shards"), args.repeat)
        r_write = _best(do_raw_write, args.repeat)
        t_read = _best(lambda: toolkit_read(root / "shards"), args.repeat)
        r_read = _best(lambda: raw_read(encoded), args.repeat)
        shard_bytes = sum(p.stat().st_size for p in (root / "shards").glob("*.tar"))

    result = {
        "benchmark": "shards",
        "images": origin,
        "samples": n,
        "image_size": args.image_size,
        "jpeg_quality": JPEG_QUALITY,
        "repeat": args.repeat,
        "shard_bytes": shard_bytes,
        "write": {
            "toolkit_samples_per_s": n / t_write,
            "raw_samples_per_s": n / r_write,
            "ratio": r_write / t_write,
        },
        "read": {
            "toolkit_samples_per_s": n / t_read,
            "raw_samples_per_s": n / r_read,
            "ratio": r_read / t_read,
        },
        "target_ratio": TARGET_RATIO,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    }
    print(f"images: {origin}")
    print(f"{n} samples, {args.image_size}x{args.image_size} JPEG q{JPEG_QUALITY}, best of {args.repeat}")
    for phase in ("write", "read"):
        r = result[phase]
        verdict = "ok" if r["ratio"] >= TARGET_RATIO else "BELOW TARGET"
        print(
            f"{phase:5s}: toolkit {r['toolkit_samples_per_s']:8.1f}/s  raw {r['raw_samples_per_s']:8.1f}/s  "
            f"ratio {r['ratio']:.2f} (target >= {TARGET_RATIO}) {verdict}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
