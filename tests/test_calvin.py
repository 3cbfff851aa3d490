import os
import pickle
import shutil

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from datasets_build.episode import LanguageWindow
from datasets_build.errors import ConfigError, DataError
from datasets_build.safe_pickle import load_npy, load_npy_object, safe_loads
from datasets_build.sources import open_source
from datasets_build.sources.calvin import CalvinKey, CalvinSource
from tests.calvin_fixtures import (
    BLOCK_COLOURS,
    DEFAULT_CAMERA,
    DISC_RADIUS,
    FIRST_FRAME,
    block_poses,
    camera_model,
    frame_arrays,
    rel_action,
    robot_obs,
    write_calvin,
)


class Custom:
    """A class a data pickle must not be allowed to instantiate."""


@pytest.fixture(scope="module")
def calvin(tmp_path_factory):
    """A read-only training split shared by the tests that do not damage it."""
    return write_calvin(tmp_path_factory.mktemp("calvin") / "task_ABC_D")


def _damaged(tmp_path, **kw):
    return write_calvin(tmp_path / "task_ABC_D", **kw)


def test_language_keys_are_half_open_windows(calvin):
    src = open_source("calvin", calvin.root)
    assert isinstance(src, CalvinSource)
    keys = src.episode_keys()
    assert [(k.start, k.stop) for k in keys] == [(s, e + 1) for s, e, _, _ in calvin.annotations]
    assert keys[0] == CalvinKey(FIRST_FRAME + 2, FIRST_FRAME + 10, 0, "B")
    assert [k.scene for k in keys] == ["B", "C", "A", "A"]


def test_language_episode_values(calvin):
    src = CalvinSource(calvin.root)
    ep = src.load_episode(src.episode_keys()[0])
    start, end, text, task = calvin.annotations[0]
    assert len(ep) == end - start + 1 == 8
    assert ep.instruction == text == "push the red block to the left"
    assert ep.task == task
    assert ep.language == [LanguageWindow(0, 8, text, task)]
    assert ep.episode_id == f"ann00000_{start:07d}_{end:07d}"
    assert ep.meta["frames"] == [start, end]
    assert ep.meta["scene"] == "B"
    assert ep.fps == 30.0
    # First action: CALVIN's normalised deltas kept, gripper +1 -> 1 (open).
    first = rel_action(start)
    np.testing.assert_allclose(ep.actions[0, :6], first[:6])
    assert first[6] == 1.0
    assert ep.actions[0, 6] == 1.0
    # A closed frame: CALVIN -1 -> 0.
    closed = next(t for t in range(len(ep)) if rel_action(start + t)[6] < 0)
    assert ep.actions[closed, 6] == 0.0
    expected = np.array([1.0 if rel_action(i)[6] > 0 else 0.0 for i in range(start, end + 1)], dtype=np.float32)
    np.testing.assert_array_equal(ep.actions[:, 6], expected)
    np.testing.assert_array_equal(ep.state, np.stack([robot_obs(i) for i in range(start, end + 1)]))
    assert ep.frames["static"].shape == (8, 200, 200, 3)
    assert ep.frames["wrist"].shape == (8, 84, 84, 3)
    assert ep.frames["wrist"][3, 0, 0, 0] == (start + 3) % 256
    assert ep.depth["static"].dtype == np.float32
    assert ep.depth["wrist"][0, 0, 0] == pytest.approx(0.1 + 0.001 * (start % 100))
    assert "wrist" not in ep.camera


def test_projected_blocks_land_on_their_colour(calvin):
    src = CalvinSource(calvin.root, mode="segments")
    assert src.camera_source == "merged_config"
    hits = 0
    for key in src.episode_keys():
        ep = src.load_episode(key)
        assert set(ep.objects) == set(BLOCK_COLOURS)
        for t in range(len(ep)):
            cam = ep.camera_at("static", t)
            for name, obj in ep.objects.items():
                assert obj.category == "block"
                uv, depth = cam.project(obj.position_at(t))
                (u, v), z = uv[0], depth[0]
                assert tuple(ep.frames["static"][t, int(v), int(u)]) == BLOCK_COLOURS[name]
                assert ep.depth["static"][t, int(v), int(u)] == pytest.approx(z, abs=1e-4)
                hits += 1
    assert hits == 3 * len(calvin.frames)


