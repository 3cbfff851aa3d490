"""Frame geometry from an episode's ground truth: depth + calibrated camera + object masks.

Masks come from the segmentation map when the source has one (demo sim), otherwise from the objects'
oriented boxes (pose + size, e.g. CALVIN's blocks from `scene_obs`): a pixel belongs to an object when its
depth back-projects inside the box grown by `box_tolerance`, so occluded parts are not counted. The
support surface is the segmentation's table id (the option, or the id the source declares in
`episode.meta["support_segmentation_id"]`), else the densest horizontal layer of points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets_build.camera import CameraModel
from datasets_build.episode import Episode, ObjectInfo
from datasets_build.geometry.scene import (
    FrameGeometry,
    ObjectGeometry,
    apply,
    canonical_camera,
    canonical_from_world,
    flat_box,
    median,
    subsample,
)
from datasets_build.geometry.support_height import MedianBand, approximate_heights, median_band

SUPPORT_SAMPLE = 8192  # support pixels (evenly strided) whose median height is the support height
_EMPTY = np.zeros((0, 3), np.float32)  # read-only placeholder of a cloud made in the frame's batch
_EMPTY.flags.writeable = False
_EMPTY_INDEX = np.zeros(0, dtype=np.intp)


@dataclass
class GroundTruthOptions:
    """How ground-truth geometry is read from an episode."""

    min_pixels: int = 12  # objects with fewer visible pixels are left out (occluded or out of view)
    max_points: int = 2048  # per-object point cloud size kept (evenly strided)
    box_tolerance: float = 0.005  # metres added around an object's box when masks come from poses
    support_id: int | None = None  # segmentation id of the table; None = the source's (meta), else fitted
    support_tolerance: float = 0.01  # metres: points this close to the support height are support


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of an xyzw quaternion."""
    x, y, z, w = (float(v) for v in np.asarray(q, dtype=np.float64) / np.linalg.norm(q))
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def box_mask(obj: ObjectInfo, step: int, world_points: np.ndarray, tolerance: float) -> np.ndarray:
    """Which of `world_points` (N, 3) lie inside the object's oriented box (grown by `tolerance`)."""
    assert obj.size is not None
    rotation = (
        np.eye(3)
        if obj.orientations is None
        else rotation_from_quaternion(obj.orientations[min(step, len(obj.orientations) - 1)])
    )
    local = (world_points - obj.position_at(step)) @ rotation  # world -> object frame
    half = obj.size / 2.0 + tolerance
    return np.all(np.abs(local) <= half, axis=1)


def support_layer(z: np.ndarray, tolerance: float) -> float | None:
    """Height of the densest horizontal layer of points (1 cm bins, refined by the median), or None."""
    z = z[np.isfinite(z)]
    if len(z) < 16:
        return None
    edges = np.arange(z.min(), z.max() + 0.02, 0.01)
    if len(edges) < 2:
        return float(np.median(z))
    counts, edges = np.histogram(z, bins=edges)
    best = int(np.argmax(counts))
    centre = 0.5 * (edges[best] + edges[best + 1])
    near = z[np.abs(z - centre) <= tolerance]
    return float(np.median(near)) if len(near) else float(centre)


_Checked = tuple[np.ndarray, np.ndarray, CameraModel, np.ndarray, np.ndarray | None]


def _checked_frame(episode: Episode, camera: str, step: int) -> _Checked | str:
    """(image, depth as stored, camera model, valid-depth flags (H*W,), segmentation or None), or a skip reason."""
    if camera not in episode.frames:
        return "no_camera"
    if camera not in episode.depth:
        return "no_depth"
    if camera not in episode.camera:
        return "no_calibration"
    image = episode.frames[camera][step]
    depth = np.asarray(episode.depth[camera][step])  # converted to float64 where read (exactly, pixel by pixel)
    h, w = depth.shape
    if image.shape[:2] != (h, w):
        return "depth_size_mismatch"
    model = episode.camera_at(camera, step)
    if (model.height, model.width) != (h, w):
        return "calibration_size_mismatch"
    valid = np.isfinite(depth).ravel() & (depth.ravel() > 0)
    seg = episode.segmentation.get(camera)
    seg_frame = seg[step] if seg is not None and seg.shape[1:] == (h, w) else None
    return image, depth, model, valid, seg_frame


