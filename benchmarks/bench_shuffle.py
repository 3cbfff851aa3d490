"""How many distinct episodes a training batch of 128 draws from, per source, against an ideal global shuffle.

Each dataset is written by code in its true on-disk layout with small images and many episodes:
  calvin   annotation windows of CALVIN's average length (~59 frames, per-frame npz), rule drop_last
  libero   one hdf5 task file of long demos (LIBERO-10's are ~270 steps)
  lerobot  LeRobot v3.0 parquet with PNG frames
  rlds     Bridge V2 RLDS (bridge_dataset 1.0.0) with Bridge's ~36-step episodes
and read through the real datasets of `vla.data` in one process (one DataLoader worker's view):
  stream/2000x1   the previous default: whole episodes one at a time through a 2000-sample buffer
  global          the global sampler (one permutation of every sample per epoch; random-access sources)
  stream/20000x64 the stream's new default (20000-sample buffer, 64 episodes interleaved; RLDS)
  stream/51200x64 the simpler_bridge / libero_10 presets' buffer (VLM4VLA's shuffle_buffer_size)
against `ideal`: 128 samples drawn uniformly without replacement from all samples (what a global shuffle gives
in expectation). Ratio = distinct episodes per batch / ideal; target >= 0.9 for the global sampler and for the
presets' stream. A buffer spans about buffer / episode length episodes, so the stream's ratio falls as the
dataset grows past that (real Bridge: 60k episodes of ~36 steps).
Usage: python benchmarks/bench_shuffle.py [--scale 1.0] [--batches 8] [--only rlds ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets_build.lerobot import LeRobotWriter
from datasets_build.sources import open_source
from datasets_build.sources.demo import demo_features, episode_to_columns
from tests import rlds_fixtures
from tests.calvin_fixtures import write_calvin
from tests.helpers import synthetic_episode
from tests.test_libero import write_libero
from vla.data import VLAGlobalDataset, VLASampleStream
from vla.episode_index import read_layouts
from vla.normalization import ActionNormalizer
from vla.sampling import SampleIndex

BATCH = 128
TARGET = 0.9
NORMALIZER = ActionNormalizer.from_stats(None, "none", action_clip=1.0)


def write_datasets(tmp: Path, scale: float, only: set[str]) -> dict[str, tuple[str, Path, dict[str, Any], str]]:
    """name -> (source, path, options, window rule) for the sources in `only`, each sized by `scale`."""
    n = lambda count: max(8, int(count * scale))  # noqa: E731
    out: dict[str, tuple[str, Path, dict[str, Any], str]] = {}
    if "calvin" in only:
        windows, window_len = n(200), 59
        segments = [(i * window_len, (i + 1) * window_len - 1) for i in range(windows)]
        calvin = write_calvin(
            tmp / "calvin",
            segments=segments,
            scenes=None,
            annotations=[(s, e, f"task {i}", "task") for i, (s, e) in enumerate(segments)],
            image_size=16,
        )
        out["calvin"] = ("calvin", calvin.root, {"cameras": ["static"], "load_depth": False}, "drop_last")
    if "libero" in only:
        rng = np.random.default_rng(0)
        demos = {f"demo_{i}": rng.uniform(-1, 1, size=(270, 7)) for i in range(n(60))}
        libero = write_libero(tmp / "KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5", demos, size=8)
        out["libero"] = ("libero", libero, {"cameras": ["agentview"]}, "full")
    if "lerobot" in only:
        episodes = [synthetic_episode(length=40, size=8, seed=i, episode_id=f"e{i}") for i in range(n(200))]
        sizes = {c: f.shape[1:3] for c, f in episodes[0].frames.items()}
        lerobot = tmp / "lerobot"
        with LeRobotWriter(lerobot, fps=10, features=demo_features(sizes, 4)) as writer:
            for episode in episodes:
                columns, extra = episode_to_columns(episode, 4)
                writer.add_episode(columns, task=episode.instruction, extra=extra)
        out["lerobot"] = ("demo", lerobot, {}, "full")
    if "rlds" in only:
        count = n(1600)
        bridge = rlds_fixtures.write_rlds(
            tmp / "rlds",
            "bridge_dataset",
            "1.0.0",
            rlds_fixtures.bridge_v2_spec(8, 8),
            rlds_fixtures.many_bridge_episodes(count, length=36),
            [count // 2, count - count // 2],
        )
        out["rlds"] = ("rlds", bridge, {}, "full")
    return out


def distinct_per_batch(samples: list[Any], batches: int) -> float:
    """Mean number of distinct episodes in consecutive batches of BATCH samples."""
    counts = [len({s.episode for s in samples[b * BATCH : (b + 1) * BATCH]}) for b in range(batches)]
    return float(np.mean(counts))


def ideal(index: SampleIndex, batches: int, seed: int = 0) -> float:
    """Distinct episodes of BATCH samples drawn uniformly without replacement, averaged over `batches` draws."""
    rng = np.random.default_rng(seed)
    draws = [len(set(index.episode[rng.choice(len(index), BATCH, replace=False)].tolist())) for _ in range(batches)]
    return float(np.mean(draws))


def measure(dataset: Any, batches: int) -> tuple[float, float]:
    """(distinct episodes per batch, samples/s including the buffer's fill) over `batches` batches."""
    start = time.perf_counter()
    samples = list(itertools.islice(iter(dataset), batches * BATCH))
    return distinct_per_batch(samples, batches), len(samples) / (time.perf_counter() - start)


def main() -> None:
    """Write the datasets, read `--batches` batches per sampler, print distinct episodes against the ideal."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="dataset sizes x this [1.0]")
    parser.add_argument("--batches", type=int, default=8, help="batches of 128 per sampler [8]")
    parser.add_argument("--only", nargs="+", choices=["calvin", "libero", "lerobot", "rlds"], help="these sources")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        datasets = write_datasets(Path(tmp_name), args.scale, set(args.only or ["calvin", "libero", "lerobot", "rlds"]))
        for name, (source_name, path, options, rule) in datasets.items():
            source = open_source(source_name, path, **options)
            layouts = read_layouts(source, progress=False)
            index = SampleIndex.from_layouts(layouts, rule)
            base = ideal(index, args.batches)
            common: dict[str, Any] = {"options": options, "window_rule": rule, "seed": 0}
            samplers: dict[str, Any] = {
                "stream/2000x1": VLASampleStream(
                    source_name, str(path), 1, NORMALIZER, shuffle_buffer=2000, interleave=1, **common
                ),
            }
            if source.random_access:
                samplers["global"] = VLAGlobalDataset(
                    source_name, str(path), 1, NORMALIZER, layouts=layouts, batch_size=BATCH, **common
                )
                judged = {"global"}
            else:
                for buffer in (20000, 51200):
                    samplers[f"stream/{buffer}x64"] = VLASampleStream(
                        source_name, str(path), 1, NORMALIZER, shuffle_buffer=buffer, interleave=64, **common
                    )
                judged = {"stream/51200x64"}
            row: dict[str, Any] = {"episodes": len(layouts), "samples": len(index), "ideal": base}
            print(
                f"{name}: {len(layouts)} episodes, {len(index)} samples; ideal {base:.1f} episodes per batch",
                flush=True,
            )
            for label, dataset in samplers.items():
                distinct, rate = measure(dataset, args.batches)
                ratio = distinct / base
                verdict = "" if label not in judged else ("ok" if ratio >= TARGET else "BELOW TARGET")
                row[label] = {"distinct_per_batch": distinct, "ratio": ratio, "samples_per_s": rate}
                print(
                    f"  {label:16s} {distinct:6.1f} per batch  ratio {ratio:.2f}  {rate:8.0f} samples/s  {verdict}",
                    flush=True,
                )
            results[name] = row
    if args.json:
        results["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
