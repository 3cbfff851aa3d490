"""`python -m evaluation merge SHARD_RUN ... --out DIR`: the shard runs of one evaluation -> one results folder.

`evaluation run --num-shards N --shard-index I` evaluates every N-th trial from the I-th (e.g. one
job of a Slurm array each). Merging checks that the set is whole and of one evaluation (every
index 0..N-1 exactly once, each shard complete, the same settings and simulator provenance, no
trial twice) and writes a folder like an unsharded run's: `episodes.jsonl` with every episode,
`summary.json` with the metrics over all of them (equal to an unsharded run's), `run.json` with
`num_shards` 1 (so `report`, `sweep` and a rerun treat it as the whole evaluation) and
`merged_from` naming the shards. Videos are copied along.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.locking import output_lock
from evaluation.protocol import EpisodeRecord, summarize
from evaluation.results import (
    EPISODES_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    TIMING_FILE,
    check_run,
    read_episodes,
    read_json,
    write_json,
)

# Summary fields every shard of one evaluation must share (besides the run settings).
SHARED_FIELDS = ("metric", "trials_total", "simulator", "sim_options_from_policy")


@dataclass
class MergeConfig:
    """Which shard runs to join, and where."""

    shards: list[str] = field(default_factory=list)  # results folders of `evaluation run --num-shards N`
    out: str = ""
    overwrite: bool = False


@dataclass
class _Shard:
    path: Path
    run: dict[str, Any]
    summary: dict[str, Any]
    episodes: list[EpisodeRecord]


def _load_shard(path: Path) -> _Shard:
    if not (path / RUN_FILE).is_file():
        raise DataError("not an evaluation results folder (run.json missing)", path)
    run = read_json(path / RUN_FILE)
    if not (path / SUMMARY_FILE).is_file():
        raise DataError("incomplete shard: no summary.json (still running, or stopped: rerun its command)", path)
    summary = read_json(path / SUMMARY_FILE)
    episodes = read_episodes(path)
    expected = summary.get("episodes_expected")
    if not summary.get("complete") or expected is None or len(episodes) != expected:
        raise DataError(
            f"incomplete shard: {len(episodes)} of {expected} episodes (rerun its command to finish it)", path
        )
    return _Shard(path, run, summary, episodes)


def _settings(shard: _Shard) -> dict[str, Any]:
    """What must be equal across the shards of one evaluation."""
    record = {k: v for k, v in shard.run.items() if k != "shard_index"}
    record.update({k: shard.summary.get(k) for k in SHARED_FIELDS})
    return record


def check_shards(shards: list[_Shard]) -> None:
    """Refuse a set that is not exactly the N complete shards of one evaluation (one-line errors)."""
    first = shards[0]
    count = int(first.run.get("num_shards", 1))
    if count < 2:
        raise DataError("not a shard run (num_shards is 1): nothing to merge", first.path)
    reference = _settings(first)
    for shard in shards[1:]:
        mine = _settings(shard)
        differing = sorted(k for k in reference.keys() | mine.keys() if reference.get(k) != mine.get(k))
        if differing:
            raise ConfigError(
                f"{shard.path}: not a shard of the same evaluation as {first.path} (differs in {', '.join(differing)})"
            )
    indices: dict[int, Path] = {}
    for shard in shards:
        index = int(shard.run["shard_index"])
        if index in indices:
            raise ConfigError(f"shard {index} of {count} given twice: {indices[index]} and {shard.path}")
        indices[index] = shard.path
    missing = sorted(set(range(count)) - set(indices))
    if missing:
        raise ConfigError(f"missing shard(s) {missing} of {count}; have {sorted(indices)}")
    seen: dict[str, Path] = {}
    for shard in shards:
        for record in shard.episodes:
            if record.key in seen:
                raise DataError(f"trial {record.key} is also in {seen[record.key]}", shard.path, EPISODES_FILE)
            seen[record.key] = shard.path
    total = int(first.summary["trials_total"])
    if len(seen) != total:
        raise DataError(f"the shards hold {len(seen)} trials, the evaluation has {total}", first.path)


def merge(cfg: MergeConfig) -> dict[str, Any]:
    """Join complete shard runs into `cfg.out`; return the merged summary (also written to summary.json)."""
    if len(cfg.shards) < 1:
        raise ConfigError("shards: name the results folders of every shard")
    if not cfg.out:
        raise ConfigError("out: a results folder for the merged run is required")
    out = Path(cfg.out)
    paths = [Path(p) for p in cfg.shards]
    if any(out.resolve() == p.resolve() for p in paths):
        raise ConfigError(f"out: {out} is one of the shards; merge into a new folder")
    shards = [_load_shard(p) for p in paths]
    check_shards(shards)
    shards.sort(key=lambda s: int(s.run["shard_index"]))
    first = shards[0]
    record = {**first.run, "num_shards": 1, "shard_index": 0}
    episodes = sorted((r for s in shards for r in s.episodes), key=lambda r: r.key)
    summary = {
        **record,
        **{k: first.summary.get(k) for k in SHARED_FIELDS},
        "complete": True,
        "episodes_expected": len(episodes),
        "metrics": summarize(str(first.summary["metric"]), episodes),
        "merged_from": [str(s.path) for s in shards],
    }
    with output_lock(out, "evaluation merge"):
        check_run(out, record, cfg.overwrite)
        write_json(out / RUN_FILE, {**record, "merged_from": summary["merged_from"]})
        tmp = out / f".{EPISODES_FILE}.tmp{os.getpid()}"
        tmp.write_text("".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in episodes))
        tmp.replace(out / EPISODES_FILE)
        _copy_videos(shards, out)
        timings = {str(s.run["shard_index"]): _timing(s.path) for s in shards}
        write_json(out / TIMING_FILE, {"shards": timings})
        write_json(out / SUMMARY_FILE, summary)
    return summary


def _timing(path: Path) -> Any:
    return read_json(path / TIMING_FILE) if (path / TIMING_FILE).is_file() else None


def _copy_videos(shards: list[_Shard], out: Path) -> None:
    for shard in shards:
        for video in sorted((shard.path / "videos").glob("*.mp4")):
            target = out / "videos" / video.name
            target.parent.mkdir(exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.copy2(video, tmp)
            tmp.replace(target)