def ground_truth_pixel_counts(
    episode: Episode,
    camera: str,
    step: int,
    options: GroundTruthOptions | None = None,
    names: list[str] | None = None,
) -> dict[str, int] | str:
    """{object: mask pixels} of the objects `ground_truth_geometry` would keep, or its skip reason: the same
    masks counted without building the frame's geometry (visibility over many frames)."""
    opts = options or GroundTruthOptions()
    checked = _checked_frame(episode, camera, step)
    if isinstance(checked, str):
        return checked
    _, _, _, valid, seg_frame = checked
    wanted = names if names is not None else sorted(episode.objects)
    if seg_frame is None or any(episode.objects[n].segmentation_id is None for n in wanted if n in episode.objects):
        found = ground_truth_geometry(episode, camera, step, opts, names, points=False)  # box masks need 3-D
        return found if isinstance(found, str) else {n: o.pixels for n, o in found.objects.items()}
    counts: dict[str, int] = {}
    for name in wanted:
        info = episode.objects.get(name)
        if info is None or info.segmentation_id is None:
            continue
        count = int(np.count_nonzero((seg_frame == info.segmentation_id).ravel() & valid))
        if count >= opts.min_pixels:
            counts[name] = count
    if not counts and not any(o.size is not None or o.segmentation_id is not None for o in episode.objects.values()):
        return "no_masks"
    return counts


def ground_truth_support(
    episode: Episode, camera: str, step: int, options: GroundTruthOptions | None = None
) -> FrameGeometry | str:
    """`ground_truth_geometry` for the support plane and the camera only (`objects` may be left empty).

    Without the objects' point clouds when that cannot change the support: the support is the segmentation id
    the source declares, every object is segmented (no box masks) and the support's pixels are present;
    otherwise the full geometry.
    """
    opts = options or GroundTruthOptions()
    declared = episode.meta.get("support_segmentation_id")
    support_id = opts.support_id if opts.support_id is not None else declared if isinstance(declared, int) else None
    seg = episode.segmentation.get(camera)
    depth = episode.depth.get(camera)
    if (
        support_id is not None
        and seg is not None
        and depth is not None
        and seg.shape[1:] == np.shape(depth)[1:]
        and all(o.segmentation_id is not None for o in episode.objects.values())
    ):
        found = ground_truth_geometry(episode, camera, step, opts, names=[])
        if isinstance(found, str) or found.support is not None:
            return found
    return ground_truth_geometry(episode, camera, step, opts)


