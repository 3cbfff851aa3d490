"""Ground-truth geometry per frame against the bare pixel passes any exact implementation of it makes, same frames.

`ground_truth_geometry` (segmentation masks and a declared support id: the demo sim's case) finds each object's
pixels, back-projects their clouds and takes the support's median height over up to 8192 sampled pixels. The
baseline makes only the numpy passes those outputs cannot do without, each the cheapest found: depth validity
from a minimum and a maximum, every object's pixels from one scan of the segmentation map, the support's pixels
by boolean indexing, the sampled heights as one gather and multiply-add, the middle by one partition, the clouds
as one gather and one 3x3 product. It builds nothing (no masks, boxes, exactness checks or result objects), so it
is a floor, not an implementation: ratio = geometry / floor says how much any rewrite in numpy could gain.
Frames are every step of the episodes, visited in turn, so their pixels are read cold as in a corpus build.
Usage: python benchmarks/bench_geometry_floor.py [--episodes 12] [--repeat 15] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
from benchmarks.run_record import machine_summary, write_result
from datasets_build.episode import Episode
from datasets_build.geometry.ground_truth import SUPPORT_SAMPLE, GroundTruthOptions, ground_truth_geometry
from datasets_build.geometry.scene import subsample
from datasets_build.sim import expert_episodes

CAMERA = "static"


@functools.cache
def _tables(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel tables of the right size (their values do not change the cost): flat index, height factor, rays."""
    rng = np.random.default_rng(0)
    return np.arange(size), rng.random(size), rng.random(size), rng.random(size)


def bare_passes(episode: Episode, step: int, ids: list[int], support_id: int, max_points: int) -> list[int]:
    """The floor's passes over one frame; the objects' pixel counts (checked against the geometry's)."""
    depth = episode.depth[CAMERA][step].reshape(-1)
    flat = episode.segmentation[CAMERA][step].reshape(-1)
    index, factor, across, down = _tables(flat.size)
    _ = bool(depth.min() > 0) and bool(np.isfinite(depth.max()))
    in_range = flat >= min(ids)
    in_range &= flat <= max(ids)
    candidates = np.flatnonzero(in_range)
    labels = flat[candidates]
    pixels = [candidates[labels == i] for i in ids]
    support = index[flat == support_id]
    sample = subsample(support, SUPPORT_SAMPLE)
    heights = depth[sample] * factor[sample]
    heights += 0.5
    np.partition(heights, len(heights) // 2)
    kept = np.concatenate([subsample(p, max_points) for p in pixels])
    z = depth[kept].astype(np.float64)
    cloud = np.stack([across[kept] * z, down[kept] * z, z], axis=1) @ np.eye(3)
    cloud.astype(np.float32)
    return [len(p) for p in pixels]


def main(argv: list[str] | None = None) -> None:
    """Time both over the same frames, alternating, best of each; print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=12, help="demo episodes [12]")
    parser.add_argument("--repeat", type=int, default=15, help="alternating runs of each [15]")
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args(argv)
    episodes = expert_episodes(args.episodes)
    options = GroundTruthOptions()
    frames = [(ep, step) for ep in episodes for step in range(len(ep))]
    setups = {}
    for ep in episodes:
        names = sorted(ep.objects)
        ids = [i for n in names if (i := ep.objects[n].segmentation_id) is not None]
        support_id = ep.meta.get("support_segmentation_id")
        if CAMERA not in ep.segmentation or len(ids) != len(names) or not isinstance(support_id, int):
            raise SystemExit(f"episode {ep.episode_id}: needs segmentation ids and a declared support id")
        setups[ep.episode_id] = (names, ids, support_id)
    for ep, step in frames:  # the floor finds the pixels the geometry finds
        names, ids, support_id = setups[ep.episode_id]
        geometry = ground_truth_geometry(ep, CAMERA, step, options)
        assert not isinstance(geometry, str), geometry
        counts = dict(zip(names, bare_passes(ep, step, ids, support_id, options.max_points), strict=True))
        assert all(counts[n] == obj.pixels for n, obj in geometry.objects.items()), (ep.episode_id, step)
    geometry_s, floor_s = [], []
    for _ in range(max(1, args.repeat)):
        start = time.process_time()
        for ep, step in frames:
            ground_truth_geometry(ep, CAMERA, step, options)
        geometry_s.append((time.process_time() - start) / len(frames))
        start = time.process_time()
        for ep, step in frames:
            names, ids, support_id = setups[ep.episode_id]
            bare_passes(ep, step, ids, support_id, options.max_points)
        floor_s.append((time.process_time() - start) / len(frames))
    best_geometry, best_floor = min(geometry_s), min(floor_s)
    h, w = episodes[0].depth[CAMERA].shape[1:3]
    print(f"{len(frames)} frames {w}x{h}, {machine_summary()}, process CPU, best of {args.repeat}")
    print(f"  ground_truth_geometry  {best_geometry * 1e6:7.1f} us/frame")
    print(f"  bare pixel passes      {best_floor * 1e6:7.1f} us/frame")
    print(f"ratio geometry / floor: {best_geometry / best_floor:.2f}")
    write_result(
        args.json,
        {
            "frames": len(frames),
            "image_size": [int(h), int(w)],
            "geometry_us_per_frame": best_geometry * 1e6,
            "floor_us_per_frame": best_floor * 1e6,
            "ratio_geometry_over_floor": best_geometry / best_floor,
            "repeat": args.repeat,
            "clock": "process CPU",
        },
        argv,
    )


if __name__ == "__main__":
    main()
