"""Frame geometry: ground truth against the demo sim's true poses and CALVIN's rendered blocks, the estimated
path end to end with tiny random models, its RANSAC plane fit and back-projection, and instruction parsing."""

import itertools
from pathlib import Path

import numpy as np
import pytest

from datasets_build.camera import CameraModel
from datasets_build.errors import ConfigError
from datasets_build.geometry import FrameGeometry, GeometryConfig, GeometryProvider, ee_positions, has_ground_truth
from datasets_build.geometry.estimated import (
    EstimatedOptions,
    GeometryEstimator,
    PlaneFit,
    backproject,
    facing_origin,
    fit_plane,
    intrinsics_for,
    pinhole_intrinsics,
)
from datasets_build.geometry.ground_truth import ground_truth_geometry, rotation_from_quaternion
from datasets_build.geometry.language import object_phrases
from datasets_build.geometry.scene import apply, canonical_from_camera, subsample
from datasets_build.sim.scene import BACKGROUND_ID, ROBOT_ID, TABLE_ID, TABLE_TOP_Z
from datasets_build.sources import open_source
from tests.calvin_fixtures import BLOCK_COLOURS, write_calvin
from tests.geometry_models import DEPTH_ID, DETECTOR_ID, SEGMENTER_ID, install_tiny_geometry_models

# ---- instructions -> object phrases ----------------------------------------------------------------

PHRASES = [
    ("put the red spoon on the blue towel", ["red spoon", "blue towel"]),  # Bridge
    ("pick up the carrot and place it in the pot", ["carrot", "pot"]),
    ("open the drawer", ["drawer"]),  # CALVIN
    ("stack the green block on top of the yellow block", ["green block", "yellow block"]),
    ("push the red block to the left", ["red block"]),
    ("turn on the led light", ["led light"]),
    ("lift the pink block from the table", ["pink block", "table"]),
    ("go push the pink block left", ["pink block"]),
    ("rotate the blue block right", ["blue block"]),
    ("put corn in pot which is in sink", ["corn", "pot", "sink"]),  # Bridge
    ("take the silver pot and put it on the left burner", ["silver pot", "left burner"]),
    ("unfold the cloth from top left to bottom right", ["cloth"]),
    ("flip the cup upright", ["cup"]),
    ("put both the alphabet soup and the tomato sauce in the basket", ["alphabet soup", "tomato sauce", "basket"]),
    ("open the middle drawer of the cabinet", ["middle drawer", "cabinet"]),  # LIBERO
    ("put the black bowl in the bottom drawer of the cabinet and close it", ["black bowl", "bottom drawer", "cabinet"]),
    ("pick up the book and place it in the back compartment of the caddy", ["book", "back compartment", "caddy"]),
    ("turn on the stove and put the moka pot on it", ["stove", "moka pot"]),
    ("move blue chip bag near pepsi can", ["blue chip bag", "pepsi can"]),  # Fractal
    ("place coke can upright", ["coke can"]),
    ("Put the yellow knife to the left of the stove.", ["yellow knife", "stove"]),
    ("move the light switch", ["light switch"]),
]


@pytest.mark.parametrize(("instruction", "expected"), PHRASES)
def test_object_phrases(instruction, expected):
    assert object_phrases(instruction) == expected


def test_object_phrases_deduplicated_in_order():
    assert object_phrases("put the red block on the blue block, then the red block on the plate") == [
        "red block",
        "blue block",
        "plate",
    ]
    assert object_phrases("") == []
    assert object_phrases("go left") == []


# ---- ground truth on the demo sim -------------------------------------------------------------


def box_corners(info, step):
    """The 8 world corners of an object's oriented box at `step`."""
    orientation = None if info.orientations is None else info.orientations[min(step, len(info.orientations) - 1)]
    rotation = np.eye(3) if orientation is None else rotation_from_quaternion(orientation)
    local = np.array(list(itertools.product(*[(-h, h) for h in info.size / 2])))
    return local @ rotation.T + info.position_at(step)


