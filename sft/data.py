"""Shards -> a streaming `datasets.IterableDataset` of `{"images", "messages", "task"}` rows for TRL's SFTTrainer.

Each shard set is checked against its dataset card first (`ShardSet`, with sha256 when asked), so a missing
card or a corrupt shard stops the run before any step. Rows are decoded straight from the tars (no pickle,
no webdataset decoders); several sets are mixed by weight inside the generator. The generator's
`gen_kwargs` is a list of slices that workers and ranks split, and every slice reads every set, so a set
with one tar keeps its weight on every worker of every rank.
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


_SPREAD = 263  # a prime: consecutive items land in slices far apart


def slice_of(index: int, slices: int) -> int:
    """The slice (of `slices`) item `index` of a set (its tar, or its sample) belongs to."""
    return index * _SPREAD % slices


def _set_rows(
    shards: Sequence[str], mine: frozenset[int], total: int, by_tar: bool, with_targets: bool = False
) -> Iterator[dict[str, Any]]:
    """Rows of one set in the slices `mine` (of `total`): whole tars when `by_tar` (tar j: `slice_of(j)`),
    otherwise single samples (sample p: `slice_of(p)`), so a set with fewer tars than slices is read by all."""
    position = 0
    for j, path in enumerate(shards):
        if by_tar and slice_of(j, total) not in mine:
            continue
        for record in iter_tar_records(path):
            keep = by_tar or slice_of(position, total) in mine
            position += 1
            if keep:
                yield sample_row(Sample.decode(record, where=str(record.get("__url__", path))), with_targets)


def _rows(
    slices: list[int],
    total: int,
    sets: Sequence[Sequence[str]],
    weights: tuple[float, ...],
    seed: int,
    with_targets: bool = False,
) -> Iterator[dict[str, Any]]:
    """Rows of the given slices of every set, the sets mixed by `weights` with a seeded draw.

    datasets calls this once per slice (of `total`) that a worker of a rank reads; every slice reads every
    set (whole tars when a set has at least `total` of them, else a spread of its samples), so the mixing
    weights hold whatever the number of workers x ranks. A set that runs out restarts (oversampling small
    sets) until every set has run out once.
    """
    mine = frozenset(slices)
    by_tar = [len(tars) >= total for tars in sets]
    active = list(range(len(sets)))
    streams = {i: _set_rows(sets[i], mine, total, by_tar[i], with_targets) for i in active}
    exhausted: set[int] = set()
    rng = random.Random(f"{seed}:{min(mine) if mine else ''}")
    while active and len(exhausted) < len(active):
        i = rng.choices(active, weights=[weights[j] for j in active])[0]
        row = next(streams[i], None)
        if row is None:
            streams[i] = _set_rows(sets[i], mine, total, by_tar[i], with_targets)
            row = next(streams[i], None)
            if row is None:  # nothing of this set in these slices
                active.remove(i)
                continue
            exhausted.add(i)
            if len(exhausted) == len(active):
                continue
        yield row


def stream_dataset(
    sources: Sequence[OpenedSource],
    seed: int = 0,
    shuffle_buffer: int = 256,
    with_targets: bool = False,
    slices: int = 1,
) -> IterableDataset:
    """One IterableDataset over all sets: `slices` slices (one per DataLoader worker x rank: datasets hands
    each its own; every slice reads every set), sets mixed with probabilities proportional to their weights,
    then a seeded slice-order shuffle and a `shuffle_buffer` row buffer. Rows keep PIL images (no Arrow)."""
    if slices < 1:
        raise ConfigError(f"slices: must be >= 1, got {slices}")
    sets = tuple(tuple(str(p) for p in source.shard_set.shards) for source in sources)  # a tuple: not split
    weights = tuple(float(s.weight) for s in sources)
    kwargs = {"slices": list(range(slices)), "total": slices, "sets": sets, "weights": weights, "seed": seed}
    kwargs["with_targets"] = with_targets
    stream = IterableDataset.from_generator(_rows, gen_kwargs=kwargs)
    if shuffle_buffer > 1:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    return stream
