"""The support height (median canonical z of the support's sampled pixels) without transforming every pixel.

`ground_truth_geometry` takes the median of the canonical heights of up to 8192 support pixels, each made by
back-projection (`CameraModel.unproject_flat`) and two rigid transforms (camera -> world -> canonical). Only the
one or two middle order statistics matter, so every height is first approximated in one product
(depth * a per-pixel factor + a constant, `approximate_heights`), the middle is located among the
approximations, and only the pixels whose exact height may be a middle order statistic (`MedianBand.positions`)
take the exact path; `MedianBand.median` then gives `scene.median` of all the exact heights, value for value.

Why it is exact: |approximation - exact height| <= `error` for every pixel (both paths round at most a dozen
times, each rounding within 2**-53 of a magnitude bounded by `_HeightTable.scale`; `error` is 2**-40 of that
bound, over 300 times the worst case). The k-th order statistic of the exact heights is then within `error`
of the k-th approximation, so it lies in [approx_lo - error, approx_hi + error]; a pixel whose approximation
is more than 2 * `error` below approx_lo is exactly below it (those are counted), one more than 2 * `error`
above approx_hi exactly above it, and the wanted ranks among the remaining pixels are the ranks minus that
count. The exact heights of those pixels must be what the full product gives them: the rigid transforms go
through BLAS, whose rows do not depend on how many rows the product has (tests/test_geometry_exact.py checks
it); a band of fewer than 2 pixels is padded, as one row takes numpy's vector path instead.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from datasets_build.camera import CameraModel, pixel_rays

_RELATIVE_ERROR = 2.0**-40  # of `_HeightTable.scale`: the bound on |approximation - exact height|
_MAX_SCALE = 1e300  # larger magnitudes could overflow: the exact path takes them


@dataclass(frozen=True)
class _HeightTable:
    """Per camera pose: canonical z ~= depth * factor[pixel] + offset, and what bounds the rounding."""

    factor: np.ndarray  # (H * W,) read-only
    offset: float
    ray_max: float  # max(1, |ray factors|): a camera point's coordinates are within depth * ray_max
    rotation_max: tuple[float, float]  # max |entry| of camera->world's rotation, of canonical z's row
    translation_max: tuple[float, float]  # max |entry| of camera->world's translation, |canonical z's offset|

    def scale(self, depth_max: float) -> float:
        """A bound on the magnitude of every intermediate of both paths for depths up to `depth_max`."""
        world = 3 * self.rotation_max[0] * depth_max * self.ray_max + self.translation_max[0]
        return 1.0 + 3 * self.rotation_max[1] * world + self.translation_max[1] + abs(self.offset)


@functools.lru_cache(maxsize=64)
def _height_table(intrinsics: bytes, c2w: bytes, w2c: bytes, width: int, height: int) -> _HeightTable | None:
    """The `_HeightTable` of one camera pose, or None when its numbers are not finite."""
    across, down = pixel_rays(intrinsics, width, height)
    to_world = np.frombuffer(c2w, dtype=np.float64).reshape(4, 4)
    row = np.frombuffer(w2c, dtype=np.float64).reshape(4, 4)[2]
    gain = [sum(float(row[j]) * float(to_world[j, k]) for j in range(3)) for k in range(3)]
    factor = (gain[0] * across + gain[1] * down) + gain[2]
    offset = sum(float(row[j]) * float(to_world[j, 3]) for j in range(3)) + float(row[3])
    if not (np.isfinite(factor).all() and math.isfinite(offset)):
        return None
    factor.flags.writeable = False
    ray_max = max([1.0] + [float(np.abs(t).max()) for t in (across, down) if len(t)])
    return _HeightTable(
        factor=factor,
        offset=offset,
        ray_max=ray_max,
        rotation_max=(float(np.abs(to_world[:3, :3]).max()), float(np.abs(row[:3]).max())),
        translation_max=(float(np.abs(to_world[:3, 3]).max()), abs(float(row[3]))),
    )


def approximate_heights(
    model: CameraModel, w2c: np.ndarray, depth: np.ndarray, flat: np.ndarray
) -> tuple[np.ndarray, float] | None:
    """(canonical heights of the pixels `flat` to within `error`, error), or None when no bound can be given."""
    h, w = depth.shape
    if not (model.intrinsics.flags.c_contiguous and w2c.flags.c_contiguous and len(flat)):
        return None
    table = _height_table(
        model.intrinsics.tobytes(), np.ascontiguousarray(model.camera_to_world).tobytes(), w2c.tobytes(), w, h
    )
    if table is None:
        return None
    depths = depth.reshape(-1)[flat]
    depth_max = max(float(depths.max()), -float(depths.min()))  # NaN if there is one
    scale = table.scale(depth_max)
    if not scale < _MAX_SCALE:  # NaN or inf depth, or magnitudes where the products could overflow
        return None
    approx = np.multiply(depths, table.factor[flat], dtype=np.float64)  # finite: |depth * factor| < scale
    approx += table.offset
    return approx, _RELATIVE_ERROR * scale


@dataclass(frozen=True)
class MedianBand:
    """The pixels whose exact height may be a middle order statistic, and those statistics' ranks among them."""

    positions: np.ndarray  # indices into the approximated values, at least 2 (padded with a repeat)
    ranks: tuple[int, ...]  # rank among the `band` exact heights of each middle order statistic
    band: int  # how many of `positions` are the band (the rest is padding)

    def median(self, exact: np.ndarray) -> float | None:
        """`scene.median` of all the exact heights, given the exact heights at `positions`; None when it needs
        np.median itself (a NaN or a zero, whose sign depends on the selection)."""
        values = exact[: self.band]
        if np.isnan(values).any():
            return None
        ordered = np.sort(values)
        found = [float(ordered[r]) for r in self.ranks]
        value = found[0] if len(found) == 1 else (found[0] + found[1]) / 2
        return value if value != 0 else None


def median_band(approx: np.ndarray, error: float) -> MedianBand | None:
    """The `MedianBand` of values known to within `error`; None for fewer than 2 values (median's own path)."""
    n = len(approx)
    if n < 2:
        return None
    half = n // 2
    ks = (half,) if n % 2 else (half - 1, half)
    part = np.partition(approx, ks)
    low, high = float(part[ks[0]]) - 2 * error, float(part[ks[-1]]) + 2 * error
    below = int(np.count_nonzero(part[: ks[0]] < low))  # every value below low < approx_lo is left of ks[0]
    positions = np.flatnonzero((approx >= low) & (approx <= high))
    ranks = tuple(k - below for k in ks)
    if not all(0 <= r < len(positions) for r in ranks):  # cannot happen with a true bound; be safe
        return None
    band = len(positions)
    if band < 2:
        positions = np.concatenate([positions, positions])
    return MedianBand(positions, ranks, band)
