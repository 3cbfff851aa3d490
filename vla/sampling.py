"""Which training samples exist, and which of them each rank and DataLoader worker reads, in which order.

A sample is one step of a language window (or of a whole episode without windows): its image, the window's
instruction and the next `chunk` actions, cut at the window's end. `window_spans` applies the window rule:
`full` starts a sample at every step and lets chunks run to the window's end; `drop_last` is VLM4VLA's CALVIN
rule (a window's last frame neither starts a sample nor enters a chunk).

The global sampler visits every sample once per epoch in the order of one permutation of all samples, drawn
from (seed, epoch); slot s of S = ranks x workers reads the permutation's positions s, s + S, s + 2S, ... so
slots never overlap and together cover the epoch. Resuming after k batches of each rank restarts every worker
exactly where the uninterrupted run would be (`resume_plan`); with a different number of ranks or workers the
run restarts at the same fraction of the same epoch instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from datasets_build.episode import LanguageWindow
from datasets_build.errors import ConfigError
from datasets_build.sources.base import EpisodeLayout

WINDOW_RULES = ("full", "drop_last")


def window_spans(
    length: int, instruction: str, language: Sequence[LanguageWindow], rule: str = "full"
) -> list[tuple[int, int, str]]:
    """(first step, end, instruction) per window that yields samples: steps first..end-1 start samples and no
    chunk reaches past `end`. Windows without an instruction yield none."""
    if rule not in WINDOW_RULES:
        raise ConfigError(f"window rule must be one of {WINDOW_RULES}, got {rule!r}")
    windows = [(w.start, w.end, w.instruction) for w in language] or [(0, length, instruction)]
    spans = []
    for start, end, text in windows:
        stop = end - 1 if rule == "drop_last" else end
        if text.strip() and stop > start:
            spans.append((start, stop, text))
    return spans


@dataclass(frozen=True)
class SampleIndex:
    """Every sample of a dataset as parallel arrays: episode position, step, chunk end, instruction id."""

    episode: np.ndarray  # int64 (N,): position in the layout list
    step: np.ndarray  # int64 (N,)
    end: np.ndarray  # int64 (N,): exclusive bound of the chunk's actions
    text: np.ndarray  # int64 (N,): index into `texts`
    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.step)

    @classmethod
    def from_layouts(cls, layouts: Sequence[EpisodeLayout], rule: str = "full") -> SampleIndex:
        """Index the samples of every episode under `rule`."""
        texts: dict[str, int] = {}
        columns: list[np.ndarray] = []
        for position, layout in enumerate(layouts):
            for start, end, text in window_spans(len(layout), layout.instruction, layout.language, rule):
                steps = np.arange(start, end, dtype=np.int64)
                text_id = texts.setdefault(text, len(texts))
                columns.append(
                    np.stack(
                        [np.full_like(steps, position), steps, np.full_like(steps, end), np.full_like(steps, text_id)]
                    )
                )
        table = np.concatenate(columns, axis=1) if columns else np.zeros((4, 0), dtype=np.int64)
        return cls(table[0], table[1], table[2], table[3], tuple(texts))

    def episodes_of(self, samples: np.ndarray) -> np.ndarray:
        """Episode positions of the given sample indices."""
        return self.episode[samples]


def epoch_order(size: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of all `size` samples for one epoch (the same in every process)."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def slot_share(size: int, slot: int, slots: int) -> int:
    """How many samples of an epoch slot `slot` of `slots` reads."""
    return len(range(slot, size, slots))


def slot_stream(size: int, seed: int, slot: int, slots: int, start: int = 0) -> Iterator[tuple[int, int]]:
    """(epoch, sample index) pairs slot `slot` of `slots` reads, endlessly, from its `start`-th position on."""
    share = slot_share(size, slot, slots)
    if share == 0:
        raise ConfigError(f"{size} samples cannot feed {slots} ranks x workers; use fewer workers or more data")
    epoch, offset = divmod(start, share)
    while True:
        mine = epoch_order(size, seed, epoch)[slot::slots]
        for index in mine[offset:]:
            yield epoch, int(index)
        offset = 0
        epoch += 1


@dataclass(frozen=True)
class ResumeState:
    """Where training stopped, as the data path needs it: batches each rank consumed and the layout they came
    from (ranks, workers per rank, per-rank batch size)."""

    batches: int = 0
    world_size: int = 1
    num_workers: int = 0
    batch_size: int = 1  # per rank

    def to_dict(self) -> dict[str, int]:
        """JSON-ready form (stored in a checkpoint's step.json)."""
        return {
            "batches": self.batches,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
        }


def resume_plan(
    rank: int, world_size: int, worker: int, workers: int, batch_size: int, resume: ResumeState | None
) -> tuple[int, int, int]:
    """(slot, slots, start position in the slot's stream) for DataLoader worker `worker` of `workers` on `rank`.

    A DataLoader takes batches from its workers in turn, so after k batches the next one comes from worker
    k mod W: the new worker w continues the stream of the old worker (w + k) mod W, which had produced
    k // W (+1 for the first k mod W workers) batches. With another layout every slot starts at the same
    share of the samples the whole run had consumed.
    """
    workers = max(1, workers)
    slots = world_size * workers
    if resume is None or resume.batches == 0:
        return rank * workers + worker, slots, 0
    same = (resume.world_size, max(1, resume.num_workers), resume.batch_size) == (world_size, workers, batch_size)
    if same:
        original = (worker + resume.batches) % workers
        produced = resume.batches // workers + (1 if original < resume.batches % workers else 0)
        return rank * workers + original, slots, produced * batch_size
    consumed = resume.batches * resume.batch_size * resume.world_size
    return rank * workers + worker, slots, consumed // slots
