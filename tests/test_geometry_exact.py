"""The fast paths of the geometry that corpus builders take give bit for bit what the plain computations give:
pixel counts without a geometry, the support-only geometry, boxes from pixel lists, the cached world->canonical
transform and camera inverse, depth converted where read, back-projection of flat pixel indices, the shared
canonical camera, the robust bounds (np.percentile's formula), the column means, the median, the strided subsample,
vica's support area, the support height from its median band and back-projections batched per frame (so the
corpora's bytes did not change when they got faster)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

from datasets_build.camera import CameraModel, transform_rows
from datasets_build.corpora.vica import support_area
from datasets_build.geometry.ground_truth import (
    GroundTruthOptions,
    ground_truth_geometry,
    ground_truth_pixel_counts,
    ground_truth_support,
)
from datasets_build.geometry.scene import (
    ObjectGeometry,
    _world_to_canonical,
    apply,
    canonical_camera,
    canonical_from_world,
    flat_box,
    mask_box,
    mean_rows,
    median,
    robust_bounds,
    subsample,
)
from datasets_build.geometry.support_height import approximate_heights, median_band
from tests.helpers import synthetic_episode


def _reference_support_area(mask: np.ndarray, camera: CameraModel, height: float) -> float:
    """The support area as first written: every corner over the full grid of the mask's rows."""
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return 0.0
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    w = mask.shape[1]
    v, u = np.mgrid[r0 : r1 + 1, 0 : w + 1].astype(np.float64)
    k = camera.intrinsics
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
    rotation, translation = camera.extrinsics[:3, :3], camera.extrinsics[:3, 3]
    rays = rays @ rotation
    centre = -rotation.T @ translation
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (height - centre[2]) / rays[..., 2]
    hit = np.isfinite(t) & (t > 0)
    pts = centre[:2] + np.where(hit, t, 0.0)[..., None] * rays[..., :2]
    d1, d2 = pts[1:, 1:] - pts[:-1, :-1], pts[1:, :-1] - pts[:-1, 1:]
    quad = 0.5 * np.abs(d1[..., 0] * d2[..., 1] - d1[..., 1] * d2[..., 0])
    ok = hit[:-1, :-1] & hit[:-1, 1:] & hit[1:, :-1] & hit[1:, 1:] & mask[r0:r1]
    return float(quad[ok].sum())


def test_support_area_is_bit_identical_to_the_full_grid_formula() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(2, 90, 2))
        eye = rng.normal(size=3) + np.array([0.0, 0.0, rng.uniform(-1, 3)])
        camera = CameraModel.from_look_at(eye, rng.normal(size=3) * 0.3, [0, 0, 1], rng.uniform(15, 110), w, h)
        mask = rng.random((h, w)) < rng.uniform(0.001, 1.0)
        height = float(rng.uniform(-2, 3))
        assert support_area(mask, camera, height) == _reference_support_area(mask, camera, height)


def test_boxes_from_pixel_lists_match_mask_boxes() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.uniform(0.01, 0.5)
        if mask.any():
            assert flat_box(np.flatnonzero(mask), mask.shape[1]) == mask_box(mask)


def test_world_to_canonical_cache_and_camera_inverse_are_exact() -> None:
    camera = CameraModel.from_look_at([1.2, -0.4, 0.9], [0.1, 0.0, 0.0], [0, 0, 1], 55, 64, 48)
    plain = _world_to_canonical(np.array(camera.extrinsics), (0.0, 0.0, 1.0))
    assert np.array_equal(canonical_from_world(camera), plain)
    assert canonical_from_world(camera) is canonical_from_world(camera)  # computed once
    assert not canonical_from_world(camera).flags.writeable
    strided = np.asfortranarray(camera.extrinsics)
    assert np.array_equal(canonical_from_world(replace(camera, extrinsics=strided)), plain)
    assert np.array_equal(camera.camera_to_world, np.linalg.inv(camera.extrinsics))
    depth = np.random.default_rng(2).uniform(0.3, 2.0, (48, 64)).astype(np.float32)
    pixels = np.array([[0.5, 0.5], [10.5, 20.5], [63.5, 47.5]])
    assert np.array_equal(camera.unproject(depth, pixels), camera.unproject(depth.astype(np.float64), pixels))