def test_config_camera_is_used_not_the_defaults(calvin):
    src = CalvinSource(calvin.root)
    ep = src.load_episode(src.episode_keys()[0])
    np.testing.assert_allclose(ep.camera["static"].extrinsics, calvin.camera.extrinsics, atol=1e-9)
    np.testing.assert_allclose(ep.camera["static"].intrinsics, calvin.camera.intrinsics, atol=1e-9)
    # The defaults would put the blocks elsewhere (the fixture's config camera differs on purpose).
    default = camera_model(DEFAULT_CAMERA)
    pos = ep.objects["blue block"].position_at(0)
    assert np.linalg.norm(default.project(pos)[0] - ep.camera["static"].project(pos)[0]) > 2 * DISC_RADIUS


def test_default_camera_without_merged_config(tmp_path):
    fx = _damaged(tmp_path, config=False)
    src = CalvinSource(fx.root, mode="segments")
    assert src.camera_source == "defaults"
    ep = src.load_episode(src.episode_keys()[2])
    assert ep.camera["static"].intrinsics[0, 0] == pytest.approx(200 / (2 * np.tan(np.deg2rad(5))))
    for t in range(len(ep)):
        for name, obj in ep.objects.items():
            u, v = ep.camera["static"].project(obj.position_at(t))[0][0]
            assert tuple(ep.frames["static"][t, int(v), int(u)]) == BLOCK_COLOURS[name]
    assert all(obj.size is None for obj in ep.objects.values())
    assert ep.fps == 30.0


def test_object_poses_and_sizes(calvin):
    src = CalvinSource(calvin.root, mode="segments")
    keys = src.episode_keys()
    scene_a = src.load_episode(keys[2])  # the config renders scene A (table file calvin_table_A)
    start = keys[2].start
    red = scene_a.objects["red block"]
    np.testing.assert_allclose(
        red.positions, [block_poses(i)["red block"][:3] for i in range(start, keys[2].stop)], atol=1e-6
    )
    expected = Rotation.from_euler("xyz", block_poses(start)["pink block"][3:]).as_quat()
    np.testing.assert_allclose(scene_a.objects["pink block"].orientations[0], expected, atol=1e-6)
    theta = block_poses(start + 1)["red block"][5]
    np.testing.assert_allclose(red.orientations[1], [0, 0, np.sin(theta / 2), np.cos(theta / 2)], atol=1e-6)
    np.testing.assert_allclose(red.size, [0.056, 0.04, 0.04], atol=1e-6)  # block_red_middle x 0.8
    np.testing.assert_allclose(scene_a.objects["blue block"].size, [0.04, 0.04, 0.04], atol=1e-6)
    np.testing.assert_allclose(scene_a.objects["pink block"].size, [0.08, 0.04, 0.04], atol=1e-6)
    scene_b = src.load_episode(keys[0])  # another scene: its URDF sizes are not in this config
    assert all(obj.size is None for obj in scene_b.objects.values())


def test_quaternion_scene_obs(tmp_path):
    fx = _damaged(tmp_path, quaternions=True)
    ep = CalvinSource(fx.root).load_episode(CalvinSource(fx.root).episode_keys()[0])
    start = fx.annotations[0][0]
    expected = Rotation.from_euler("xyz", block_poses(start)["red block"][3:]).as_quat()
    np.testing.assert_allclose(ep.objects["red block"].orientations[0], expected, atol=1e-6)
    np.testing.assert_allclose(ep.objects["pink block"].positions[0], block_poses(start)["pink block"][:3], atol=1e-6)


def test_segments_carry_their_annotations(calvin):
    src = CalvinSource(calvin.root, mode="segments")
    keys = src.episode_keys()
    assert [(k.start, k.stop - 1) for k in keys] == calvin.segments
    eps = [src.load_episode(k) for k in keys]
    assert [len(e) for e in eps] == [12, 8, 12]
    assert eps[0].instruction == ""
    assert eps[0].language == [LanguageWindow(2, 10, "push the red block to the left", "push_red_left")]
    assert [(w.start, w.end) for w in eps[2].language] == [(0, 11), (4, 8)]
    assert eps[1].episode_id == f"seg00001_{FIRST_FRAME + 12:07d}_{FIRST_FRAME + 19:07d}"


def test_max_segment_length_cuts_segments(calvin):
    src = CalvinSource(calvin.root, mode="segments", max_segment_length=5)
    spans = [(k.start - FIRST_FRAME, k.stop - FIRST_FRAME) for k in src.episode_keys()]
    assert spans == [(0, 5), (5, 10), (10, 12), (12, 17), (17, 20), (20, 25), (25, 30), (30, 32)]
    ep = src.load_episode(src.episode_keys()[1])
    assert ep.language == [LanguageWindow(0, 5, "push the red block to the left", "push_red_left")]


