"""Corpus building throughput (samples/s on one core) against the shard writer's limit, in one run.

Episodes are recorded once from the demo sim and held in memory, so the measurement is the builder
plus shard writing; the baseline writes the very same samples with `ShardWriter` alone. The two are
timed in alternation, `--repeat` times each, and the best of each is kept, so load that comes and goes
on a shared machine hits both alike; `--clock cpu` times the process's CPU instead of the wall clock
(steadier when other jobs share the cores).
Ratio = builder+writer samples/s / writer-only samples/s (target >= 0.5 for ground-truth corpora).
`--cached-geometry` also times each geometry corpus with every frame's geometry served from results
computed before the timing (fresh copies, so each object's statistics are still computed): the ratio the
builder would reach if geometry cost nothing, which tells how much of its time the geometry takes.
Usage: python benchmarks/bench_corpora.py [--episodes 12] [--per-type 3] [--repeat 5] [--clock wall|cpu]
       [--corpora a,b] [--cached-geometry] [--json OUT]
"""

from __future__ import annotations

import argparse
import dataclasses
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
from datasets_build.geometry.provider import GeometryProvider
from datasets_build.geometry.scene import FrameGeometry
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


def _fresh(found: Any) -> Any:
    """A copy of a provider's answer that shares no cached statistic with it (objects' centroids and bounds are
    computed again, as the builder would); the masks and clouds themselves are shared, read-only by contract."""
    if isinstance(found, FrameGeometry):
        objects = {}
        for name, obj in found.objects.items():
            copy = dataclasses.replace(obj)
            if "pixels" in vars(obj):  # set by ground truth when the mask is made, not a statistic of the cloud
                vars(copy)["pixels"] = vars(obj)["pixels"]
            objects[name] = copy
        return dataclasses.replace(found, objects=objects)
    return dict(found) if isinstance(found, dict) else found


class CachedGeometry:
    """Stands in for a builder's `GeometryProvider`: each call is answered once by the provider and afterwards from
    `cache`, as a fresh copy (`_fresh`)."""

    def __init__(self, provider: GeometryProvider, cache: dict[tuple[Any, ...], Any]) -> None:
        self.provider = provider
        self.cache = cache

    def __getattr__(self, attribute: str) -> Any:
        method = getattr(self.provider, attribute)
        if attribute not in ("frame", "support_frame", "pixel_counts"):
            return method

        def answer(episode: Episode, *args: Any, **kwargs: Any) -> Any:
            hashable = tuple(tuple(a) if isinstance(a, list) else a for a in args)
            named = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
            key = (attribute, episode.source, episode.episode_id, hashable, named)
            if key not in self.cache:
                self.cache[key] = _fresh(method(episode, *args, **kwargs))
            return _fresh(self.cache[key])

        return answer


def build_and_write(
    name: str,
    episodes: list[Episode],
    options: dict[str, Any],
    out: Path,
    clock: Callable[[], float] = time.perf_counter,
    geometry_cache: dict[tuple[Any, ...], Any] | None = None,
) -> tuple[list[Sample], float]:
    """Run the builder over `episodes` and write shards; (samples, seconds). With `geometry_cache`, the builder's
    geometry comes from it (`CachedGeometry`)."""
    builder = make_builder(name, options)
    if geometry_cache is not None:
        builder.provider = CachedGeometry(builder.provider, geometry_cache)  # type: ignore[attr-defined]
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
    parser.add_argument(
        "--cached-geometry",
        action="store_true",
        help="also time geometry corpora with each frame's geometry computed beforehand (what the geometry costs)",
    )
    args = parser.parse_args()
    clock = CLOCKS[args.clock]
    episodes = expert_episodes(args.episodes)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.corpora.split(",") if n] or available_corpora():
            options = corpus_options(name, episodes, args.per_type, Path(tmp))
            cache: dict[tuple[Any, ...], Any] | None = None
            provider = getattr(make_builder(name, options), "provider", None)
            if args.cached_geometry and isinstance(provider, GeometryProvider):
                cache = {}
                build_and_write(name, episodes, options, Path(tmp) / f"{name}-fill", clock, cache)  # untimed
            build_times, write_times, cached_times = [], [], []
            for i in range(max(1, args.repeat)):  # alternating, best of each
                samples, seconds = build_and_write(name, episodes, options, Path(tmp) / f"{name}-b{i}", clock)
                build_times.append(seconds)
                write_times.append(write_only(name, samples, Path(tmp) / f"{name}-w{i}", clock))
                if cache is not None:
                    again, seconds = build_and_write(name, episodes, options, Path(tmp) / f"{name}-c{i}", clock, cache)
                    if [(a.key, a.messages, a.meta) for a in again] != [(b.key, b.messages, b.meta) for b in samples]:
                        raise SystemExit(f"{name}: the samples built from cached geometry differ from the others")
                    cached_times.append(seconds)
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
            line = (
                f"{name:10s} {len(samples):5d} samples  {rate:8.1f} samples/s  writer limit {limit:8.1f}/s  "
                f"ratio {rate / limit:.2f} (target >= 0.5)"
            )
            if cached_times:
                cached_rate = len(samples) / min(cached_times)
                results[name]["ratio_geometry_cached"] = cached_rate / limit
                line += f"  geometry cached: ratio {cached_rate / limit:.2f}"
            print(line)
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