def unoccluded(ep, camera, step, name):
    """Whether the object's whole projected box lies in the image with only table/background/itself inside."""
    info = ep.objects[name]
    model = ep.camera_at(camera, step)
    uv, z = model.project(box_corners(info, step))
    if np.any(z <= 0):
        return False
    u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
    u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 1
    if u0 < 0 or v0 < 0 or u1 > model.width or v1 > model.height:
        return False
    window = ep.segmentation[camera][step][v0:v1, u0:u1]
    return bool(np.isin(window, [BACKGROUND_ID, TABLE_ID, info.segmentation_id]).all())


@pytest.fixture(scope="module")
def gt_frames(demo_episodes):
    """Ground-truth geometry of every step of both cameras of the demo episodes."""
    frames = []
    for ep in demo_episodes:
        for camera in ep.cameras:
            for step in range(len(ep)):
                geo = ground_truth_geometry(ep, camera, step)
                assert isinstance(geo, FrameGeometry), geo
                frames.append((ep, camera, step, geo))
    return frames


def test_ground_truth_centroids_near_true_positions(gt_frames):
    # Measured on the 6 demo episodes: unoccluded objects fully in view are within 1.5 cm (static
    # blocks), 2.0 cm (wrist blocks), 2.7 cm (static containers, whose pose is their base) of the truth:
    # the cloud is the visible surface, not the volume. Cut or occluded objects are only bounded by
    # their own box: a block's visible-surface centroid lies inside the block.
    checked = 0
    for ep, camera, step, geo in gt_frames:
        for name, obj in geo.objects.items():
            info = ep.objects[name]
            true = geo.to_canonical(info.position_at(step)[None])[0]
            error = float(np.linalg.norm(obj.centroid - true))
            if info.category == "block":
                local = (obj.centroid - true) @ (
                    geo.world_to_canonical[:3, :3]
                    @ rotation_from_quaternion(info.orientations[min(step, len(info.orientations) - 1)])
                )
                assert np.all(np.abs(local) <= info.size / 2 + 0.005), (ep.episode_id, camera, step, name, local)
            if unoccluded(ep, camera, step, name):
                assert error < 0.03, (ep.episode_id, camera, step, name, error)
                checked += 1
    assert checked > 300


def test_true_position_projects_into_mask(gt_frames):
    checked = 0
    for ep, camera, step, geo in gt_frames:
        for name, obj in geo.objects.items():
            if not unoccluded(ep, camera, step, name):
                continue
            uv, depth = geo.project(geo.to_canonical(ep.objects[name].position_at(step)[None]))
            rows, cols = np.nonzero(obj.mask)
            distance = np.min(np.hypot(cols + 0.5 - uv[0, 0], rows + 0.5 - uv[0, 1]))
            assert depth[0] > 0
            assert distance <= 2.0, (ep.episode_id, camera, step, name, distance)
            checked += 1
    assert checked > 300


def test_support_plane_is_the_table_below_objects(gt_frames):
    for ep, camera, step, geo in gt_frames:
        assert geo.support is not None
        assert geo.support.shape == (geo.height, geo.width)
        table_z = geo.to_canonical(np.array([[0.5, 0.0, TABLE_TOP_Z]]))[0, 2]
        assert abs(geo.support_height - table_z) < 0.01, (ep.episode_id, camera, step)
        for obj in geo.objects.values():
            assert obj.centroid[2] > geo.support_height
            assert not (obj.mask & geo.support).any()


