"""LIBERO hdf5 reader: fixtures written by code in the original and the OpenVLA `*_no_noops` layouts."""

import json

import h5py
import numpy as np
import pytest

from datasets_build.errors import ConfigError, DataError
from datasets_build.sources import open_source
from datasets_build.sources.libero import (
    LiberoSource,
    instruction_from_filename,
    noop_keep_mask,
    task_name_from_filename,
)

RED = (255, 0, 0)
GOAL_FILE = "open_the_middle_drawer_of_the_cabinet_demo.hdf5"
LONG_FILE = "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it_demo.hdf5"


def _actions(length, seed):
    """Raw LIBERO actions: arm deltas in [-1, 1], gripper -1 (open) for the first half, +1 (close) after."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(length, 7))
    actions[:, 6] = np.where(np.arange(length) < length // 2, -1.0, 1.0)
    return actions


def _images(length, size, step_marks=True):
    """Stored (upside-down) frames: red block at the stored bottom-right, blue channel = step index."""
    frames = np.zeros((length, size, size, 3), dtype=np.uint8)
    frames[:, -4:, -4:] = RED
    if step_marks:
        frames[:, size // 2, size // 2, 2] = np.arange(length)
    return frames


def write_libero(
    path, demos, *, attrs=True, size=16, instruction="open the middle drawer of the cabinet", **extra_attrs
):
    """A LIBERO task file; `demos` maps demo name -> raw actions (T, 7). Original layout when `attrs`."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if attrs:
            data.attrs["problem_info"] = json.dumps(
                {"problem_name": "libero_kitchen_tabletop_manipulation", "language_instruction": instruction}
            )
            data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Kitchen_Tabletop_Manipulation"})
            data.attrs["bddl_file_name"] = "libero/bddl_files/libero_goal/task.bddl"
            data.attrs["macros_image_convention"] = "opengl"
        for key, value in extra_attrs.items():
            data.attrs[key] = value
        for name, actions in demos.items():
            length = len(actions)
            demo = data.create_group(name)
            demo.create_dataset("actions", data=np.asarray(actions, dtype=np.float64))
            demo.create_dataset("states", data=np.zeros((length, 9)))
            demo.create_dataset("robot_states", data=np.zeros((length, 9)))
            rewards = np.zeros(length, dtype=np.uint8)
            rewards[-1:] = 1
            demo.create_dataset("rewards", data=rewards)
            demo.create_dataset("dones", data=rewards)
            obs = demo.create_group("obs")
            obs.create_dataset("agentview_rgb", data=_images(length, size))
            obs.create_dataset("eye_in_hand_rgb", data=_images(length, size))
            steps = np.arange(length, dtype=np.float64)[:, None]
            ee_pos = np.hstack([steps, steps + 0.5, steps + 0.25])
            ee_ori = np.hstack([-steps, np.zeros_like(steps), np.full_like(steps, 3.0)])
            obs.create_dataset("ee_pos", data=ee_pos)
            obs.create_dataset("ee_ori", data=ee_ori)
            obs.create_dataset("ee_states", data=np.hstack([ee_pos, ee_ori]))
            obs.create_dataset("gripper_states", data=np.hstack([steps * 0.01, -steps * 0.01]))
            obs.create_dataset("joint_states", data=np.zeros((length, 7)))
    return path