def test_pixel_counts_and_support_geometry_match_the_full_geometry(demo_episodes) -> None:
    for episode in demo_episodes[:3]:
        for camera in ("static", "wrist"):
            for step in range(0, len(episode), 3):
                full = ground_truth_geometry(episode, camera, step, points=False)
                counts = ground_truth_pixel_counts(episode, camera, step)
                if isinstance(full, str):
                    assert counts == full
                    continue
                assert counts == {n: int(o.mask.sum()) for n, o in full.objects.items()}
        for step in range(0, len(episode), 4):
            full = ground_truth_geometry(episode, "static", step)
            support = ground_truth_support(episode, "static", step)
            assert not isinstance(full, str)
            assert not isinstance(support, str)
            assert support.support_height == full.support_height
            assert np.array_equal(support.support, full.support)
            assert np.array_equal(support.camera.extrinsics, full.camera.extrinsics)


@pytest.mark.parametrize("segmented", [True, False])
def test_support_geometry_falls_back_when_objects_change_the_support(segmented: bool) -> None:
    episode = synthetic_episode(length=3, size=32)
    if not segmented:  # a box-masked object: the full path back-projects every pixel, so it is taken as is
        block = replace(episode.objects["red block"], segmentation_id=None)
        episode = replace(episode, objects={"red block": block})
    episode.meta["support_segmentation_id"] = 0
    full = ground_truth_geometry(episode, "static", 1)
    support = ground_truth_support(episode, "static", 1)
    assert not isinstance(full, str)
    assert not isinstance(support, str)
    assert support.support_height == full.support_height
    assert np.array_equal(support.support, full.support)
    if segmented:
        assert set(full.objects) == {"red block"}
        assert support.objects == {}  # the objects' point clouds were skipped
    else:
        assert set(support.objects) == set(full.objects)  # the full geometry, taken as is


def _random_camera(rng: np.random.Generator, w: int, h: int) -> CameraModel:
    eye = rng.normal(size=3) + np.array([0.0, 0.0, rng.uniform(0.5, 3)])
    return CameraModel.from_look_at(eye, rng.normal(size=3) * 0.3, [0, 0, 1], rng.uniform(15, 110), w, h)


def test_unproject_flat_is_unproject_at_pixel_centres() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 120, 2))
        camera = _random_camera(rng, w, h)
        depth = rng.uniform(0.05, 4.0, (h, w)).astype(np.float32 if rng.integers(2) else np.float64)
        flat = np.sort(rng.choice(h * w, size=int(rng.integers(1, h * w + 1)), replace=False))
        rows, cols = np.divmod(flat, w)
        plain = camera.unproject(depth, np.stack([cols + 0.5, rows + 0.5], axis=1))
        assert np.array_equal(camera.unproject_flat(depth, flat), plain)


def test_canonical_camera_is_the_plain_product_and_shared() -> None:
    rng = np.random.default_rng(4)
    for _ in range(50):
        camera = _random_camera(rng, 64, 48)
        w2c = canonical_from_world(camera)
        plain = CameraModel(camera.intrinsics, camera.extrinsics @ np.linalg.inv(w2c), 64, 48)
        shared = canonical_camera(camera, w2c)
        assert np.array_equal(shared.extrinsics, plain.extrinsics)
        assert np.array_equal(shared.intrinsics, plain.intrinsics)
        assert shared is canonical_camera(camera, w2c)
        assert not shared.extrinsics.flags.writeable


def test_robust_bounds_are_numpys_percentiles() -> None:
    rng = np.random.default_rng(5)
    for i in range(3000):
        n = int(rng.integers(1, 60)) if i % 3 == 0 else int(rng.integers(1, 3000))
        points = rng.normal(size=(n, 3)) * rng.uniform(1e-3, 10)
        if i % 5 == 0:
            points = np.round(points, 1)  # ties
        if i % 11 == 0 and n:
            points[int(rng.integers(n)), int(rng.integers(3))] = np.nan
        points = points.astype(np.float32 if i % 4 else np.float64)
        with np.errstate(invalid="ignore"):
            expected = np.percentile(points, [2, 98], axis=0)
            got = robust_bounds(points)
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected, equal_nan=True)


def test_object_clouds_and_bounds_match_the_plain_computation(demo_episodes) -> None:
    for episode in demo_episodes[:3]:
        model = episode.camera["static"]
        w2c = canonical_from_world(model)
        for step in range(0, len(episode), 2):
            geometry = ground_truth_geometry(episode, "static", step)
            assert not isinstance(geometry, str)
            depth = np.asarray(episode.depth["static"][step])
            for obj in geometry.objects.values():
                flat = np.flatnonzero(obj.mask)
                if len(flat) > 2048:
                    flat = flat[np.linspace(0, len(flat) - 1, 2048).astype(int)]
                rows, cols = np.divmod(flat, depth.shape[1])
                world = model.unproject(depth, np.stack([cols + 0.5, rows + 0.5], axis=1))
                plain = (world @ w2c[:3, :3].T + w2c[:3, 3]).astype(np.float32)
                assert np.array_equal(obj.points, plain)
                assert np.array_equal(np.stack([obj.lower, obj.upper]), np.percentile(plain, [2, 98], axis=0))
                assert obj.pixels == int(np.count_nonzero(obj.mask))