def test_canonical_axes_are_viewer_and_gravity_aligned(gt_frames):
    for _, camera, _, geo in gt_frames:
        up = geo.world_to_canonical[:3, :3] @ np.array([0.0, 0.0, 1.0])
        np.testing.assert_allclose(up, [0, 0, 1], atol=1e-6)  # wrist extrinsics are float32
        canon_from_cam = geo.camera.extrinsics[:3, :3].T  # columns: camera axes in canonical coordinates
        right, image_up, forward = canon_from_cam[:, 0], -canon_from_cam[:, 1], canon_from_cam[:, 2]
        assert right[0] > 0
        assert abs(right[1]) < 1e-6  # x is the camera's right made horizontal
        assert image_up[1] > 0  # up the image is +y on the table
        if camera == "static":  # no roll, pitched above the nadir: +y is the horizontal viewing direction
            assert forward[1] > 0
            assert abs(forward[0]) < 1e-6
    # object pairs on the table in the static view: further right in the image (at a similar distance)
    # means larger x; farther from the camera means larger y
    pairs = 0
    for ep, camera, step, geo in gt_frames:
        if camera != "static":
            continue
        resting = [n for n in geo.objects if ep.objects[n].category == "block" and unoccluded(ep, camera, step, n)]
        for a, b in itertools.combinations(resting, 2):
            pa, pb = (ep.objects[n].position_at(step) for n in (a, b))
            if abs(pa[2] - pb[2]) > 0.005:
                continue  # one is lifted or stacked
            (ua, ub), (za, zb) = geo.project(geo.to_canonical(np.stack([pa, pb])))
            ca, cb = geo.objects[a].centroid, geo.objects[b].centroid
            if abs(za - zb) < 0.03 and abs(ua[0] - ub[0]) > 8:
                assert np.sign(ub[0] - ua[0]) == np.sign(cb[0] - ca[0])
                pairs += 1
            if abs(za - zb) > 0.03:
                assert np.sign(zb - za) == np.sign(cb[1] - ca[1])
                pairs += 1
    assert pairs > 50


def test_ee_positions_project_onto_the_gripper(demo_episodes):
    # The TCP lies between the fingertips: its pixel is within half the opening (+1 cm) of the robot's pixels.
    checked = 0
    for ep in demo_episodes:
        ee = ee_positions(ep)
        assert ee is not None
        assert ee.shape == (len(ep), 3)
        for step in range(len(ep)):
            geo = ground_truth_geometry(ep, "static", step)
            uv, depth = geo.project(geo.to_canonical(ee[step][None]))
            rows, cols = np.nonzero(ep.segmentation["static"][step] == ROBOT_ID)
            distance = np.min(np.hypot(cols + 0.5 - uv[0, 0], rows + 0.5 - uv[0, 1]))
            half_opening_px = geo.camera.intrinsics[0, 0] * (ep.state[step, 6] / 2 + 0.01) / depth[0]
            assert distance <= max(half_opening_px, 2.0), (ep.episode_id, step, distance, half_opening_px)
            checked += 1
    assert checked == sum(len(ep) for ep in demo_episodes)


# ---- ground truth on CALVIN (masks from block boxes) ------------------------------------------------


def test_calvin_box_masks_cover_rendered_blocks(tmp_path):
    # The fixture's config renders table scene A: block sizes exist for scene-A frames only.
    fixture = write_calvin(tmp_path / "task_ABC_D")
    checked = 0
    for ep in open_source("calvin", fixture.root).episodes():
        sized = all(o.size is not None for o in ep.objects.values())
        assert sized == (ep.meta.get("scene") == "A"), ep.episode_id
        assert has_ground_truth(ep, "static") == sized
        for step in range(len(ep)):
            geo = ground_truth_geometry(ep, "static", step)
            if not sized:
                assert geo == "no_masks"
                continue
            image = ep.frames["static"][step]
            for name, colour in BLOCK_COLOURS.items():
                disc = np.all(image == np.array(colour, dtype=np.uint8), axis=-1)
                if not disc.any():
                    continue
                obj = geo.objects[name]
                # discs are drawn at the block centre's depth: every disc pixel back-projects into the box
                assert np.array_equal(obj.mask, disc), (ep.episode_id, step, name)
                checked += 1
    assert checked >= 30