def test_original_layout_values(tmp_path):
    raw = _actions(6, seed=0)
    path = write_libero(tmp_path / LONG_FILE, {"demo_0": raw}, instruction="switch on the stove, then the moka pot")
    src = LiberoSource(path)
    (ep,) = list(src.episodes())
    assert ep.episode_id == "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it/demo_0"
    assert ep.instruction == "switch on the stove, then the moka pot"  # problem_info wins over the file name
    assert ep.task == "KITCHEN_SCENE3_turn_on_the_stove_and_put_the_moka_pot_on_it"
    assert ep.fps == 20.0
    assert ep.success is True
    np.testing.assert_allclose(ep.actions[0, :6], raw[0, :6].astype(np.float32))
    np.testing.assert_allclose(ep.actions[:, :6], raw[:, :6].astype(np.float32))
    assert ep.actions.dtype == np.float32
    assert ep.actions[:, 6].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # -1 (open) -> 1, +1 (close) -> 0
    assert ep.cameras == ["agentview", "wrist"]
    for cam in ("agentview", "wrist"):
        frames = ep.frames[cam]
        assert frames.shape == (6, 16, 16, 3)
        assert tuple(frames[0, 0, 0]) == RED  # stored bottom-right -> upright top-left
        assert tuple(frames[0, -1, -1]) == (0, 0, 0)
        with h5py.File(path) as f:
            stored = f[f"data/demo_0/obs/{'agentview_rgb' if cam == 'agentview' else 'eye_in_hand_rgb'}"][()]
        np.testing.assert_array_equal(frames, np.rot90(stored, 2, axes=(1, 2)))
    assert ep.state.shape == (6, 8)
    assert ep.state.dtype == np.float32
    np.testing.assert_allclose(ep.state[2], [2, 2.5, 2.25, -2, 0, 3, 0.02, -0.02], rtol=1e-6)
    assert ep.meta["state_names"] == ["x", "y", "z", "ax", "ay", "az", "finger_left", "finger_right"]


def test_no_noops_layout_takes_instruction_from_file_name(tmp_path):
    raw = _actions(4, seed=1)
    path = write_libero(tmp_path / LONG_FILE, {"demo_1": raw}, attrs=False, size=32)
    with h5py.File(path) as f:
        assert dict(f["data"].attrs) == {}
    ep = next(LiberoSource(path).episodes())
    assert ep.instruction == "turn on the stove and put the moka pot on it"
    assert ep.frames["agentview"].shape == (4, 32, 32, 3)
    assert tuple(ep.frames["wrist"][3, 0, 0]) == RED  # no attributes: stored upside-down, rotated
    assert ep.actions[:, 6].tolist() == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("name", "instruction"),
    [
        (LONG_FILE, "turn on the stove and put the moka pot on it"),
        (
            "LIVING_ROOM_SCENE2_put_both_the_alphabet_soup_and_the_tomato_sauce_in_the_basket_demo.hdf5",
            "put both the alphabet soup and the tomato sauce in the basket",
        ),
        (
            "KITCHEN_SCENE10_put_the_butter_at_the_back_in_the_top_drawer_of_the_cabinet_and_close_it_demo.hdf5",
            "put the butter at the back in the top drawer of the cabinet and close it",
        ),
        (
            "STUDY_SCENE1_pick_up_the_book_and_place_it_in_the_back_compartment_of_the_caddy_demo.hdf5",
            "pick up the book and place it in the back compartment of the caddy",
        ),
        (GOAL_FILE, "open the middle drawer of the cabinet"),
        (
            "pick_up_the_alphabet_soup_and_place_it_in_the_basket_demo.hdf5",
            "pick up the alphabet soup and place it in the basket",
        ),
        (
            "pick_up_the_black_bowl_between_the_plate_and_the_ramekin_and_place_it_on_the_plate_demo.hdf5",
            "pick up the black bowl between the plate and the ramekin and place it on the plate",
        ),
    ],
)
def test_instruction_from_file_name(name, instruction):
    assert instruction_from_filename(name) == instruction
    assert task_name_from_filename(name) == name.removesuffix("_demo.hdf5")


def _noop_oracle(actions, threshold=1e-4):
    """OpenVLA's rule stepwise: drop if arm norm < threshold and gripper == last KEPT gripper (any gripper first)."""
    keep, previous = [], None
    for action in actions:
        still = np.linalg.norm(action[:-1]) < threshold
        noop = still if previous is None else still and action[-1] == previous[-1]
        keep.append(not noop)
        if not noop:
            previous = action
    return np.array(keep)


