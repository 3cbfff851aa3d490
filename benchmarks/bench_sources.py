"""Source readers' frames/s against the raw limit of their storage, measured in one run on the same files.

Each dataset is written by code in its true on-disk layout, with demo-sim frames as image content:
  rlds    bridge_dataset 1.0.0, 256x256 JPEG main camera      raw: PIL JPEG decode of the same bytes
  calvin  per-frame npz (static 200, gripper 84, depth)       raw: np.load of the same npz members
  libero  hdf5, agentview + wrist 128x128                     raw: h5py read of the same arrays
  demo    LeRobot v3.0 parquet with PNG images and geometry   raw: parquet read + PNG decode of the same cells
A "frame" is one step with every camera the reader yields by default. Target: ratio >= 0.7.
Usage: python benchmarks/bench_sources.py [--steps 400] [--json OUT]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes
from datasets_build.sim import TASK_FAMILIES, TabletopConfig, TabletopEnv, rollout_expert
from datasets_build.sources import open_source
from tests import calvin_fixtures, rlds_fixtures
from tests.test_libero import write_libero

TARGET = 0.7


def sim_frames(n: int) -> list[np.ndarray]:
    """`n` static-camera frames from expert rollouts (cycled), the image content of every dataset here."""
    env = TabletopEnv(TabletopConfig())
    frames: list[np.ndarray] = []
    seed = 0
    while len(frames) < min(n, 256):
        frames.extend(rollout_expert(env, sorted(TASK_FAMILIES)[seed % 6], seed).frames["static"])
        seed += 1
    env.close()
    return [frames[i % len(frames)] for i in range(n)]


def resized(frames: list[np.ndarray], size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BILINEAR)) for f in frames])


def best_of(fn: Callable[[], int], repeat: int) -> float:
    """Frames/s of the fastest of `repeat` runs of `fn` (which returns the frames it read)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        frames = fn()
        best = max(best, frames / (time.perf_counter() - start))
    return best


def reader(name: str, path: Path, **options: Any) -> Callable[[], int]:
    def run() -> int:
        return sum(len(ep) for ep in open_source(name, path, **options).episodes())

    return run


def build_rlds(tmp: Path, frames: list[np.ndarray], episode_len: int) -> tuple[Path, Callable[[], int]]:
    n_eps = len(frames) // episode_len
    eps = rlds_fixtures.bridge_v2_episodes(lengths=[episode_len] * n_eps, height=256, width=256)
    images = resized(frames, 256)
    for e, ep in enumerate(eps):
        ep["steps/observation/image_0"] = images[e * episode_len : (e + 1) * episode_len]
        ep["steps/observation/image_1"] = np.zeros_like(ep["steps/observation/image_0"])
        ep.pop("steps/observation/image_3", None)
        ep["episode_metadata/has_image_3"] = False
    spec = rlds_fixtures.bridge_v2_spec(256, 256)
    path = rlds_fixtures.write_rlds(
        tmp / "rlds", "bridge_dataset", "1.0.0", spec, eps, [n_eps // 2, n_eps - n_eps // 2]
    )
    blobs = [rlds_fixtures.encode_image(im) for im in images[: n_eps * episode_len]]

    def raw() -> int:
        for blob in blobs:
            np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        return len(blobs)

    return path, raw


def build_calvin(tmp: Path, frames: list[np.ndarray], episode_len: int) -> tuple[Path, Callable[[], int]]:
    n = (len(frames) // episode_len) * episode_len
    segments = [(s, s + episode_len - 1) for s in range(0, n, episode_len)]
    fixture = calvin_fixtures.write_calvin(
        tmp / "calvin",
        segments=segments,
        scenes=None,
        annotations=[(s, e, "lift the block", "lift") for s, e in segments],
    )
    static, wrist = resized(frames, 200), resized(frames, 84)
    paths = []
    for i, index in enumerate(fixture.frames):
        path = fixture.split_dir / fixture.name_format.format(index)
        arrays = dict(np.load(path))
        arrays["rgb_static"], arrays["rgb_gripper"] = static[i], wrist[i]
        np.savez_compressed(path, **arrays)
        paths.append(path)
    keys = ("rgb_static", "rgb_gripper", "depth_static", "depth_gripper", "rel_actions", "robot_obs", "scene_obs")

    def raw() -> int:
        for path in paths:
            with np.load(path) as npz:
                for key in keys:
                    npz[key]
        return len(paths)

    return fixture.root, raw


def build_libero(tmp: Path, frames: list[np.ndarray], episode_len: int) -> tuple[Path, Callable[[], int]]:
    n_demos = len(frames) // episode_len
    rng = np.random.default_rng(0)
    demos = {f"demo_{i}": rng.uniform(-1, 1, size=(episode_len, 7)) for i in range(n_demos)}
    path = write_libero(tmp / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5", demos, size=128)
    images = resized(frames, 128)
    with h5py.File(path, "r+") as f:
        for i in range(n_demos):
            for cam in ("agentview_rgb", "eye_in_hand_rgb"):
                f[f"data/demo_{i}/obs/{cam}"][...] = images[i * episode_len : (i + 1) * episode_len]

    def raw() -> int:  # the datasets the reader reads, held per demo as any reader must
        total = 0
        keys = (
            "actions",
            "dones",
            "obs/agentview_rgb",
            "obs/eye_in_hand_rgb",
            "obs/ee_pos",
            "obs/ee_ori",
            "obs/gripper_states",
        )
        for i in range(n_demos):
            with h5py.File(path, "r") as f:
                demo = f[f"data/demo_{i}"]
                arrays = {key: demo[key][()] for key in keys}
            total += len(arrays["actions"])
        return total

    return path, raw


def build_demo(tmp: Path, steps: int) -> tuple[Path, Callable[[], int]]:
    out = tmp / "demo"
    summary = record_demo_episodes(DemoEpisodesConfig(out=str(out), episodes=max(6, steps // 25)))
    data = sorted(out.glob("data/*/*.parquet"))
    image_keys = [
        k for k, f in json.loads((out / "meta/info.json").read_text())["features"].items() if f["dtype"] == "image"
    ]

    def raw() -> int:
        for file in data:
            table = pq.read_table(file)
            for key in image_keys:
                for cell in table.column(key).to_pylist():
                    np.asarray(Image.open(io.BytesIO(cell["bytes"])))
        return int(summary["steps"])

    return out, raw


def main() -> None:
    """Build each dataset, time reader and raw limit, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400, help="frames per dataset [400]")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs [3]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    frames = sim_frames(args.steps)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        builds = {
            "rlds": lambda: build_rlds(tmp, frames, 40),
            "calvin": lambda: build_calvin(tmp, frames, 50),
            "libero": lambda: build_libero(tmp, frames + frames, 200),  # libero_10 demos run ~200-500 steps
            "demo": lambda: build_demo(tmp, args.steps),
        }
        options: dict[str, dict[str, Any]] = {"calvin": {"mode": "segments"}}
        for name, build in builds.items():
            path, raw = build()
            source_fps = best_of(reader(name, path, **options.get(name, {})), args.repeat)
            raw_fps = best_of(raw, args.repeat)
            ratio = source_fps / raw_fps
            results[name] = {"reader_frames_per_s": source_fps, "raw_frames_per_s": raw_fps, "ratio": ratio}
            verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
            print(
                f"{name:7s} reader {source_fps:9.1f} frames/s   raw {raw_fps:9.1f} frames/s   "
                f"ratio {ratio:.2f} (target >= {TARGET}) {verdict}",
                flush=True,
            )
    if args.json:
        results["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
