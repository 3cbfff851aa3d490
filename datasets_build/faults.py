"""Fault injection for the reliability tests: `VLM4VLA_FAULT=POINT:N` makes the process kill itself (SIGKILL, no
cleanup of any kind) the N-th time it reaches the named point, so a test can stop a real CLI run at an exact unit
boundary and check what the rerun makes of the folder it left.

The points sit where a job killed by a cluster would leave the most delicate state: a shard written under its
temporary name but not renamed, a shard renamed but not yet recorded in the progress file, a checkpoint with some
of its files, an episode logged but not summarised, a stage finished but not recorded. `POINTS` lists them. With
the variable unset (every real run) `hit` is one comparison against None; the variable is read once, at import.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from datasets_build.errors import ConfigError

ENV = "VLM4VLA_FAULT"

POINTS: dict[str, str] = {
    # corpus builds and mixes (datasets_build.shards.ShardWriter)
    "shard.sample": "a sample was appended to the open shard (a kill leaves a half-written .tmp shard)",
    "shard.tmp_complete": "a shard is complete under its temporary name, not yet renamed",
    "shard.renamed": "a shard was renamed to its final name, not yet recorded in .progress.json",
    "shard.before_card": "every shard and the final progress are written, the dataset card is not",
    # SFT training (sft.train / sft.trainer, inside the Trainer's checkpoint-N)
    "sft.step": "an optimizer step ended (between checkpoints)",
    "sft.model_saved": "checkpoint-N holds the model weights, not yet the optimizer, scheduler, RNG or state",
    "sft.checkpoint_saved": "the Trainer finished checkpoint-N; its card, recipe and extras are not written",
    "sft.before_final": "training ended; the final/ folder is not written",
    # VLA training (vla.train)
    "vla.step": "an optimizer step ended (between checkpoints)",
    "vla.weights_saved": "the staged checkpoint holds the policy folder, not yet train_state/",
    "vla.state_saved": "the staged checkpoint is complete, not yet renamed to checkpoint-NNNNNN",
    "vla.before_summary": "every checkpoint is written, train_summary.json is not",
    # evaluation runs (evaluation.run)
    "eval.episode": "an episode was appended to episodes.jsonl (between episodes)",
    "eval.before_summary": "every episode is logged, summary.json is not written",
    # recipe chains (recipes/runner.py)
    "recipe.stage_started": "a stage's marker is written, the stage has not run",
    "recipe.stage_ran": "a stage returned, its recipe_stage.json is not written",
    "recipe.stage_recorded": "a stage's recipe_stage.json is written, its marker not yet removed",
}


def parse(value: str) -> tuple[str, int]:
    """`("shard.renamed", 3)` from `"shard.renamed:3"`; ConfigError naming the variable on anything else."""
    point, _, count = value.rpartition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise ConfigError(f"{ENV}={value!r}: expected POINT:N with N >= 1 and POINT one of {', '.join(sorted(POINTS))}")
    return point, int(count)


_RAW = os.environ.get(ENV) or None
_SEEN: Counter[str] = Counter()  # arrivals at the target point in this process


def hit(point: str) -> None:
    """Count one arrival at `point`; SIGKILL this process on the N-th when `VLM4VLA_FAULT=point:N`.

    Counts are per process (a launched child, a loader worker counts its own); a malformed variable is a
    ConfigError at the first point reached, so the CLI reports it as one line.
    """
    if _RAW is None:
        return
    target, count = parse(_RAW)
    if target != point:
        return
    _SEEN[point] += 1
    if _SEEN[point] == count:
        os.kill(os.getpid(), signal.SIGKILL)
