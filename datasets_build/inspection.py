"""`inspect` and `stats`: what a robot dataset holds, and its action/state statistics, from one streaming pass.

Both read episode summaries (`Source.summaries`), which sources produce without decoding images
where they can, so they stay fast on large datasets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from datasets_build.errors import DataError
from datasets_build.progress import progress_bar
from datasets_build.sources.base import Source
from datasets_build.stats import RunningStats

ACTION_KEY = "action"  # LeRobot's names, so stats.json reads like meta/stats.json
STATE_KEY = "observation.state"


def inspect_source(
    source: Source, max_episodes: int | None = None, num_shards: int = 1, shard_index: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Episodes, steps, cameras and image sizes, action min/max/mean, instructions and geometry of a source."""
    lengths: list[int] = []
    cameras: dict[str, list[int]] = {}
    instructions: dict[str, None] = {}
    geometry: dict[str, None] = {}
    actions = RunningStats(7, reservoir=1)
    total = len(source) if max_episodes is None else min(len(source), max_episodes)
    summaries = source.summaries(num_shards, shard_index)
    for summary in progress_bar(summaries, total=total, desc="inspect", unit="ep", enabled=progress):
        lengths.append(summary.length)
        actions.update(summary.actions)
        for name, shape in summary.cameras.items():
            cameras.setdefault(name, list(shape))
        instructions.update(dict.fromkeys(summary.instructions))
        geometry.update(dict.fromkeys(summary.geometry))
        if max_episodes is not None and len(lengths) >= max_episodes:
            break
    if not lengths and source.skipped:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(source.skipped.items()))
        raise DataError(f"every episode was skipped ({reasons}); nothing left to inspect", source.path, "skipped")
    result: dict[str, Any] = {
        "source": source.name,
        "path": str(source.path),
        "episodes": len(lengths),
        "steps": int(sum(lengths)),
        "episode_lengths": lengths,
        "cameras": cameras,
        "action": {},
        "instructions": list(instructions),
        "geometry": list(geometry),
        "skipped": dict(source.skipped),
    }
    if actions.count:
        full = actions.result()
        result["action"] = {"min": full["min"], "max": full["max"], "mean": full["mean"]}
    return result


def source_stats(source: Source, num_shards: int = 1, shard_index: int = 0, progress: bool = True) -> dict[str, Any]:
    """Per-dimension statistics of actions (and state) in LeRobot's meta/stats.json layout."""
    actions = RunningStats(7)
    state: RunningStats | None = None
    for summary in progress_bar(
        source.summaries(num_shards, shard_index), total=len(source), desc="stats", unit="ep", enabled=progress
    ):
        actions.update(summary.actions)
        if summary.state is not None:
            values = np.asarray(summary.state).reshape(summary.length, -1)
            state = state or RunningStats(values.shape[1])
            state.update(values)
    if not actions.count:
        return {}
    out = {ACTION_KEY: actions.result()}
    if state is not None:
        out[STATE_KEY] = state.result()
    return out


def format_inspection(info: dict[str, Any]) -> str:
    """A human-readable report of `inspect_source`."""
    lengths = info["episode_lengths"]
    lines = [
        f"source      {info['source']}  ({info['path']})",
        f"episodes    {info['episodes']}   steps {info['steps']}"
        + (f"   length min/mean/max {min(lengths)}/{np.mean(lengths):.1f}/{max(lengths)}" if lengths else ""),
        "cameras     " + ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in info["cameras"].items()),
        "geometry    " + (", ".join(info["geometry"]) or "none"),
    ]
    if info["action"]:
        names = ("x", "y", "z", "roll", "pitch", "yaw", "grip")
        lines.append("action      " + " ".join(f"{n:>8}" for n in names))
        lines.extend(
            f"  {key:<9} " + " ".join(f"{v:8.4f}" for v in info["action"][key]) for key in ("min", "max", "mean")
        )
    shown = info["instructions"][:5]
    lines.append(f"instructions {len(info['instructions'])} distinct" + (":" if shown else ""))
    lines += [f"  - {text}" for text in shown]
    if info["skipped"]:
        lines.append("skipped     " + ", ".join(f"{k}: {v}" for k, v in info["skipped"].items()))
    return "\n".join(lines)
