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
from PIL import Image, ImageDraw, ImageFilter

from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards import ShardSet, ShardWriter

JPEG_QUALITY = 95
TARGET_RATIO = 0.6


# -- images -----------------------------------------------------------------------------------------
def _find_rgb(obj: Any) -> np.ndarray | None:
    """First uint8 (H, W, 3) array inside an observation (dict / list / array)."""
    if isinstance(obj, np.ndarray) and obj.dtype == np.uint8 and obj.ndim == 3 and obj.shape[-1] == 3:
        return obj
    if isinstance(obj, dict):
        for value in obj.values():
            found = _find_rgb(value)
            if found is not None:
                return found
    if isinstance(obj, list | tuple):
        for value in obj:
            found = _find_rgb(value)
            if found is not None:
                return found
    return None


def _load_sim() -> tuple[Any, Any]:
    """(TabletopEnv, TabletopConfig or None) from `datasets_build.sim` (its package or its env module)."""
    from datasets_build import sim

    env_cls = getattr(sim, "TabletopEnv", None)
    config_cls = getattr(sim, "TabletopConfig", None)
    if env_cls is None:
        from datasets_build.sim import env as sim_env  # the package may not re-export it yet

        env_cls = sim_env.TabletopEnv
        config_cls = getattr(sim_env, "TabletopConfig", None)
    return env_cls, config_cls


def _sim_images(n: int, size: int, distinct: int = 64) -> list[np.ndarray]:
    """Static-camera frames of the demo tabletop sim under seeded random actions, `distinct` of them cycled to n."""
    env_cls, config_cls = _load_sim()
    env = env_cls(config_cls(image_size=size)) if config_cls is not None else env_cls()
    frames: list[np.ndarray] = []
    try:
        space = getattr(env, "action_space", None)
        if space is not None:
            space.seed(0)
        episode = 0
        while len(frames) < min(n, distinct):
            obs = env.reset(seed=episode)
            obs = obs[0] if isinstance(obs, tuple) else obs
            for _ in range(8):
                rgb = obs.get("rgb_static") if isinstance(obs, dict) else None
                rgb = rgb if rgb is not None else _find_rgb(obs)
                if rgb is None:
                    raise RuntimeError("TabletopEnv observation holds no uint8 RGB image")
                image = Image.fromarray(rgb)
                if image.size != (size, size):
                    image = image.resize((size, size), Image.Resampling.BICUBIC)
                frames.append(np.asarray(image))
                action = space.sample() if space is not None else np.zeros(7, np.float32)
                result = env.step(action)
                obs = result[0] if isinstance(result, tuple) else result
            episode += 1
    finally:
        close = getattr(env, "close", None)
        if callable(close):
            close()
    return [frames[i % len(frames)] for i in range(n)]


def _synthetic_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A tabletop-like picture: wall/table gradients, shaded blocks and discs, soft edges; no noise."""
    y = np.linspace(0.0, 1.0, size)[:, None, None]
    x = np.linspace(0.0, 1.0, size)[None, :, None]
    wall, table = rng.uniform(120, 230, 3), rng.uniform(60, 180, 3)
    horizon = rng.uniform(0.25, 0.45)
    base = np.where(y < horizon, wall * (0.8 + 0.2 * y / horizon), table * (0.7 + 0.3 * y))
    base = base * (0.9 + 0.1 * x)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 7))):
        color = tuple(int(c) for c in rng.uniform(20, 255, 3))
        cx, cy = rng.uniform(0.1, 0.9) * size, rng.uniform(horizon + 0.05, 0.95) * size
        r = rng.uniform(0.04, 0.12) * size
        box = (cx - r, cy - r, cx + r, cy + r)
        if rng.random() < 0.5:
            draw.rectangle(box, fill=color)
            shade = tuple(max(0, c - 60) for c in color)
            draw.rectangle((box[0], box[3] - r * 0.3, box[2], box[3]), fill=shade)
        else:
            draw.ellipse(box, fill=color, outline=tuple(max(0, c - 80) for c in color), width=2)
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius=0.8)))


def make_images(n: int, size: int) -> tuple[list[np.ndarray], str]:
    """n RGB uint8 images of size x size and a description of where they came from.

    Demo-sim frames when `datasets_build.sim.TabletopEnv` exists and runs; smooth synthetic scenes otherwise.
    """
    try:
        images = _sim_images(n, size)
        return images, f"demo sim frames (TabletopEnv static camera, {min(n, 64)} distinct, cycled)"
    except Exception as exc:  # the sim is optional here: fall back, and say why
        reason = f"demo sim unavailable ({type(exc).__name__}: {exc})"
    rng = np.random.default_rng(0)
    distinct = [_synthetic_image(rng, size) for _ in range(min(n, 64))]
    images = [distinct[i % len(distinct)] for i in range(n)]
    return images, f"synthetic tabletop-like images ({len(distinct)} distinct, cycled); {reason}"


# -- measured bodies ---------------------------------------------------------------------------------
def _samples(images: list[np.ndarray]) -> Iterator[Sample]:
    for i, image in enumerate(images):
        yield Sample(
            key=f"b{i:07d}",
            messages=[user_turn("What is on the table?"), assistant_turn("A red block left of a blue bowl.")],
            images=[image],
            task="bench",
            source="synthetic",
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
