"""Shards -> a streaming `datasets.IterableDataset` of `{"images", "messages", "task"}` rows for TRL's SFTTrainer.

Each shard set is checked against its dataset card first (`ShardSet`, with sha256 when asked), so a missing
card or a corrupt shard stops the run before any step. Rows are decoded straight from the tars (no pickle,
no webdataset decoders); several sets are mixed by weight inside the generator. The shard
list is the generator's `gen_kwargs`, so `accelerate` splits tars across ranks when there are enough.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import IterableDataset

from datasets_build.errors import ConfigError, DataError
from datasets_build.sample import Sample
from datasets_build.shards import ShardSet, iter_tar_records
from sft.config import ShardSource


@dataclass(frozen=True)
class OpenedSource:
    """A validated shard set with its weight and the provenance the model card records."""

    shard_set: ShardSet
    weight: float
    spec: str

    def provenance(self) -> dict[str, Any]:
        """Name, location, sample count and card sha256s of this set (for the model card)."""
        card = self.shard_set.card
        return {
            "name": card.name if card is not None else self.spec,
            "path": self.spec,
            "weight": self.weight,
            "samples": len(self.shard_set),
            "shards": {e.name: e.sha256 for e in card.shards} if card is not None else {},
        }


def open_sources(sources: Sequence[ShardSource], verify: bool = True) -> list[OpenedSource]:
    """Open and check every shard set (card present; sizes, and sha256 with `verify`); DataError names the set."""
    if not sources:
        raise ConfigError("data: give at least one shard set (data=[{path: ..., weight: 1.0}])")
    opened = []
    for i, source in enumerate(sources):
        if not source.path:
            raise ConfigError(f"data[{i}].path: empty")
        if source.weight <= 0:
            raise ConfigError(f"data[{i}].weight: must be > 0, got {source.weight}")
        shard_set = ShardSet(source.path, verify=verify)
        if len(shard_set) == 0:
            raise DataError("shard set holds no samples", source.path)
        opened.append(OpenedSource(shard_set, source.weight, source.path))
    return opened


def sample_row(sample: Sample, with_targets: bool = False) -> dict[str, Any]:
    """The TRL vision-SFT row of one Sample (the task name rides along for per-task metrics).

    `with_targets` adds the generation target and its type (`target`, `generation`; None for rows without)
    for the omni-generation head.
    """
    row = {"images": list(sample.images), "messages": sample.messages, "task": sample.task}
    if with_targets:
        row["target"] = sample.target
        row["generation"] = str(sample.meta.get("question_type", "")) if sample.target is not None else None
    return row


def _set_rows(shards: list[str], with_targets: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of the given tars, in order."""
    for path in shards:
        for record in iter_tar_records(path):
            yield sample_row(Sample.decode(record, where=str(record.get("__url__", path))), with_targets)


def _rows(
    shards: list[tuple[int, str]], weights: tuple[float, ...], seed: int, with_targets: bool = False
) -> Iterator[dict[str, Any]]:
    """Rows of the given (set index, tar) pairs, the sets mixed by `weights` with a seeded draw.

    A set that runs out restarts (oversampling small sets) until every set present has run out once.
    datasets calls this once per slice of the shard list (per worker / rank).
    """
    by_set: dict[int, list[str]] = {}
    for index, path in shards:
        by_set.setdefault(index, []).append(path)
    order = sorted(by_set)
    streams = {i: _set_rows(by_set[i], with_targets) for i in order}
    exhausted: set[int] = set()
    rng = random.Random(f"{seed}:{shards[0][1] if shards else ''}")
    while len(exhausted) < len(order):
        i = rng.choices(order, weights=[weights[j] for j in order])[0]
        row = next(streams[i], None)
        if row is None:
            exhausted.add(i)
            streams[i] = _set_rows(by_set[i], with_targets)
            row = next(streams[i], None)
            if row is None or len(exhausted) == len(order):
                continue
        yield row


def stream_dataset(
    sources: Sequence[OpenedSource], seed: int = 0, shuffle_buffer: int = 256, with_targets: bool = False
) -> IterableDataset:
    """One IterableDataset over all sets: tars of every set in one shard list (so ranks and workers split
    them), sets mixed with probabilities proportional to their weights, then a seeded tar-order shuffle and a
    `shuffle_buffer` row buffer. Rows keep PIL images (no Arrow round trip)."""
    shards = [(i, str(p)) for i, source in enumerate(sources) for p in source.shard_set.shards]
    weights = tuple(float(s.weight) for s in sources)
    kwargs = {"shards": shards, "weights": weights, "seed": seed, "with_targets": with_targets}
    stream = IterableDataset.from_generator(_rows, gen_kwargs=kwargs)
    if shuffle_buffer > 1:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return stream