def test_rigid_transforms_of_rows_are_the_plain_expression() -> None:
    rng = np.random.default_rng(6)
    for i in range(1000):
        transform = np.eye(4)
        transform[:3] = rng.normal(size=(3, 4)) * rng.uniform(0.1, 10)
        n = int(rng.integers(0, 40)) if i % 2 else int(rng.integers(40, 10000))
        points = rng.normal(size=(n, 3)) * rng.uniform(1e-3, 100)
        plain = points @ transform[:3, :3].T + transform[:3, 3]
        assert np.array_equal(transform_rows(points, transform), plain)
        assert np.array_equal(transform_rows(np.asfortranarray(points), transform), plain)
        single = points.astype(np.float32)
        plain_single = single.astype(np.float64) @ transform[:3, :3].T + transform[:3, 3]
        assert np.array_equal(apply(transform, single), plain_single)


def test_strided_subsample_is_the_plain_linspace() -> None:
    rng = np.random.default_rng(7)
    for _ in range(300):
        n, limit = (int(v) for v in rng.integers(1, 20000, 2))
        points = np.arange(n)
        expected = points if n <= limit else points[np.linspace(0, n - 1, limit).astype(int)]
        assert np.array_equal(subsample(points, limit), expected)
        assert np.array_equal(subsample(points, limit), expected)  # cached indices, same answer


def test_median_is_numpys_median() -> None:
    rng = np.random.default_rng(8)
    for i in range(600):
        n = int(rng.integers(1, 40)) if i % 3 == 0 else int(rng.integers(1, 10000))
        values = rng.normal(size=n) * rng.uniform(1e-3, 10)
        if i % 4 == 0:
            values = np.round(values, 1)  # ties, and zeros of both signs
        if i % 7 == 0:
            values[rng.integers(n, size=int(rng.integers(1, 3)))] = -0.0
        if i % 11 == 0:
            values[int(rng.integers(n))] = np.nan
        subject = values[::2] if i % 5 == 0 else values  # strided views too
        with np.errstate(invalid="ignore"):
            expected = float(np.median(subject))
        assert repr(median(subject)) == repr(expected)  # the sign of a zero and NaN included


def test_column_means_are_numpys_means() -> None:
    rng = np.random.default_rng(9)
    for i in range(1000):
        n = int(rng.integers(1, 5000))
        points = (rng.normal(size=(n, 3)) * rng.uniform(1e-3, 10)).astype(np.float32 if i % 2 else np.float64)
        got, expected = mean_rows(points), points.mean(axis=0)
        assert got.dtype == expected.dtype
        assert np.array_equal(got, expected)


def test_transformed_rows_do_not_depend_on_the_product_size() -> None:
    """What batching back-projections relies on: BLAS gives a row the same floats in a product of any size."""
    rng = np.random.default_rng(10)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(2, 120, 2))
        camera = _random_camera(rng, w, h)
        w2c = canonical_from_world(camera)
        depth = rng.uniform(0.05, 4.0, (h, w)).astype(np.float32)
        flat = np.sort(rng.choice(h * w, size=int(rng.integers(2, h * w + 1)), replace=False))
        whole = apply(w2c, camera.unproject_flat(depth, flat))
        for _ in range(4):
            start = int(rng.integers(0, len(flat) - 1))
            stop = int(rng.integers(start + 2, len(flat) + 1))
            assert np.array_equal(apply(w2c, camera.unproject_flat(depth, flat[start:stop])), whole[start:stop])
            picked = np.sort(rng.choice(len(flat), size=int(rng.integers(2, len(flat) + 1)), replace=False))
            assert np.array_equal(apply(w2c, camera.unproject_flat(depth, flat[picked])), whole[picked])


def _plain_support_height(camera: CameraModel, depth: np.ndarray, flat: np.ndarray) -> float:
    """The support height as first written: the median canonical z of the sampled pixels, all back-projected."""
    rows, cols = np.divmod(flat, depth.shape[1])
    world = camera.unproject(depth, np.stack([cols + 0.5, rows + 0.5], axis=1))
    w2c = canonical_from_world(camera)
    return float(np.median((world @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]))


def _band_support_height(camera: CameraModel, depth: np.ndarray, flat: np.ndarray) -> float | None:
    w2c = canonical_from_world(camera)
    approx = approximate_heights(camera, w2c, depth, flat)
    assert approx is not None
    band = median_band(*approx)
    if band is None:
        return None
    return band.median(apply(w2c, camera.unproject_flat(depth, flat[band.positions]))[:, 2])


