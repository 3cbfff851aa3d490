"""Per-dimension statistics of numeric features in the layout of LeRobot's `meta/stats.json`.

Keys per feature: min, max, mean, std, count, q01, q10, q50, q90, q99 (lists, one value per dim).
The VLA normaliser and the FAST tokenizer read q01/q99 (or mean/std) from this layout.
`RunningStats` computes them in one streaming pass: min/max/mean/std exactly, quantiles exactly
up to `reservoir` rows and from a uniform reservoir sample of that many rows beyond.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


class RunningStats:
    """Streaming per-dimension statistics of rows (N, dim) fed in batches."""

    def __init__(self, dim: int, reservoir: int = 1_000_000, seed: int = 0) -> None:
        self.dim = dim
        self.count = 0
        self.reservoir = reservoir
        self._rng = np.random.default_rng(seed)
        self._sum = np.zeros(dim)
        self._sumsq = np.zeros(dim)
        self._min = np.full(dim, np.inf)
        self._max = np.full(dim, -np.inf)
        self._sample = np.empty((min(reservoir, 1024), dim))
        self._filled = 0

    def update(self, values: np.ndarray) -> None:
        """Add rows (N, dim) (or (N,) when dim is 1)."""
        arr = np.asarray(values, dtype=np.float64).reshape(-1, self.dim)
        if len(arr) == 0:
            return
        self._sum += arr.sum(axis=0)
        self._sumsq += np.square(arr).sum(axis=0)
        np.minimum(self._min, arr.min(axis=0), out=self._min)
        np.maximum(self._max, arr.max(axis=0), out=self._max)
        self._add_to_reservoir(arr)
        self.count += len(arr)

    def _add_to_reservoir(self, arr: np.ndarray) -> None:
        take = arr[: self.reservoir - self._filled]
        if len(take):
            need = self._filled + len(take)
            if need > len(self._sample):
                grown = np.empty((min(self.reservoir, max(need, 2 * len(self._sample))), self.dim))
                grown[: self._filled] = self._sample[: self._filled]
                self._sample = grown
            self._sample[self._filled : need] = take
            self._filled = need
        rest = arr[len(take) :]
        if len(rest):  # reservoir sampling (Algorithm R) for rows past the reservoir size
            seen = self.count + len(take) + np.arange(1, len(rest) + 1)
            slots = (self._rng.random(len(rest)) * seen).astype(np.int64)
            keep = slots < self.reservoir
            self._sample[slots[keep]] = rest[keep]

    def result(self) -> dict[str, Any]:
        """The statistics as lists (LeRobot stats.json layout for one feature)."""
        if self.count == 0:
            raise ValueError("no values")
        mean = self._sum / self.count
        var = np.maximum(self._sumsq / self.count - np.square(mean), 0.0)
        sample = self._sample[: self._filled]
        stats: dict[str, Any] = {
            "min": self._min.tolist(),
            "max": self._max.tolist(),
            "mean": mean.tolist(),
            "std": np.sqrt(var).tolist(),
            "count": [int(self.count)],
        }
        for name, q in QUANTILES.items():
            stats[name] = np.quantile(sample, q, axis=0).tolist()
        return stats


def feature_stats(values: np.ndarray) -> dict[str, Any]:
    """Statistics over axis 0 of `values` (N, ...) in one call."""
    arr = np.asarray(values)
    running = RunningStats(int(np.prod(arr.shape[1:], dtype=np.int64)), reservoir=max(1, len(arr)))
    running.update(arr)
    return running.result()