def test_noop_filtering(tmp_path):
    moving = [0.3, 0, 0, 0, 0, 0]
    still = [0.0] * 6
    raw = np.array(
        [
            [*still, -1],  # leading still: dropped
            [*still, 1],  # still before anything kept: dropped whatever the gripper
            [*moving, -1],  # kept
            [*still, -1],  # same gripper: dropped
            [*still, 1],  # gripper changes: kept
            [*still, 1],  # dropped
            [1e-5, 0, 0, 0, 0, 0, 1],  # below threshold: dropped
            [*moving, 1],  # kept
        ]
    )
    expected = [False, False, True, False, True, False, False, True]
    assert noop_keep_mask(raw).tolist() == expected
    assert _noop_oracle(raw).tolist() == expected
    rng = np.random.default_rng(0)
    for _ in range(200):
        rand = rng.choice([0.0, 0.5], size=(30, 7))
        rand[:, 6] = rng.choice([-1.0, 1.0], size=30)
        np.testing.assert_array_equal(noop_keep_mask(rand), _noop_oracle(rand))

    path = write_libero(tmp_path / GOAL_FILE, {"demo_0": raw})
    unfiltered = next(LiberoSource(path).episodes())
    assert len(unfiltered) == 8
    assert unfiltered.meta["noops_removed"] == 0
    ep = next(LiberoSource(path, filter_noops=True).episodes())
    assert len(ep) == 3
    assert ep.meta["noops_removed"] == 5
    assert ep.actions[:, 6].tolist() == [1.0, 0.0, 0.0]
    kept_steps = [2, 4, 7]
    assert ep.frames["agentview"][:, 7, 7, 2].tolist() == kept_steps  # step mark stored at (8, 8) of 16x16
    assert tuple(ep.frames["agentview"][0, 0, 0]) == RED
    np.testing.assert_allclose(ep.state[:, 0], kept_steps)
    summary = LiberoSource(path, filter_noops=True).summarize_episode(LiberoSource(path).episode_keys()[0])
    assert summary.length == 3


def test_all_noop_demo_is_bad(tmp_path):
    raw = np.zeros((3, 7))
    raw[:, 6] = -1
    path = write_libero(tmp_path / GOAL_FILE, {"demo_0": raw})
    with pytest.raises(DataError, match="no-op"):
        next(LiberoSource(path, filter_noops=True).episodes())


def test_demo_order_and_partitioning(tmp_path):
    folder = tmp_path / "libero_goal"
    folder.mkdir()
    names = ["demo_10", "demo_2", "demo_0", "demo_1", "demo_11"]
    write_libero(folder / "b_task_demo.hdf5", {n: _actions(3, seed=i) for i, n in enumerate(names)})
    write_libero(folder / "a_task_demo.hdf5", {"demo_0": _actions(3, seed=9), "demo_3": _actions(3, seed=8)})
    (folder / "notes.txt").write_text("not a demo file")
    src = LiberoSource(folder)
    ids = [e.episode_id for e in src.episodes()]
    assert ids == [
        "a_task/demo_0",
        "a_task/demo_3",
        "b_task/demo_0",
        "b_task/demo_1",
        "b_task/demo_2",
        "b_task/demo_10",
        "b_task/demo_11",
    ]
    assert len(src) == 7
    shards = [[e.episode_id for e in src.episodes(num_shards=3, shard_index=i)] for i in range(3)]
    assert shards[1] == [ids[1], ids[4]]
    assert sorted(i for shard in shards for i in shard) == sorted(ids)
    first = next(src.episodes())
    np.testing.assert_allclose(first.actions[0, :6], _actions(3, seed=9)[0, :6].astype(np.float32))
    assert [s.episode_id for s in src.summaries(num_shards=3, shard_index=1)] == shards[1]


