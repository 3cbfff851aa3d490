"""`FrameGeometry`: the objects of one camera frame as masks and metric point clouds in a canonical frame.

Every spatial corpus (bridgevqa, vica, robopoint, sharerobot) asks its questions from this one structure,
whether the geometry came from ground truth (demo sim, CALVIN) or was estimated from the image
(detection + segmentation + monocular depth, `datasets_build.geometry.estimated`).

The canonical frame is viewer-aligned and gravity-aligned (VQASynth's "canonicalised floor"):
origin at the camera centre, +z up (against gravity, or the fitted table normal), +x the camera's right
projected onto the horizontal plane, +y = z cross x. For a camera without roll that looks down by less than
90 degrees (every static camera here) +y is the viewing direction made horizontal, so "left of" = smaller x,
"behind" (farther from the viewer) = larger y, "above" = larger z; widths are x extents, heights z extents.
A camera tilted past straight down (the demo's wrist camera, about 17 degrees past) has +y pointing up the
image instead, opposite its horizontal viewing direction; corpora ask directional questions on static views.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from datasets_build.camera import CameraModel, transform_rows


def canonical_from_camera(up: np.ndarray) -> np.ndarray:
    """4x4 transform camera frame -> canonical frame, given `up` (3,) expressed in the camera frame.

    Canonical z = up, x = camera x with its `up` component removed, y = z cross x (the viewing direction
    on the horizontal plane). The origin stays at the camera centre.
    """
    z = np.asarray(up, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.array([1.0, 0.0, 0.0]) - z[0] * z
    if np.linalg.norm(x) < 1e-6:  # camera x is vertical: fall back on the camera's z
        x = np.array([0.0, 0.0, 1.0]) - z[2] * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    out = np.eye(4)
    out[:3, :3] = np.stack([x, y, z])
    return out


def canonical_from_world(camera: CameraModel, world_up: np.ndarray | None = None) -> np.ndarray:
    """4x4 transform world -> canonical for a calibrated camera in a world whose up axis is `world_up` (+z).

    A pure function of the extrinsics and `world_up`: computed once per distinct pair (a static camera is
    asked for it every frame) and returned as a read-only array.
    """
    up_world = (0.0, 0.0, 1.0) if world_up is None else tuple(float(v) for v in np.asarray(world_up).ravel())
    if not camera.extrinsics.flags.c_contiguous:  # the cache rebuilds C-ordered arrays: compute this one as is
        return _world_to_canonical(camera.extrinsics, up_world)
    return _cached_world_to_canonical(camera.extrinsics.tobytes(), up_world)


def _world_to_canonical(extrinsics: np.ndarray, up: tuple[float, ...]) -> np.ndarray:
    up_cam = extrinsics[:3, :3] @ np.asarray(up, dtype=np.float64)
    return canonical_from_camera(up_cam) @ extrinsics


@functools.lru_cache(maxsize=256)
def _cached_world_to_canonical(extrinsics: bytes, up: tuple[float, ...]) -> np.ndarray:
    out = _world_to_canonical(np.frombuffer(extrinsics, dtype=np.float64).reshape(4, 4), up)
    out.flags.writeable = False
    return out


def canonical_camera(model: CameraModel, world_to_canonical: np.ndarray) -> CameraModel:
    """The camera that maps canonical points to `model`'s pixels: extrinsics @ inv(world_to_canonical).

    A pure function of the two matrices: a static camera's is made once (read-only arrays) and shared.
    """
    if not (model.extrinsics.flags.c_contiguous and world_to_canonical.flags.c_contiguous):
        return CameraModel(
            model.intrinsics, model.extrinsics @ np.linalg.inv(world_to_canonical), model.width, model.height
        )
    return _cached_canonical_camera(
        model.intrinsics.tobytes(), model.extrinsics.tobytes(), world_to_canonical.tobytes(), model.width, model.height
    )


@functools.lru_cache(maxsize=256)
def _cached_canonical_camera(intrinsics: bytes, extrinsics: bytes, w2c: bytes, width: int, height: int) -> CameraModel:
    matrices = [
        np.frombuffer(m, dtype=np.float64).reshape(shape)
        for m, shape in ((intrinsics, (3, 3)), (extrinsics, (4, 4)), (w2c, (4, 4)))
    ]
    out = CameraModel(matrices[0].copy(), matrices[1] @ np.linalg.inv(matrices[2]), width, height)
    out.intrinsics.flags.writeable = False
    out.extrinsics.flags.writeable = False
    return out


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    return transform_rows(np.asarray(points, dtype=np.float64).reshape(-1, 3), transform)


@dataclass
class ObjectGeometry:
    """One object in one frame: its pixel mask, pixel box and point cloud (canonical metres).

    Centroid and robust bounds are computed once, on first use: do not modify `points` afterwards.
    """

    name: str
    mask: np.ndarray  # bool (H, W) at the frame's resolution
    points: np.ndarray  # float32 (N, 3) canonical metres (may be subsampled)
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) pixels, inclusive-exclusive, of the mask
    score: float = 1.0  # detector confidence (1 for ground truth)
    category: str = ""

    @cached_property
    def centroid(self) -> np.ndarray:
        """Mean of the point cloud (3,), canonical metres."""
        return mean_rows(self.points)

    @cached_property
    def _bound_lists(self) -> list[list[float]]:
        return robust_bound_lists(self.points)

    @cached_property
    def _bounds(self) -> np.ndarray:
        return np.array(self._bound_lists, dtype=np.float64)

    @cached_property
    def pixels(self) -> int:
        """Number of mask pixels."""
        return int(np.count_nonzero(self.mask))

    @property
    def lower(self) -> np.ndarray:
        """Per-axis 2nd percentile of the cloud (robust minimum)."""
        return self._bounds[0]

    @property
    def upper(self) -> np.ndarray:
        """Per-axis 98th percentile of the cloud (robust maximum)."""
        return self._bounds[1]

    @property
    def extent(self) -> np.ndarray:
        """Robust (width along x, depth along y, height along z) in metres."""
        return self.upper - self.lower

    def facts(self) -> dict[str, Any]:
        """JSON-serialisable facts a sample's `meta` records and `verify` re-derives answers from."""
        lower, upper = self._bound_lists  # the bounds' floats, without a round trip through an array
        return {
            "name": self.name,
            "centroid": [round(v, 5) for v in self.centroid.tolist()],
            "lower": [round(v, 5) for v in lower],
            "upper": [round(v, 5) for v in upper],
            "box": [int(v) for v in self.box],
            "pixels": self.pixels,
            "score": round(float(self.score), 4),
            "category": self.category,
        }