def test_scene_selection(calvin):
    only_a = CalvinSource(calvin.root, scenes=["A"])
    assert [k.index for k in only_a.episode_keys()] == [2, 3]
    bc = CalvinSource(calvin.root, mode="segments", scenes=["calvin_scene_B", "c"])
    assert [k.scene for k in bc.episode_keys()] == ["B", "C"]
    assert CalvinSource(calvin.root).available_scenes() == ["A", "B", "C"]
    with pytest.raises(ConfigError, match="D"):
        CalvinSource(calvin.root, scenes=["D"])


def test_validation_split_is_scene_d(tmp_path):
    fx = _damaged(tmp_path, split="validation", scenes=None)
    src = CalvinSource(fx.root, split="validation", scenes=["D"])
    assert src.split == "validation"
    assert {k.scene for k in src.episode_keys()} == {"D"}
    assert len(src) == len(fx.annotations)
    # The split folder itself works as the path too.
    assert CalvinSource(fx.split_dir).episode_keys() == src.episode_keys()
    with pytest.raises(DataError, match="no CALVIN split"):
        CalvinSource(fx.root, split="training")


def test_training_without_scene_info_cannot_select(tmp_path):
    fx = _damaged(tmp_path, scenes=None)
    assert {k.scene for k in CalvinSource(fx.root).episode_keys()} == {None}
    with pytest.raises(DataError, match="scene_info"):
        CalvinSource(fx.root, scenes=["A"])


def test_partitioning_covers_every_episode_once(calvin):
    src = CalvinSource(calvin.root, mode="segments", max_segment_length=4, cameras=(), load_depth=False)
    everything = [e.episode_id for e in src.episodes()]
    shards = [[e.episode_id for e in src.episodes(num_shards=3, shard_index=i)] for i in range(3)]
    assert sorted(e for shard in shards for e in shard) == sorted(everything)
    assert len(set(everything)) == len(everything) == 8
    assert shards[1] == everything[1::3]


def test_frame_name_pattern_comes_from_the_files(tmp_path):
    fx = _damaged(tmp_path, name_format="frame_{:09d}.npz", start=5)
    src = CalvinSource(fx.root)
    assert src.frame_path(7).name == "frame_000000007.npz"
    assert len(src.load_episode(src.episode_keys()[0])) == 8


def test_options(calvin):
    src = CalvinSource(calvin.root, cameras=("static",), load_depth=False)
    ep = src.load_episode(src.episode_keys()[1])
    assert list(ep.frames) == ["static"]
    assert ep.depth == {}
    assert ep.geometry() == ["camera", "objects"]
    with pytest.raises(ConfigError, match="mode"):
        CalvinSource(calvin.root, mode="frames")
    with pytest.raises(ConfigError, match="tactile"):
        CalvinSource(calvin.root, cameras=("tactile",))


def test_summary_matches_episode(calvin):
    src = CalvinSource(calvin.root, mode="segments")
    for key in src.episode_keys():
        ep, summary = src.load_episode(key), src.summarize_episode(key)
        np.testing.assert_array_equal(summary.actions, ep.actions)
        np.testing.assert_array_equal(summary.state, ep.state)
        assert summary.cameras == {"static": (200, 200, 3), "wrist": (84, 84, 3)}
        assert summary.geometry == ep.geometry()
        assert summary.instructions == [w.instruction for w in ep.language]
    assert list(src.summaries())[2].instructions == ["lift the pink block from the table", "turn on the led light"]