def test_support_height_from_the_median_band_is_the_median_of_every_exact_height() -> None:
    rng = np.random.default_rng(11)
    for i in range(400):
        h, w = (int(v) for v in rng.integers(2, 100, 2))
        camera = _random_camera(rng, w, h)
        if i % 3 == 0:  # a flat table seen from the camera: heights within rounding of each other, many near-ties
            v, u = np.mgrid[0:h, 0:w] + 0.5
            k = camera.intrinsics
            rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
            rays_world = rays @ camera.camera_to_world[:3, :3].T
            centre = camera.camera_to_world[:3, 3]
            table = float(rng.uniform(-0.5, 0.5))
            with np.errstate(divide="ignore"):
                depth = np.where(rays_world[..., 2] < -1e-3, (table - centre[2]) / rays_world[..., 2], 1.0)
            depth = np.clip(depth, 0.05, 50).astype(np.float32)
        elif i % 3 == 1:
            depth = np.round(rng.uniform(0.3, 3.0, (h, w)), int(rng.integers(0, 3))).astype(np.float32)  # exact ties
        else:
            depth = rng.uniform(0.05, 6.0, (h, w)).astype(np.float32 if i % 2 else np.float64)
        flat = np.sort(rng.choice(h * w, size=int(rng.integers(1, h * w + 1)), replace=False))
        got = _band_support_height(camera, depth, flat)
        expected = _plain_support_height(camera, depth, flat)
        if got is None:
            assert len(flat) < 2 or expected == 0
        else:
            assert repr(got) == repr(expected)


def test_ground_truth_support_height_is_the_plain_median(demo_episodes) -> None:
    for episode in demo_episodes[:3]:
        model = episode.camera["static"]
        for step in range(len(episode)):
            geometry = ground_truth_geometry(episode, "static", step)
            assert not isinstance(geometry, str)
            assert geometry.support is not None
            depth = np.asarray(episode.depth["static"][step])
            flat = np.flatnonzero(geometry.support)
            if len(flat) > 8192:
                flat = flat[np.linspace(0, len(flat) - 1, 8192).astype(int)]
            assert repr(geometry.support_height) == repr(_plain_support_height(model, depth, flat))


def test_single_pixel_clouds_and_a_one_pixel_support_keep_their_own_paths() -> None:
    episode = synthetic_episode(length=2, size=32)
    seg = episode.segmentation["static"]
    seg[:, 10:20, 10:20] = 0
    seg[:, 3, 4] = 3  # a one-pixel object: one row takes numpy's vector path, not the batch
    seg[:, 5, 6] = 2  # a one-pixel support
    episode.meta["support_segmentation_id"] = 2
    geometry = ground_truth_geometry(episode, "static", 1, GroundTruthOptions(min_pixels=1))
    assert not isinstance(geometry, str)
    model, depth = episode.camera["static"], np.asarray(episode.depth["static"][1])
    w2c = canonical_from_world(model)
    rows = (model.unproject(depth, np.array([[4.5, 3.5]])) @ w2c[:3, :3].T + w2c[:3, 3]).astype(np.float32)
    assert np.array_equal(geometry.objects["red block"].points, rows)
    assert repr(geometry.support_height) == repr(_plain_support_height(model, depth, np.array([5 * 32 + 6])))


def test_object_facts_are_the_plain_facts() -> None:
    rng = np.random.default_rng(12)
    for i in range(500):
        n = int(rng.integers(0 if i % 50 == 0 else 1, 3000))
        cloud = (rng.normal(size=(n, 3)) * rng.uniform(1e-3, 3)).astype(np.float32)
        if i % 7 == 0 and n:
            cloud[int(rng.integers(n)), int(rng.integers(3))] = np.nan
        obj = ObjectGeometry("block", np.ones((2, 2), bool), cloud, (0, 0, 2, 2))
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if n == 0:  # np.percentile refuses an empty cloud: so do the facts
                with pytest.raises(IndexError):
                    obj.facts()
                continue
            facts = obj.facts()
            bounds = np.percentile(cloud, [2, 98], axis=0)
            centroid = cloud.mean(axis=0)
        assert repr(facts["centroid"]) == repr([round(v, 5) for v in centroid.tolist()])
        assert repr(facts["lower"]) == repr([round(v, 5) for v in bounds[0].tolist()])
        assert repr(facts["upper"]) == repr([round(v, 5) for v in bounds[1].tolist()])
        assert np.array_equal(np.stack([obj.lower, obj.upper]), bounds, equal_nan=True)
        assert obj.lower.dtype == bounds.dtype