def ground_truth_geometry(
    episode: Episode,
    camera: str,
    step: int,
    options: GroundTruthOptions | None = None,
    names: list[str] | None = None,
    points: bool = True,
) -> FrameGeometry | str:
    """The frame's geometry, or a skip reason (`no_camera`, `no_depth`, `no_calibration`, `no_masks`).

    With `points=False` only masks and boxes are made (empty point clouds, no support): for visibility
    questions over many frames.
    """
    opts = options or GroundTruthOptions()
    checked = _checked_frame(episode, camera, step)
    if isinstance(checked, str):
        return checked
    image, depth, model, valid, seg_frame = checked
    h, w = depth.shape
    w2c = canonical_from_world(model)
    wanted = names if names is not None else sorted(episode.objects)
    declared = episode.meta.get("support_segmentation_id")
    support_id = opts.support_id if opts.support_id is not None else declared if isinstance(declared, int) else None
    box_masks = seg_frame is None or any(
        episode.objects[n].segmentation_id is None for n in wanted if n in episode.objects
    )
    # every pixel's world point only when box masks or a fitted support layer need them (segmentation
    # masks with a known support id need only the pixels they keep: several times cheaper)
    world = model.unproject(depth) if box_masks or (points and support_id is None) else None
    canonical = apply(w2c, world) if world is not None else None

    def canonical_at(flat: np.ndarray) -> np.ndarray:
        if canonical is not None:
            return canonical[flat]
        return apply(w2c, model.unproject_flat(depth, flat))

    objects: dict[str, ObjectGeometry] = {}
    batched: list[tuple[ObjectGeometry, np.ndarray]] = []  # clouds made in one back-projection, below
    for name in wanted:
        info = episode.objects.get(name)
        if info is None:
            continue
        if seg_frame is not None and info.segmentation_id is not None:
            mask = (seg_frame == info.segmentation_id).ravel() & valid
        elif info.size is not None and world is not None:
            mask = box_mask(info, step, world, opts.box_tolerance) & valid
        else:
            continue
        flat = np.flatnonzero(mask)
        if len(flat) < opts.min_pixels:
            continue
        mask2d = mask.reshape(h, w)
        kept = subsample(flat, opts.max_points)  # evenly strided pixel indices
        batch = points and canonical is None and len(kept) >= 2  # one row would take numpy's vector path
        if not points:
            cloud = np.zeros((0, 3), np.float32)
        else:
            cloud = _EMPTY if batch else canonical_at(kept).astype(np.float32)
        obj = ObjectGeometry(name=name, mask=mask2d, points=cloud, box=flat_box(flat, w), category=info.category)
        if batch:
            batched.append((obj, kept))
        vars(obj)["pixels"] = len(flat)  # the cached `pixels`: the mask's count, known here
        objects[name] = obj
    maskable = [o for o in episode.objects.values() if o.size is not None or o.segmentation_id is not None]
    if not objects and (not maskable or (seg_frame is None and all(o.size is None for o in maskable))):
        return "no_masks"
    support = None
    support_height = None
    band: MedianBand | None = None
    sample = _EMPTY_INDEX
    if not points:
        pass
    elif seg_frame is not None and support_id is not None:
        support_flat = (seg_frame == support_id).ravel() & valid
        support_pixels = np.flatnonzero(support_flat)
        if len(support_pixels):
            support = support_flat.reshape(h, w)
            sample = subsample(support_pixels, SUPPORT_SAMPLE)
            approx = approximate_heights(model, w2c, depth, sample) if canonical is None else None
            band = median_band(*approx) if approx is not None else None
            if band is None:
                support_height = median(canonical_at(sample)[:, 2])
    if batched or band is not None:
        # every batched cloud and the support's band in one back-projection: BLAS gives each row the same
        # floats whatever the product's size (tests/test_geometry_exact.py), the rest is elementwise
        parts = [kept for _, kept in batched] + ([sample[band.positions]] if band is not None else [])
        rows = apply(w2c, model.unproject_flat(depth, np.concatenate(parts) if len(parts) > 1 else parts[0]))
        start = 0
        for obj, kept in batched:
            obj.points = rows[start : start + len(kept)].astype(np.float32)
            start += len(kept)
        if band is not None:
            support_height = band.median(rows[start:, 2])
            if support_height is None:  # a NaN or a zero: np.median over every exact height decides
                support_height = median(canonical_at(sample)[:, 2])
    if support is None and points:
        if canonical is None:
            canonical = apply(w2c, model.unproject(depth))
        taken = np.zeros(h * w, dtype=bool)
        for obj in objects.values():
            taken |= obj.mask.ravel()
        support_height = support_layer(canonical[valid & ~taken, 2], opts.support_tolerance)
        if support_height is not None:
            support = ((np.abs(canonical[:, 2] - support_height) <= opts.support_tolerance) & valid & ~taken).reshape(
                h, w
            )
    return FrameGeometry(
        episode_id=episode.episode_id,
        step=step,
        camera_name=camera,
        image=image,
        camera=canonical_camera(model, w2c),
        objects=objects,
        world_to_canonical=w2c,
        support=support,
        support_height=support_height,
        origin="ground_truth",
    )
