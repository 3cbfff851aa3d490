"""Corpus building throughput (samples/s on one core) against the shard writer's limit, in one run.

Episodes are recorded once from the demo sim and held in memory, so the measurement is the builder
plus shard writing; the baseline writes the very same samples with `ShardWriter` alone. The two are
timed in alternation, `--repeat` times each, and the best of each is kept, so load that comes and goes
on a shared machine hits both alike; `--clock cpu` times the process's CPU instead of the wall clock
(steadier when other jobs share the cores).
Ratio = builder+writer samples/s / writer-only samples/s (target >= 0.5 for ground-truth corpora).
Usage: python benchmarks/bench_corpora.py [--episodes 12] [--per-type 3] [--repeat 5] [--clock wall|cpu]
       [--corpora a,b] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one
from datasets_build.corpora import available_corpora
from datasets_build.corpora.base import EpisodeContext, episode_rng, make_builder
from datasets_build.episode import Episode
from datasets_build.fast import FastTokenizer, action_chunks
from datasets_build.sample import Sample
from datasets_build.shards import ShardWriter
from datasets_build.sim import expert_episodes


def corpus_options(name: str, episodes: list[Episode], per_type: int, tmp: Path) -> dict[str, Any]:
    """Options a corpus needs here: `per_type` where it has one; fast_tokens a tokenizer fit on the episodes."""
    if name == "fast_tokens":
        folder = tmp / "fast_tokenizer"
        if not folder.is_dir():
            chunks = np.concatenate([action_chunks(ep.actions, 4)[0] for ep in episodes])
            flat = chunks.reshape(-1, chunks.shape[-1])
            stats = {"q01": np.quantile(flat, 0.01, axis=0).tolist(), "q99": np.quantile(flat, 0.99, axis=0).tolist()}
            FastTokenizer.fit(chunks, stats).save_pretrained(folder)
        return {"tokenizer": str(folder)}
    probe = make_builder(name)
    return {"per_type": per_type} if hasattr(probe.config, "per_type") else {}


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def build_and_write(
    name: str,
    episodes: list[Episode],
    options: dict[str, Any],
    out: Path,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[Sample], float]:
    """Run the builder over `episodes` and write shards; (samples, seconds)."""
    builder = make_builder(name, options)
    samples: list[Sample] = []
    start = clock()
    with ShardWriter(out, name) as writer:
        seen: tuple[str, ...] = ()
        for ep in episodes:
            result = builder.build(ep, EpisodeContext(episode_rng(0, ep.episode_id, ep.source), seen))
            for sample in result.samples:
                writer.write(sample)
            samples.extend(result.samples)
            seen = (*seen, ep.instruction)[-64:]
    return samples, clock() - start


def write_only(name: str, samples: list[Sample], out: Path, clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds to write the same samples with ShardWriter alone."""
    start = clock()
    with ShardWriter(out, name) as writer:
        for sample in samples:
            writer.write(sample)
    return clock() - start


def main() -> None:
    """Measure every registered corpus and print its ratio against the writer's limit."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=12, help="demo episodes [12]")
    parser.add_argument("--per-type", type=int, default=3, help="questions per type and episode [3]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--corpora", default="", help="comma-separated corpus names [every registered one]")
    parser.add_argument("--repeat", type=int, default=5, help="alternating runs of each measurement [5]")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall clock or process CPU [wall]")
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    episodes = expert_episodes(args.episodes)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.corpora.split(",") if n] or available_corpora():
            options = corpus_options(name, episodes, args.per_type, Path(tmp))
            build_times, write_times = [], []
            for i in range(max(1, args.repeat)):  # alternating, best of each
                samples, seconds = build_and_write(name, episodes, options, Path(tmp) / f"{name}-b{i}", clock)
                build_times.append(seconds)
                write_times.append(write_only(name, samples, Path(tmp) / f"{name}-w{i}", clock))
            build_s, limit_s = min(build_times), min(write_times)
            rate, limit = len(samples) / build_s, len(samples) / limit_s
            results[name] = {
                "samples": len(samples),
                "samples_per_s": rate,
                "writer_limit_per_s": limit,
                "ratio": rate / limit,
                "repeat": args.repeat,
                "clock": args.clock,
            }
            print(
                f"{name:10s} {len(samples):5d} samples  {rate:8.1f} samples/s  writer limit {limit:8.1f}/s  "
                f"ratio {rate / limit:.2f} (target >= 0.5)"
            )
    if args.json:
        results["machine"] = {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cores_used": 1,
            "load_average_1_5_15min": [round(v, 2) for v in os.getloadavg()],  # other jobs sharing the cores
        }
        results["command"] = "python benchmarks/bench_corpora.py " + " ".join(sys.argv[1:])
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
