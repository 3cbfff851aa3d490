"""Seconds per image of the estimated-geometry path (detection, masks, depth, point clouds) against the
ground-truth path on the same demo-sim frames.

The estimated path runs the real transformers classes (OWLv2, SAM, Depth Anything metric) with TINY
randomly initialised weights installed under the real Hub ids in a temporary HF cache (tests/geometry_models.py):
the timings measure the pipeline's own overhead (pre/post-processing, back-projection, RANSAC, clouds)
plus toy-sized forward passes, NOT what the real checkpoints cost. Real-size models need a GPU.
Usage: python benchmarks/bench_geometry.py [--episodes 6] [--steps 3] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# the tiny models live in a throw-away cache; nothing may touch the network
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench-geometry-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets_build.episode import Episode
from datasets_build.geometry.estimated import EstimatedOptions, GeometryEstimator
from datasets_build.geometry.ground_truth import ground_truth_geometry
from datasets_build.geometry.language import object_phrases
from datasets_build.sim import expert_episodes
from tests.geometry_models import install_tiny_geometry_models

STAGES = ("detection", "masks", "depth", "points")
CAMERA = "static"
NOTE = (
    "NOTE: tiny random models (<1M parameters): these timings measure the pipeline overhead only. "
    "Real-size OWLv2 / SAM / Depth Anything need a GPU; their cost is not measured here."
)


def frames_of(episodes: list[Episode], steps: int) -> list[tuple[Episode, int]]:
    """`steps` evenly spaced steps of each episode."""
    return [(ep, int(s)) for ep in episodes for s in np.unique(np.linspace(0, len(ep) - 1, steps).astype(int))]


def time_ground_truth(frames: list[tuple[Episode, int]], repeats: int) -> float:
    """Best-of-`repeats` seconds per frame of `ground_truth_geometry`."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for ep, step in frames:
            ground_truth_geometry(ep, CAMERA, step)
        best = min(best, (time.perf_counter() - start) / len(frames))
    return best


def time_estimated(estimator: GeometryEstimator, frames: list[tuple[Episode, int]]) -> dict[str, Any]:
    """Mean seconds per frame of each stage (over the frames that reached it), total, and skip reasons."""
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    totals: list[float] = []
    skips: dict[str, int] = {}
    for ep, step in frames:
        start = time.perf_counter()
        result = estimator.estimate(
            ep.frames[CAMERA][step],
            object_phrases(ep.instruction),
            ep.camera_at(CAMERA, step),
            episode_id=ep.episode_id,
            step=step,
            camera_name=CAMERA,
        )
        totals.append(time.perf_counter() - start)
        for stage, seconds in estimator.timings.items():
            per_stage[stage].append(seconds)
        if isinstance(result, str):
            skips[result] = skips.get(result, 0) + 1
    return {
        "stages_s": {stage: float(np.mean(v)) if v else None for stage, v in per_stage.items()},
        "total_s": float(np.mean(totals)),
        "skips": skips,
    }


def main() -> None:
    """Time both paths on the same frames and print their ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=6, help="demo episodes [6]")
    parser.add_argument("--steps", type=int, default=3, help="frames per episode [3]")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads [1]")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/geometry_cpu2.json"), help="results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(NOTE)
    ids = install_tiny_geometry_models()
    frames = frames_of(expert_episodes(args.episodes), args.steps)
    estimator = GeometryEstimator(EstimatedOptions(**ids))
    start = time.perf_counter()
    _ = estimator.models
    load_s = time.perf_counter() - start
    time_estimated(estimator, frames[:2])  # warm-up (first forward passes allocate)
    estimated = time_estimated(estimator, frames)
    gt_s = time_ground_truth(frames, repeats=3)
    ratio = estimated["total_s"] / gt_s
    h, w = frames[0][0].frames[CAMERA].shape[1:3]
    print(f"{len(frames)} frames {w}x{h} ({CAMERA} camera), torch threads {args.threads}, model load {load_s:.2f} s")
    for stage, seconds in estimated["stages_s"].items():
        print(f"  estimated {stage:10s} {seconds * 1e3 if seconds is not None else float('nan'):8.1f} ms/image")
    print(f"  estimated total      {estimated['total_s'] * 1e3:8.1f} ms/image   skips {estimated['skips']}")
    print(f"  ground truth         {gt_s * 1e3:8.1f} ms/image")
    print(f"ratio estimated / ground truth: {ratio:.1f}x slower (tiny models; real models: GPU needed)")
    results = {
        "frames": len(frames),
        "image_size": [int(h), int(w)],
        "models": ids,
        "tiny_models": True,
        "note": NOTE,
        "model_load_s": load_s,
        "estimated_s_per_image": estimated["stages_s"] | {"total": estimated["total_s"]},
        "estimated_skips": estimated["skips"],
        "ground_truth_s_per_image": gt_s,
        "ratio_estimated_over_ground_truth": ratio,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "device": "cpu",
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