def test_restricted_unpickler_never_runs_a_payload(tmp_path):
    fx = _damaged(tmp_path)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.save(fx.split_dir / "scene_info.npy", np.array(Payload(), dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"scene_info\.npy.*system"):
        CalvinSource(fx.root)
    assert not marker.exists()

    np.save(fx.split_dir / "scene_info.npy", {"calvin_scene_A": Custom()}, allow_pickle=True)
    with pytest.raises(DataError, match="Custom"):
        CalvinSource(fx.root)
    with pytest.raises(DataError, match="getattr"):
        safe_loads(pickle.dumps(getattr), "x.npy")


def test_safe_pickle_reads_old_and_new_numpy_pickles(calvin):
    ann = calvin.split_dir / "lang_annotations" / "auto_lang_ann.npy"
    assert b"numpy.core.multiarray" in ann.read_bytes()  # written the numpy 1.x way
    data = load_npy_object(ann)
    assert data["language"]["ann"][1] == "open the drawer"
    assert data["language"]["emb"].shape == (4, 1, 384)
    assert data["info"]["indx"][0] == (FIRST_FRAME + 2, FIRST_FRAME + 9)
    scene_info = load_npy_object(calvin.split_dir / "scene_info.npy")
    assert scene_info["calvin_scene_C"] == [FIRST_FRAME + 12, FIRST_FRAME + 19]
    assert load_npy(calvin.split_dir / "ep_start_end_ids.npy").tolist() == [list(s) for s in calvin.segments]


def test_truncated_npz(tmp_path):
    fx = _damaged(tmp_path)
    bad = fx.frame_path(FIRST_FRAME + 4)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    src = CalvinSource(fx.root)
    with pytest.raises(DataError, match=bad.name) as info:
        src.load_episode(src.episode_keys()[0])
    assert info.value.field == "npz"
    with pytest.raises(DataError, match=bad.name):
        src.summarize_episode(src.episode_keys()[0])
    # Flipped bytes inside a member: the zip CRC/header checks name the file and the member.
    other = fx.frame_path(FIRST_FRAME + 15)
    data = bytearray(other.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 50] = bytes(b ^ 0xFF for b in data[len(data) // 3 : len(data) // 3 + 50])
    other.write_bytes(bytes(data))
    with pytest.raises(DataError, match=other.name) as info:
        src.load_episode(src.episode_keys()[1])
    assert len(str(info.value)) < 400


def test_missing_key_and_missing_file(tmp_path):
    fx = _damaged(tmp_path)
    arrays = frame_arrays(FIRST_FRAME + 13, fx.camera)
    del arrays["rel_actions"]
    np.savez_compressed(fx.frame_path(FIRST_FRAME + 13), **arrays)
    fx.frame_path(FIRST_FRAME + 21).unlink()
    src = CalvinSource(fx.root)
    with pytest.raises(DataError, match=r"0358013\.npz: rel_actions: missing key"):
        src.load_episode(src.episode_keys()[1])
    with pytest.raises(DataError, match=r"0358021\.npz: npz: frame file missing"):
        src.load_episode(src.episode_keys()[2])


def test_nan_actions(tmp_path):
    fx = _damaged(tmp_path)
    arrays = frame_arrays(FIRST_FRAME + 5, fx.camera)
    arrays["rel_actions"][2] = np.nan
    np.savez_compressed(fx.frame_path(FIRST_FRAME + 5), **arrays)
    src = CalvinSource(fx.root)
    with pytest.raises(DataError, match=r"0358005\.npz: rel_actions: NaN/inf"):
        src.load_episode(src.episode_keys()[0])
    with pytest.raises(DataError, match="NaN"):
        src.summarize_episode(src.episode_keys()[0])


def test_empty_episode(tmp_path):
    fx = _damaged(tmp_path)
    ids = np.load(fx.split_dir / "ep_start_end_ids.npy")
    ids[1] = [ids[1][1], ids[1][0]]  # end before start
    np.save(fx.split_dir / "ep_start_end_ids.npy", ids)
    src = CalvinSource(fx.root, mode="segments")
    with pytest.raises(DataError, match=r"ep_start_end_ids\.npy\[1\].*empty episode"):
        src.load_episode(src.episode_keys()[1])


def test_skip_bad_counts_reasons(tmp_path):
    fx = _damaged(tmp_path)
    arrays = frame_arrays(FIRST_FRAME + 3, fx.camera)
    arrays["rel_actions"][0] = np.inf
    np.savez_compressed(fx.frame_path(FIRST_FRAME + 3), **arrays)
    bad = fx.frame_path(FIRST_FRAME + 14)
    bad.write_bytes(bad.read_bytes()[:100])
    src = CalvinSource(fx.root, skip_bad=True)
    kept = list(src.episodes())
    assert [e.meta["annotation"] for e in kept] == [2, 3]
    assert src.skipped == {"rel_actions": 1, "npz": 1}
    with pytest.raises(DataError):
        list(CalvinSource(fx.root).episodes())


def test_bad_pickled_annotations(tmp_path):
    fx = _damaged(tmp_path)
    ann = fx.split_dir / "lang_annotations" / "auto_lang_ann.npy"
    ann.write_bytes(ann.read_bytes()[:200])
    with pytest.raises(DataError, match=r"auto_lang_ann\.npy"):
        CalvinSource(fx.root)
    # Segments do not need annotations; language windows do.
    ann.unlink()
    segments = CalvinSource(fx.root, mode="segments")
    assert segments.load_episode(segments.episode_keys()[0]).language == []
    with pytest.raises(DataError, match="language annotations"):
        CalvinSource(fx.root)
    shutil.rmtree(fx.split_dir / "lang_annotations")