def test_skip_bad_counts_and_errors(tmp_path):
    folder = tmp_path / "suite"
    folder.mkdir()
    nan = _actions(4, seed=2)
    nan[2, 1] = np.nan
    inf = _actions(4, seed=3)
    inf[0, 6] = np.inf
    write_libero(
        folder / "a_demo.hdf5",
        {"demo_0": _actions(4, seed=0), "demo_1": nan, "demo_2": np.zeros((0, 7)), "demo_3": inf},
    )
    with h5py.File(folder / "b_demo.hdf5", "w") as f:  # hdf5 without `data`
        f.create_group("mask")
    (folder / "c_demo.hdf5").write_bytes(b"not hdf5 at all")

    with pytest.raises(DataError, match=r"b_demo\.hdf5") as err:
        LiberoSource(folder).episode_keys()
    assert err.value.field == "data"

    src = LiberoSource(folder, skip_bad=True)
    good = list(src.episodes())
    assert [e.episode_id for e in good] == ["a/demo_0"]
    assert src.skipped["actions"] == 3  # NaN, empty, inf
    assert src.skipped["data"] == 1  # no `data` group
    assert src.skipped["hdf5"] == 1  # not an hdf5 file at all
    assert sum(src.skipped.values()) == 5

    strict = LiberoSource(folder / "a_demo.hdf5")
    keys = strict.episode_keys()
    with pytest.raises(DataError, match=r"demo_1.*actions.*non-finite value at step 2"):
        strict.load_episode(keys[1])
    with pytest.raises(DataError, match="empty demo"):
        strict.load_episode(keys[2])
    with pytest.raises(DataError, match="cannot open hdf5"):
        LiberoSource(folder / "c_demo.hdf5").episode_keys()


def test_hdf5_without_data_names_file(tmp_path):
    path = tmp_path / "weird_demo.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("actions", data=np.zeros((3, 7)))
    with pytest.raises(DataError) as err:
        list(LiberoSource(path).episodes())
    assert str(path) in str(err.value)
    assert "data" in str(err.value)


def test_summary_reads_no_images(tmp_path, monkeypatch):
    path = write_libero(tmp_path / GOAL_FILE, {"demo_0": _actions(5, seed=4)}, size=24)
    src = LiberoSource(path)
    full = next(src.episodes())

    def no_images(*args, **kwargs):
        raise AssertionError("summaries must not read images")

    monkeypatch.setattr(LiberoSource, "_frames", no_images)
    (summary,) = list(src.summaries())
    assert summary.episode_id == full.episode_id
    np.testing.assert_array_equal(summary.actions, full.actions)
    np.testing.assert_array_equal(summary.state, full.state)
    assert summary.cameras == {"agentview": (24, 24, 3), "wrist": (24, 24, 3)}
    assert summary.instructions == ["open the middle drawer of the cabinet"]


def test_options_registry_and_convention(tmp_path):
    import datasets_build.sources.libero  # noqa: F401  (registers "libero")

    path = write_libero(tmp_path / GOAL_FILE, {"demo_0": _actions(3, seed=5)})
    ep = next(open_source("libero", path, cameras=("wrist",)).episodes())
    assert ep.cameras == ["wrist"]
    with pytest.raises(ConfigError, match="unknown LIBERO camera"):
        LiberoSource(path, cameras=("front",))
    upright = write_libero(tmp_path / "upright_demo.hdf5", {"demo_0": _actions(3, seed=5)})
    with h5py.File(upright, "a") as f:
        f["data"].attrs["macros_image_convention"] = "opencv"
    ep = next(LiberoSource(upright).episodes())
    assert tuple(ep.frames["agentview"][0, -1, -1]) == RED  # stored upright: left as is
    assert ep.meta["images_rotated"] is False
    ep = next(LiberoSource(upright, rotate_images=True).episodes())
    assert tuple(ep.frames["agentview"][0, 0, 0]) == RED
