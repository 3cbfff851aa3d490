"""The mask and point conventions of sample `meta`: run-length encoded boolean masks and the pixel a point hits.

Corpora record target regions (`meta["region"]`, ViCA's `meta["facts"]["support"]`) in this form so that
`verify` and the answer scorers can re-check an answer from the shard alone; both import it from here.
A normalised point (x, y) in [0, 1] is (column / width, row / height).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Row-major run lengths of a boolean (H, W) mask, alternating False/True and starting with False."""
    flat = np.asarray(mask, dtype=bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts: list[int] = np.diff(bounds).tolist()  # Python ints
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


MAX_MASK_PIXELS = 1 << 26  # a 8192 x 8192 image; a larger stated size is corrupt data, not a mask


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of `rle_encode`: the (H, W) boolean mask; ValueError when the runs do not cover it."""
    h, w = (int(v) for v in rle["size"])
    counts = [int(c) for c in rle["counts"]]
    if h < 0 or w < 0 or h * w > MAX_MASK_PIXELS:
        raise ValueError(f"mask size {h}x{w} outside 0..{MAX_MASK_PIXELS} pixels")
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise ValueError("run lengths do not cover the mask")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(h, w)


def point_pixel(x: float, y: float, height: int, width: int) -> tuple[int, int]:
    """The (row, col) of the pixel a normalised point falls in (clamped to the image)."""
    return min(height - 1, max(0, math.floor(y * height))), min(width - 1, max(0, math.floor(x * width)))
