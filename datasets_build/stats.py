"""Per-dimension statistics of numeric features in the layout of LeRobot's `meta/stats.json`.

Keys per feature: min, max, mean, std, count, q01, q10, q50, q90, q99 (lists, one value per dim).
The VLA normaliser and the FAST tokenizer read q01/q99 (or mean/std) from this layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def feature_stats(values: np.ndarray) -> dict[str, Any]:
    """Statistics over axis 0 of `values` (N, ...), each a nested list with the per-dim shape."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    stats: dict[str, Any] = {
        "min": arr.min(axis=0).tolist(),
        "max": arr.max(axis=0).tolist(),
        "mean": arr.mean(axis=0).tolist(),
        "std": arr.std(axis=0).tolist(),
        "count": [int(arr.shape[0])],
    }
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(arr, q, axis=0).tolist()
    return stats