# ---- the estimated path with tiny random models ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models():
    """The tiny OWLv2 / SAM / Depth Anything installed under their real ids in the test HF cache."""
    return install_tiny_geometry_models()


def estimated_config(tiny_models, **overrides):
    return GeometryConfig(mode="estimated", estimated=EstimatedOptions(**tiny_models, **overrides))


def synthetic_image(height=96, width=128):
    """A grey table under a darker wall with a red and a blue rectangle."""
    image = np.full((height, width, 3), 150, dtype=np.uint8)
    image[: height // 3] = 60
    image[50:70, 20:45] = [200, 30, 30]
    image[55:80, 80:110] = [30, 40, 200]
    return image


def check_frame(geo, image, options):
    """Invariants of an estimated FrameGeometry."""
    h, w = image.shape[:2]
    assert isinstance(geo, FrameGeometry), geo
    assert geo.origin == "estimated"
    assert geo.world_to_canonical is None
    assert geo.image is image or np.array_equal(geo.image, image)
    assert (geo.camera.width, geo.camera.height) == (w, h)
    assert geo.objects
    for name, obj in geo.objects.items():
        assert obj.name == name
        assert obj.mask.shape == (h, w)
        assert obj.mask.dtype == bool
        assert obj.mask.sum() >= options.min_pixels
        assert obj.points.dtype == np.float32
        assert obj.points.shape[1:] == (3,)
        assert 0 < len(obj.points) <= options.max_points
        assert np.isfinite(obj.points).all()
        x0, y0, x1, y1 = obj.box
        assert 0 <= x0 < x1 <= w
        assert 0 <= y0 < y1 <= h
        assert options.detection_threshold < obj.score <= 1.0
        # back-projection round trip: every point projects into its own mask
        uv, depth = geo.project(obj.points)
        assert (depth > 0).all()
        cols, rows = np.floor(uv[:, 0] + 1e-3).astype(int), np.floor(uv[:, 1] + 1e-3).astype(int)
        assert obj.mask[rows, cols].all()
    assert geo.support is not None
    assert geo.support.shape == (h, w)
    assert geo.support.any()
    assert geo.support_height is not None
    assert np.isfinite(geo.support_height)
    assert geo.support_height < 0  # the plane is below the camera centre (normal turned toward it)
    for obj in geo.objects.values():
        assert not (obj.mask & geo.support).any()
    with pytest.raises(ValueError):
        geo.to_canonical(np.zeros((1, 3)))


def same_frames(a, b):
    assert a.facts() == b.facts()
    assert a.objects.keys() == b.objects.keys()
    for name in a.objects:
        assert np.array_equal(a.objects[name].mask, b.objects[name].mask)
        assert np.array_equal(a.objects[name].points, b.objects[name].points)
    assert np.array_equal(a.support, b.support)
    np.testing.assert_array_equal(a.camera.extrinsics, b.camera.extrinsics)


def test_tiny_models_resolve_by_hub_id(tiny_models):
    assert tiny_models == {"detector": DETECTOR_ID, "segmenter": SEGMENTER_ID, "depth": DEPTH_ID}
    models = GeometryEstimator(EstimatedOptions(**tiny_models)).models
    assert models.detector_type == "owlv2"
    assert models.segmenter.config.model_type == "sam"
    assert models.depth.config.depth_estimation_type == "metric"
    size = sum(p.numel() for m in (models.detector, models.segmenter, models.depth) for p in m.parameters())
    assert size < 1_000_000
    with pytest.raises(ConfigError, match="detector"):
        _ = GeometryEstimator(EstimatedOptions(**{**tiny_models, "detector": SEGMENTER_ID})).models


def test_estimated_on_demo_episodes(tiny_models, demo_episodes):
    config = estimated_config(tiny_models)
    provider = GeometryProvider(config)
    found = []
    for ep in demo_episodes[:3]:
        geo = provider.frame(ep, "static", 0)
        if isinstance(geo, str):
            assert geo in {"no_detections", "no_masks", "no_support_plane"}
            continue
        check_frame(geo, ep.frames["static"][0], config.estimated)
        assert set(geo.objects) <= set(object_phrases(ep.instruction))
        # the source's calibrated intrinsics are used, not the fov fallback
        np.testing.assert_allclose(geo.camera.intrinsics, ep.camera["static"].intrinsics)
        found.append((ep, geo))
    assert found, "no demo episode gave estimated geometry"
    # a second provider (models loaded again) gives the very same geometry
    again = GeometryProvider(estimated_config(tiny_models))
    for ep, geo in found[:1]:
        same_frames(geo, again.frame(ep, "static", 0))


def test_estimated_on_synthetic_image(tiny_models):
    options = EstimatedOptions(**tiny_models)
    estimator = GeometryEstimator(options)
    image = synthetic_image()
    geo = estimator.estimate(image, ["red block", "blue cup"], episode_id="synthetic", camera_name="cam")
    check_frame(geo, image, options)
    assert (geo.episode_id, geo.camera_name) == ("synthetic", "cam")
    np.testing.assert_allclose(geo.camera.intrinsics, pinhole_intrinsics(128, 96, options.fov_deg))
    assert set(estimator.timings) == {"detection", "masks", "depth", "points"}
    # every cloud point and every support pixel is the depth map back-projected through geo.camera
    canonical = geo.camera.unproject(estimator.metric_depth(image))
    for obj in geo.objects.values():
        expected = subsample(canonical[obj.mask.ravel()], options.max_points)
        np.testing.assert_allclose(obj.points, expected, atol=1e-5)
    support_z = canonical[geo.support.ravel(), 2]
    assert np.all(np.abs(support_z - geo.support_height) <= options.plane_tolerance + 1e-6)
    same_frames(geo, estimator.estimate(image, ["red block", "blue cup"], episode_id="synthetic", camera_name="cam"))


def test_estimated_skips(tiny_models, demo_episodes):
    nothing = GeometryProvider(estimated_config(tiny_models, detection_threshold=1.0))
    assert nothing.frame(demo_episodes[0], "static", 0) == "no_detections"
    estimator = GeometryEstimator(EstimatedOptions(**tiny_models))
    assert estimator.estimate(synthetic_image(), ["  ", ""]) == "no_object_names"
    with pytest.raises(ValueError, match="uint8"):
        estimator.estimate(synthetic_image().astype(np.float32), ["cup"])


def test_estimated_options_are_validated():
    with pytest.raises(ConfigError, match="detection_threshold"):
        EstimatedOptions(detection_threshold=1.5)
    with pytest.raises(ConfigError, match="fov_deg"):
        EstimatedOptions(fov_deg=0)
    with pytest.raises(ConfigError):
        EstimatedOptions(plane_tolerance=0)


# ---- plane fit and back-projection ---------------------------------------------------------------


def plane_points(normal, offset, n_in, n_out, noise, seed):
    """Points on n.p + d = 0 with Gaussian noise along n, plus uniform outliers in a 2 m box."""
    rng = np.random.default_rng(seed)
    normal = np.asarray(normal, dtype=np.float64) / np.linalg.norm(normal)
    a = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(normal, a)
    st = rng.uniform(-1, 1, size=(n_in, 2))
    on = -offset * normal + st[:, :1] * a + st[:, 1:] * b + rng.normal(0, noise, size=(n_in, 1)) * normal
    out = rng.uniform(-1, 1, size=(n_out, 3)) + np.array([0.0, 0.0, 1.5])
    return np.concatenate([on, out]), normal


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_plane_recovers_a_known_plane(seed):
    normal_true = np.random.default_rng(100 + seed).normal(size=3)
    points, normal_true = plane_points(normal_true, 0.8, n_in=3000, n_out=2000, noise=0.003, seed=seed)
    fit = fit_plane(points, iterations=200, tolerance=0.01, rng=np.random.default_rng(0))
    assert fit is not None
    angle = np.degrees(np.arccos(min(1.0, abs(float(fit.normal @ normal_true)))))
    assert angle < 2.0
    assert abs(abs(fit.offset) - 0.8) < 0.005
    assert fit.inliers[:3000].mean() > 0.95  # nearly every plane point is an inlier...
    assert fit.inliers[3000:].mean() < 0.05  # ...and few outliers
    again = fit_plane(points, iterations=200, tolerance=0.01, rng=np.random.default_rng(0))
    assert np.array_equal(fit.normal, again.normal)
    assert np.array_equal(fit.inliers, again.inliers)


def test_fit_plane_degenerate_inputs():
    rng = np.random.default_rng(0)
    assert fit_plane(np.zeros((2, 3)), 10, 0.01, rng) is None
    assert fit_plane(np.zeros((50, 3)), 10, 0.01, rng) is None  # all triplets coincide: no plane


def test_facing_origin_turns_normal_toward_the_camera():
    below = PlaneFit(normal=np.array([0.0, 1.0, 0.0]), offset=-0.5, inliers=np.ones(3, dtype=bool))  # y = 0.5
    turned = facing_origin(below)
    np.testing.assert_allclose(turned.normal, [0, -1, 0])  # up, in OpenCV's y-down camera frame
    assert turned.offset == 0.5
    assert facing_origin(turned) is turned
    assert facing_origin(PlaneFit(np.array([0.0, 1.0, 0.0]), 0.0, below.inliers)) is None


def test_backprojection_round_trip():
    rng = np.random.default_rng(0)
    h, w = 30, 40
    depth = rng.uniform(0.3, 3.0, size=(h, w))
    intrinsics = pinhole_intrinsics(w, h, 70.0)
    points = backproject(depth, intrinsics)
    # through a canonical frame, as FrameGeometry.camera does
    cam_to_canon = canonical_from_camera(np.array([0.1, -0.9, -0.3]))
    camera = CameraModel(intrinsics, np.linalg.inv(cam_to_canon), w, h)
    uv, z = camera.project(apply(cam_to_canon, points))
    rows, cols = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(uv[:, 0], cols.ravel() + 0.5, atol=1e-6)
    np.testing.assert_allclose(uv[:, 1], rows.ravel() + 0.5, atol=1e-6)
    np.testing.assert_allclose(z, depth.ravel(), atol=1e-9)


def test_intrinsics_for_rescales_or_assumes_a_pinhole():
    k = pinhole_intrinsics(200, 100, 90.0)
    assert k[0, 0] == pytest.approx(100.0)
    assert k[1, 1] == pytest.approx(100.0)
    assert (k[0, 2], k[1, 2]) == (100.0, 50.0)
    camera = CameraModel(np.array([[300.0, 0, 160], [0, 310.0, 120], [0, 0, 1]]), np.eye(4), 320, 240)
    half = intrinsics_for(camera, 160, 120, 60.0)
    np.testing.assert_allclose(half, [[150, 0, 80], [0, 155, 60], [0, 0, 1]])
    np.testing.assert_allclose(intrinsics_for(None, 200, 100, 90.0), k)


def test_install_is_idempotent(tmp_path: Path):
    first = install_tiny_geometry_models(tmp_path)
    snapshot = next((tmp_path / "hub" / "models--facebook--sam-vit-base" / "snapshots").iterdir())
    stamp = (snapshot / "config.json").stat().st_mtime_ns
    assert install_tiny_geometry_models(tmp_path) == first
    assert (snapshot / "config.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "hub" / "models--facebook--sam-vit-base" / "refs" / "main").read_text() == snapshot.name
