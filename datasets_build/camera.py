"""Pinhole camera model shared by sources, the demo sim and the geometry of the corpora.

Convention: OpenCV camera frame (x right, y down, z forward); `extrinsics` maps world -> camera;
pixel (u, v) = (column, row); depth maps hold metres along the camera z axis.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics (3x3), world->camera extrinsics (4x4, OpenCV axes) and the image size."""

    intrinsics: np.ndarray
    extrinsics: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "intrinsics", np.asarray(self.intrinsics, dtype=np.float64).reshape(3, 3))
        object.__setattr__(self, "extrinsics", np.asarray(self.extrinsics, dtype=np.float64).reshape(4, 4))

    @classmethod
    def from_look_at(
        cls,
        eye: np.ndarray,
        target: np.ndarray,
        up: np.ndarray,
        fov_deg: float,
        width: int,
        height: int,
    ) -> CameraModel:
        """Camera at `eye` looking at `target`; `fov_deg` is the vertical field of view (OpenGL/pybullet)."""
        eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
        forward = target - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, up)
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rotation = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        extrinsics = np.eye(4)
        extrinsics[:3, :3] = rotation
        extrinsics[:3, 3] = -rotation @ eye
        focal = height / (2.0 * np.tan(np.deg2rad(fov_deg) / 2.0))
        intrinsics = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
        return cls(intrinsics, extrinsics, width, height)

    @classmethod
    def from_opengl(cls, view: np.ndarray, projection: np.ndarray, width: int, height: int) -> CameraModel:
        """From OpenGL view and projection matrices as pybullet returns them (16 floats, column-major)."""
        view_m = np.asarray(view, dtype=np.float64).reshape(4, 4).T
        proj_m = np.asarray(projection, dtype=np.float64).reshape(4, 4).T
        fx = proj_m[0, 0] * width / 2.0
        fy = proj_m[1, 1] * height / 2.0
        cx = (1.0 - proj_m[0, 2]) * width / 2.0
        cy = (1.0 + proj_m[1, 2]) * height / 2.0
        intrinsics = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        return cls(intrinsics, _GL_TO_CV @ view_m, width, height)

    @cached_property
    def camera_to_world(self) -> np.ndarray:
        """Inverse of the extrinsics (camera pose in the world); computed once per model, read-only."""
        inverse = np.linalg.inv(self.extrinsics)
        inverse.flags.writeable = False
        return inverse

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera-frame points (N, 3)."""
        pts = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        return pts @ self.extrinsics[:3, :3].T + self.extrinsics[:3, 3]

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (N, 3) -> pixel coordinates (N, 2) as (u=column, v=row) and depth (N,) in metres."""
        cam = self.to_camera(points_world)
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam[:, :2] / z[:, None]) @ self.intrinsics[:2, :2].T + self.intrinsics[:2, 2]
        return uv, z

    def unproject(self, depth: np.ndarray, pixels: np.ndarray | None = None) -> np.ndarray:
        """Depth map (H, W) -> world points: all pixels (H*W, 3), or only `pixels` given as (N, 2) (u, v)."""
        depth = np.asarray(depth)
        if pixels is None:
            depth = depth.astype(np.float64, copy=False)
            v, u = np.mgrid[0 : depth.shape[0], 0 : depth.shape[1]]
            u, v, z = u.ravel() + 0.5, v.ravel() + 0.5, depth.ravel()
        else:
            pix = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
            u, v = pix[:, 0], pix[:, 1]
            rows, cols = np.clip(v.astype(int), 0, depth.shape[0] - 1), np.clip(u.astype(int), 0, depth.shape[1] - 1)
            z = depth[rows, cols].astype(np.float64)  # only these pixels converted (exactly, as the whole map was)
        k = self.intrinsics
        x = (u - k[0, 2]) / k[0, 0] * z
        y = (v - k[1, 2]) / k[1, 1] * z
        cam = np.stack([x, y, z], axis=1)
        c2w = self.camera_to_world
        return cam @ c2w[:3, :3].T + c2w[:3, 3]

    def unproject_flat(self, depth: np.ndarray, flat: np.ndarray) -> np.ndarray:
        """`unproject` at the centres of the pixels `flat` (row-major indices into `depth`), float for float.

        The per-pixel ray factors ((u - cx) / fx, (v - cy) / fy) are what `unproject` computes for each pixel,
        taken from tables made once per intrinsics and image size; the rest is the same arithmetic.
        """
        depth = np.asarray(depth)
        h, w = depth.shape
        flat = np.asarray(flat)
        across, down = pixel_rays(self.intrinsics.tobytes(), w, h)
        columns = np.empty((3, len(flat)))  # cam = columns.T, (N, 3) in column-major order
        z = columns[2]
        z[:] = depth.reshape(-1)[flat]  # float64 where read
        np.multiply(across[flat], z, out=columns[0])
        np.multiply(down[flat], z, out=columns[1])
        return transform_rows(columns.T, self.camera_to_world)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (lists of floats)."""
        return {
            "intrinsics": self.intrinsics.tolist(),
            "extrinsics": self.extrinsics.tolist(),
            "width": int(self.width),
            "height": int(self.height),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CameraModel:
        """Inverse of `to_dict`."""
        return cls(
            np.asarray(data["intrinsics"]), np.asarray(data["extrinsics"]), int(data["width"]), int(data["height"])
        )


@functools.lru_cache(maxsize=64)
def _ray_factors(intrinsics: bytes, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """((u - cx) / fx per column, (v - cy) / fy per row) at the pixel centres, read-only (see `unproject_flat`)."""
    k = np.frombuffer(intrinsics, dtype=np.float64).reshape(3, 3)
    across = (np.arange(width) + 0.5 - k[0, 2]) / k[0, 0]
    down = (np.arange(height) + 0.5 - k[1, 2]) / k[1, 1]
    across.flags.writeable = False
    down.flags.writeable = False
    return across, down


@functools.lru_cache(maxsize=16)
def pixel_rays(intrinsics: bytes, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """`_ray_factors` per pixel, row-major (height * width,): the column's factor and the row's, read-only."""
    across, down = _ray_factors(intrinsics, width, height)
    per_pixel = np.tile(across, height), np.repeat(down, width)
    for table in per_pixel:
        table.flags.writeable = False
    return per_pixel


def transform_rows(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """`points @ transform[:3, :3].T + transform[:3, 3]` for (N, 3) float64 points, float for float.

    From 2 rows on, the rotation goes to the matrix product as a C-contiguous copy: BLAS multiplies the same
    numbers in the same order whatever the operands' memory order (tests/test_geometry_exact.py checks it),
    several times faster; the translation is then added to the flat result from a tiled copy (the same sums
    in one contiguous loop). A single row keeps the plain expression (numpy hands it to a vector product).
    """
    if len(points) < 2:
        return points @ transform[:3, :3].T + transform[:3, 3]
    out = points @ np.ascontiguousarray(transform[:3, :3].T)
    flat = out.reshape(-1)
    np.add(flat, _tiled_translation(transform, len(out)), out=flat)
    return out


_TILES: dict[bytes, np.ndarray] = {}  # translation (24 bytes) -> the translation repeated, read-only


def _tiled_translation(transform: np.ndarray, rows: int) -> np.ndarray:
    """`transform[:3, 3]` repeated `rows` times, (3 * rows,): a view of a table kept per translation."""
    translation = np.ascontiguousarray(transform[:3, 3], dtype=np.float64)
    key = translation.tobytes()
    tile = _TILES.get(key)
    if tile is None or len(tile) < 3 * rows:
        if len(_TILES) >= 64:
            _TILES.clear()
        tile = np.tile(translation, max(rows, 4096))
        tile.flags.writeable = False
        _TILES[key] = tile
    return tile[: 3 * rows]
