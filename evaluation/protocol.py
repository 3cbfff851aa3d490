"""Protocol rules shared by every simulator: chunk execution modes, episode records and the metrics over them.

Chunk modes (paper Sec. 3.3): a policy predicts a chunk of actions; "full" executes all of it
before asking again, "half" the first half (at least one), "one" only the first action.
Metrics need no simulator: "success" gives success rate per task and their mean (the papers'
average over tasks); "chain" gives CALVIN's success rate after 1..5 subtasks and average length.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from datasets_build.errors import ConfigError

CHUNK_MODES: tuple[str, ...] = ("full", "half", "one")
CHAIN_LENGTH = 5


def steps_per_chunk(chunk_size: int, mode: str) -> int:
    """How many actions of a `chunk_size` chunk are executed before the policy is asked again."""
    if mode not in CHUNK_MODES:
        raise ConfigError(f"chunk_mode must be one of {list(CHUNK_MODES)}, got {mode!r}")
    if chunk_size < 1:
        raise ConfigError(f"policy chunk size must be >= 1, got {chunk_size}")
    return {"full": chunk_size, "half": max(1, chunk_size // 2), "one": 1}[mode]


@dataclass
class EpisodeRecord:
    """One finished trial as written to `episodes.jsonl` (one JSON object per line)."""

    key: str
    task: str
    index: int
    seed: int
    instruction: str
    success: bool
    steps: int
    info: dict[str, Any] = field(default_factory=dict)  # sim facts, e.g. {"completed": 3} for a CALVIN chain
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeRecord:
        """Inverse of `to_dict` (unknown keys are an error)."""
        return cls(**data)


def _success_metrics(episodes: Sequence[EpisodeRecord]) -> dict[str, Any]:
    per_task: dict[str, dict[str, float]] = {}
    for task in sorted({e.task for e in episodes}):
        mine = [e for e in episodes if e.task == task]
        successes = sum(e.success for e in mine)
        per_task[task] = {
            "episodes": len(mine),
            "successes": successes,
            "success_rate": successes / len(mine),
            "mean_steps": sum(e.steps for e in mine) / len(mine),
        }
    rates = [t["success_rate"] for t in per_task.values()]
    return {
        "episodes": len(episodes),
        "success_rate": sum(rates) / len(rates) if rates else 0.0,  # mean over tasks
        "per_task": per_task,
    }


def _chain_metrics(episodes: Sequence[EpisodeRecord]) -> dict[str, Any]:
    completed = [int(e.info.get("completed", 0)) for e in episodes]
    total = len(completed)
    after = {str(k): (sum(c >= k for c in completed) / total if total else 0.0) for k in range(1, CHAIN_LENGTH + 1)}
    per_subtask: dict[str, dict[str, int]] = {}
    for e in episodes:
        for position, subtask in enumerate(e.info.get("subtasks", [])):
            row = per_subtask.setdefault(subtask, {"attempts": 0, "successes": 0})
            if position <= int(e.info.get("completed", 0)):
                row["attempts"] += 1
                row["successes"] += int(position < int(e.info.get("completed", 0)))
    return {
        "episodes": total,
        "avg_len": sum(completed) / total if total else 0.0,
        "success_rate_after": after,
        "per_subtask": dict(sorted(per_subtask.items())),
    }


def summarize(metric: str, episodes: Iterable[EpisodeRecord]) -> dict[str, Any]:
    """The metrics of `episodes` (order-independent: sorted by trial key first)."""
    ordered = sorted(episodes, key=lambda e: e.key)
    if metric == "success":
        return _success_metrics(ordered)
    if metric == "chain":
        return _chain_metrics(ordered)
    raise ConfigError(f"unknown metric {metric!r}")


def headline(metric: str, metrics: dict[str, Any]) -> float:
    """The one number a table reports: average length for chains, success rate in percent otherwise."""
    return float(metrics["avg_len"]) if metric == "chain" else 100.0 * float(metrics["success_rate"])