@dataclass
class FrameGeometry:
    """The geometry of one frame of one camera.

    `camera` maps canonical points to pixels (its extrinsics are canonical -> camera);
    `world_to_canonical` is set only when the source has a calibrated world frame (ground truth).
    `support` is the mask of the supporting surface (table or floor) when known.
    """

    episode_id: str
    step: int
    camera_name: str
    image: np.ndarray  # uint8 (H, W, 3)
    camera: CameraModel
    objects: dict[str, ObjectGeometry] = field(default_factory=dict)
    world_to_canonical: np.ndarray | None = None
    support: np.ndarray | None = None  # bool (H, W)
    support_height: float | None = None  # canonical z of the support plane, metres
    origin: str = "ground_truth"  # or "estimated"

    @property
    def height(self) -> int:
        """Image rows."""
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        """Image columns."""
        return int(self.image.shape[1])

    def project(self, points_canonical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Canonical points (N, 3) -> pixels (N, 2) as (u, v) and camera depth (N,)."""
        return self.camera.project(points_canonical)

    def to_canonical(self, points_world: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> canonical; ValueError when the frame has no world frame (estimated geometry)."""
        if self.world_to_canonical is None:
            raise ValueError("this frame's geometry has no world frame")
        return apply(self.world_to_canonical, points_world)

    def facts(self, objects: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """JSON-serialisable summary for a sample's `meta` (objects' facts, frame, origin); `objects` replaces the
        facts of every object (e.g. those of the objects a sample is about, computed once)."""
        return {
            "episode_id": self.episode_id,
            "step": int(self.step),
            "camera": self.camera_name,
            "origin": self.origin,
            "frame_size": [self.height, self.width],
            "support_height": None if self.support_height is None else round(float(self.support_height), 5),
            "objects": (
                objects if objects is not None else {name: obj.facts() for name, obj in sorted(self.objects.items())}
            ),
        }


_BOUNDS_Q = (2 / 100, 98 / 100)  # the quantiles of `robust_bounds`, as np.percentile(.., [2, 98]) divides them


def robust_bounds(points: np.ndarray) -> np.ndarray:
    """`np.percentile(points, [2, 98], axis=0)` (linear method) float for float: (2, D) float64.

    The columns are sorted and the two order statistics around each quantile are interpolated
    with numpy's own formula (gamma from the virtual index (n - 1) * q; `b - (b - a) * (1 - gamma)` from
    gamma 0.5 up) and dtypes (the difference in the input's dtype, the rest in float64, which Python's
    floats are); a cloud with fewer than 2 points, with NaNs or of another dtype takes np.percentile itself.
    """
    if _percentile_only(points):
        return np.percentile(points, [2, 98], axis=0)
    return np.array(robust_bound_lists(points), dtype=np.float64)


def _percentile_only(points: np.ndarray) -> bool:
    return len(points) < 2 or points.ndim != 2 or points.dtype not in (np.float32, np.float64)


def robust_bound_lists(points: np.ndarray) -> list[list[float]]:
    """`robust_bounds(points).tolist()`: [lower, upper] as lists of Python floats (what `facts` records)."""
    if _percentile_only(points):
        return np.percentile(points, [2, 98], axis=0).tolist()
    rows, gammas = _bounds_weights(len(points))
    ordered = np.sort(points, axis=0)  # NaNs sort last
    if any(math.isnan(v) for v in ordered[-1].tolist()):
        return np.percentile(points, [2, 98], axis=0).tolist()
    around = ordered[rows]  # the order statistics below each quantile, then those above
    below, above = around[:2], around[2:]
    diffs = (above - below).tolist()  # in the input's dtype, as numpy's interpolation takes it
    return [
        [b - d * (1 - g) for b, d in zip(high, diff, strict=True)]
        if g >= 0.5
        else [a + d * g for a, d in zip(low, diff, strict=True)]
        for low, high, diff, g in zip(below.tolist(), above.tolist(), diffs, gammas, strict=True)
    ]


def mean_rows(points: np.ndarray) -> np.ndarray:
    """`points.mean(axis=0)` of (N, D) float32/float64 points, float for float: the same column sums (add.reduce
    along axis 0) divided by the same count (an intp, unsafely cast back), without np.mean's bookkeeping."""
    if points.ndim != 2 or not len(points) or points.dtype not in (np.float32, np.float64):
        return points.mean(axis=0)
    sums = np.add.reduce(points, 0)
    return np.true_divide(sums, np.intp(len(points)), out=sums, casting="unsafe")


def median(values: np.ndarray) -> float:
    """`float(np.median(values))` of 1-D float64 values, value for value, by one partition instead of three.

    np.median averages the two middle order statistics ((a + b) / 2 in float64; the middle one for an odd
    count); here the upper one comes from a single selection and the lower one is the largest below it.
    Values with a NaN, fewer than 2 values, other dtypes and a zero median (whose sign depends on which
    zeros a selection keeps) take np.median itself.
    """
    n = len(values)
    if n < 2 or values.ndim != 1 or values.dtype != np.float64:
        return float(np.median(values))
    half = n // 2
    part = np.partition(values, half)
    upper = float(part[half])
    if math.isnan(float(part[half:].max())):  # NaNs sort last: one is there or nowhere
        return float(np.median(values))
    found = upper if n % 2 else (float(part[:half].max()) + upper) / 2
    return found if found != 0 else float(np.median(values))


@functools.lru_cache(maxsize=4096)
def _bounds_weights(n: int) -> tuple[np.ndarray, tuple[float, float]]:
    """(row indices (4,): the lower neighbour of each quantile, then the upper one; gamma per quantile) of
    `robust_bounds` for `n` >= 2 points: numpy's virtual index (n - 1) * q, its floor (below n - 1, so both
    neighbours exist) and the fraction."""
    lows = [math.floor((n - 1) * q) for q in _BOUNDS_Q]
    rows = np.array(lows + [i + 1 for i in lows])
    rows.flags.writeable = False
    gamma = tuple((n - 1) * q - i for q, i in zip(_BOUNDS_Q, lows, strict=True))
    return rows, (gamma[0], gamma[1])


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a non-empty boolean mask, x1/y1 exclusive."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def flat_box(flat: np.ndarray, width: int) -> tuple[int, int, int, int]:
    """`mask_box` of a mask given as its sorted, non-empty flat pixel indices (row-major, `width` columns)."""
    rows = flat // width
    cols = flat - rows * width
    return int(cols.min()), int(rows[0]), int(cols.max()) + 1, int(rows[-1]) + 1


def subsample(points: np.ndarray, limit: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """At most `limit` rows of `points`: evenly strided (deterministic) unless a generator is given."""
    if len(points) <= limit:
        return points
    if rng is None:
        return points[_strided(len(points), limit)]
    return points[np.sort(rng.choice(len(points), size=limit, replace=False))]


@functools.lru_cache(maxsize=1024)
def _strided(n: int, limit: int) -> np.ndarray:
    """The `limit` evenly strided indices of `subsample` among `n` rows (read-only; made once per pair)."""
    out = np.linspace(0, n - 1, limit).astype(int)
    out.flags.writeable = False
    return out
