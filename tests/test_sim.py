"""Tests of the demo tabletop sim: tasks and oracles, the gym env, cameras, the expert and the recorder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pybullet as p
import pytest
from gymnasium.utils.env_checker import check_env

from datasets_build.actions import make_action
from datasets_build.camera import CameraModel
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.sim import (
    FIRST_OBJECT_ID,
    ROBOT_ID,
    TASK_FAMILIES,
    ExpertEvalConfig,
    TabletopConfig,
    TabletopEnv,
    evaluate_expert,
    format_table,
    play_expert,
    rollout_expert,
    zbuffer_to_metres,
)
from datasets_build.sim.cameras import CameraFrame
from datasets_build.sim.scene import TABLE_TOP_Z, SceneConfig
from datasets_build.sim.tasks import MIN_BLOCK_GAP, TaskContext, WorldState, get_family


@pytest.fixture(scope="module")
def fast_env() -> Iterator[TabletopEnv]:
    env = TabletopEnv(TabletopConfig(render=False))
    yield env
    env.close()


@pytest.fixture(scope="module")
def env() -> Iterator[TabletopEnv]:
    env = TabletopEnv()
    yield env
    env.close()


def _step(
    env: TabletopEnv,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    gripper: float = 1.0,
    n: int = 1,
) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
    """Send the same action `n` times; return the last step's result."""
    for _ in range(n):
        out = env.step(make_action(translation, rotation, gripper))
    return out


# ------------------------------------------------------------------------------ tasks, no simulator
def test_six_families_registered_with_several_phrasings() -> None:
    assert len(TASK_FAMILIES) >= 6
    for name, family in TASK_FAMILIES.items():
        assert family.name == name
        assert len(family.templates) >= 3
    with pytest.raises(ConfigError, match="unknown task"):
        get_family("juggle")


@pytest.mark.parametrize("task", sorted(TASK_FAMILIES))
def test_layouts_are_seeded_and_valid(task: str) -> None:
    family, context = get_family(task), TaskContext()
    for seed in range(40):
        first = family.sample(np.random.default_rng(seed), context)
        assert first == family.sample(np.random.default_rng(seed), context)
        blocks = first.layout.blocks
        assert 2 <= len(blocks) <= 4
        assert len({b.color for b in blocks}) == len(blocks)
        assert first.target in first.instruction
        if first.reference:
            assert first.reference in first.instruction
        xy = np.array([b.xy for b in blocks])
        gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert gaps.min() >= MIN_BLOCK_GAP - 1e-9
        assert np.all(np.abs(xy[:, 1]) <= 0.26)
        assert np.all((xy[:, 0] > 0.3) & (xy[:, 0] < 0.7))
    seeds = {family.sample(np.random.default_rng(s), context).layout for s in range(10)}
    assert len(seeds) == 10


def _world(positions: dict[str, tuple[float, float, float]], **kw) -> WorldState:
    pos = {k: np.asarray(v, dtype=float) for k, v in positions.items()}
    defaults = {
        "initial_positions": pos,
        "in_fingers": frozenset(),
        "touching_robot": frozenset(),
        "tcp_position": np.array([0.45, 0.0, TABLE_TOP_Z + 0.25]),
        "gripper_width": 0.08,
        "scene": SceneConfig(),
    }
    defaults.update(kw)
    return WorldState(positions=pos, **defaults)


def test_oracles_judge_hand_made_states() -> None:
    rest = TABLE_TOP_Z + 0.02
    stack = get_family("stack_blocks").sample(np.random.default_rng(0), TaskContext())
    top, base = stack.target, stack.reference
    on_top = {top: (0.5, 0.0, rest + 0.04), base: (0.505, 0.0, rest)}
    assert get_family("stack_blocks").success(stack, _world(on_top))
    assert not get_family("stack_blocks").success(stack, _world(on_top, touching_robot=frozenset({top})))
    assert not get_family("stack_blocks").success(stack, _world({top: (0.56, 0.0, rest), base: (0.5, 0.0, rest)}))

    pick = get_family("pick_block").sample(np.random.default_rng(0), TaskContext())
    lifted = {pick.target: (0.5, 0.0, rest + 0.06)}
    assert get_family("pick_block").success(pick, _world(lifted, in_fingers=frozenset({pick.target})))
    assert not get_family("pick_block").success(pick, _world(lifted))

    push = get_family("push_block").sample(np.random.default_rng(0), TaskContext())
    start = np.array([0.5, 0.0, rest])
    moved = start + 0.12 * np.array([*push.direction, 0.0])
    backwards = start - 0.12 * np.array([*push.direction, 0.0])
    oracle = get_family("push_block").success
    assert oracle(push, _world({push.target: tuple(moved)}, initial_positions={push.target: start}))
    assert not oracle(push, _world({push.target: tuple(backwards)}, initial_positions={push.target: start}))

    over = get_family("gripper_over_block")
    task = over.sample(np.random.default_rng(1), TaskContext())
    tcp = np.array([0.5, 0.01, rest + 0.02 + 0.05])
    width = 0.08 if task.gripper_open else 0.0
    assert over.success(task, _world({task.target: (0.5, 0.0, rest)}, tcp_position=tcp, gripper_width=width))
    assert not over.success(task, _world({task.target: (0.5, 0.0, rest)}, tcp_position=tcp, gripper_width=0.04))


# ----------------------------------------------------------------------------------- gym API
def test_gym_env_checker_passes(fast_env: TabletopEnv) -> None:
    check_env(fast_env, skip_render_check=True)


def test_spaces_and_observations(env: TabletopEnv) -> None:
    obs, info = env.reset(seed=2, options={"task": "pick_block"})
    assert env.observation_space.contains(obs)
    assert set(obs) == {"state", *(f"{k}_{c}" for k in ("rgb", "depth", "seg") for c in ("static", "wrist"))}
    assert obs["rgb_static"].shape == (224, 224, 3)
    assert obs["rgb_static"].dtype == np.uint8
    assert obs["rgb_wrist"].shape == (128, 128, 3)
    assert obs["depth_static"].dtype == np.float32
    assert obs["seg_wrist"].dtype == np.int32
    assert env.action_space.shape == (7,)
    assert {"success", "instruction", "task", "object_positions"} <= set(info)
    assert info["task"] == "pick_block"
    assert info["success"] is False
    # The state is TCP xyz, roll-pitch-yaw, the finger opening and the last gripper command.
    x, y, z, roll, pitch, _, width, command = obs["state"]
    assert 0.4 < x < 0.5
    assert abs(y) < 0.06
    assert abs(z - (TABLE_TOP_Z + 0.25)) < 0.03
    assert abs(abs(roll) - np.pi) < 0.01
    assert abs(pitch) < 0.01
    assert width == pytest.approx(0.08, abs=1e-3)
    assert command == 1.0
    obs, reward, terminated, truncated, info = _step(env)
    assert env.observation_space.contains(obs)
    assert reward == 0.0
    assert not terminated
    assert not truncated


def test_reset_task_forms_agree(fast_env: TabletopEnv) -> None:
    _, a = fast_env.reset(seed=3, options={"task": "stack_blocks"})
    layout = fast_env.task.layout
    _, b = fast_env.reset(seed=3, task="stack_blocks")
    assert fast_env.task.layout == layout
    _, c = fast_env.reset(3, "stack_blocks")
    assert fast_env.task.layout == layout
    assert a["instruction"] == b["instruction"] == c["instruction"]
    fast_env.reset(seed=4)  # keeps the last task
    assert fast_env.task.task == "stack_blocks"
    assert fast_env.task.layout != layout
    with pytest.raises(ConfigError):
        fast_env.reset(seed=3, task="pick_block", options={"task": "stack_blocks"})
    with pytest.raises(ConfigError):
        fast_env.reset(seed=3, task="juggle")


def test_truncation_at_max_steps() -> None:
    env = TabletopEnv(TabletopConfig(render=False, max_steps=3))
    env.reset(seed=0, options={"task": "pick_block"})
    flags = [_step(env)[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.close()


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        TabletopConfig(control_hz=7)
    with pytest.raises(ConfigError):
        TabletopConfig(task="juggle")
    with pytest.raises(ConfigError):
        ExpertEvalConfig(tasks=["juggle"])


# ---------------------------------------------------------------------------- determinism
def test_same_seed_same_layout_and_frames(env: TabletopEnv) -> None:
    other = TabletopEnv()
    try:
        obs_a, _ = env.reset(seed=7, options={"task": "place_in_container"})
        layout = env.task.layout
        other.reset(seed=1, options={"task": "push_block"})  # history must not matter
        _step(other, (0.02, 0.0, 0.0), n=3)
        obs_b, _ = other.reset(seed=7, options={"task": "place_in_container"})
        assert other.task.layout == layout
        for key in obs_a:
            np.testing.assert_array_equal(obs_a[key], obs_b[key])
        action = make_action((0.01, -0.02, -0.03), (0.0, 0.0, 0.1), 0.0)
        a1, b1 = env.step(action)[0], other.step(action)[0]
        for key in a1:
            np.testing.assert_array_equal(a1[key], b1[key])
        obs_c, _ = other.reset(seed=8, options={"task": "place_in_container"})
        assert other.task.layout != layout
        assert not np.array_equal(obs_a["rgb_static"], obs_c["rgb_static"])
    finally:
        other.close()


# ------------------------------------------------------------------------------------- control
def test_actions_move_tcp_by_commanded_delta(fast_env: TabletopEnv) -> None:
    fast_env.reset(seed=0, options={"task": "pick_block"})
    for delta in [(0.02, 0.0, 0.0), (0.0, -0.025, 0.0), (0.0, 0.0, -0.03), (-0.01, 0.01, 0.015)]:
        before = fast_env.state()
        after = _step(fast_env, delta)[0]["state"]
        np.testing.assert_allclose(after[:3] - before[:3], delta, atol=0.003)
    before = fast_env.state()
    after = _step(fast_env, rotation=(0.0, 0.0, 0.12))[0]["state"]
    assert after[5] - before[5] == pytest.approx(0.12, abs=0.01)
    np.testing.assert_allclose(after[:3], before[:3], atol=0.003)
    # Deltas beyond the per-step limit are clipped to it.
    before = fast_env.state()
    after = _step(fast_env, (0.2, 0.0, 0.0))[0]["state"]
    assert after[0] - before[0] == pytest.approx(fast_env.config.max_translation, abs=0.003)
    # Repeated zero actions hold the pose.
    before = fast_env.state()
    after = _step(fast_env, n=20)[0]["state"]
    np.testing.assert_allclose(after[:3], before[:3], atol=0.002)


def test_gripper_convention(fast_env: TabletopEnv) -> None:
    fast_env.reset(seed=0, options={"task": "pick_block"})
    assert _step(fast_env, gripper=0.0, n=5)[0]["state"][6] < 0.005  # 0 = closed
    assert _step(fast_env, gripper=1.0, n=5)[0]["state"][6] > 0.075  # 1 = open


# ------------------------------------------------------------------------------------- cameras
def test_zbuffer_conversion() -> None:
    near, far = 0.05, 3.0
    np.testing.assert_allclose(zbuffer_to_metres(np.array([0.0, 1.0]), near, far), [near, far], rtol=1e-6)


def _check_camera(frame: CameraFrame, model: CameraModel, env: TabletopEnv, min_hits: int) -> int:
    """Block centres project onto their own segmentation id (or onto a nearer robot part), and the
    block's depth pixels unproject onto the block."""
    hits = 0
    for name, obj in env.scene.objects.items():
        if obj.category != "block":
            continue
        centre, quat = env.scene.pose(name)
        uv, depth = model.project(centre[None])
        (u, v), z = uv[0], depth[0]
        if z <= 0 or not (1 <= u < model.width - 1 and 1 <= v < model.height - 1):
            continue
        window = frame.segmentation[int(v) - 1 : int(v) + 2, int(u) - 1 : int(u) + 2]
        if obj.segmentation_id in window:
            hits += 1
        else:  # hidden: then by the robot, in front of the block
            assert window[1, 1] == ROBOT_ID, f"{name} at ({u:.0f}, {v:.0f}) sees {window}"
            assert frame.depth[int(v), int(u)] < z
            continue
        rows, cols = np.nonzero(frame.segmentation == obj.segmentation_id)
        points = model.unproject(frame.depth, np.stack([cols + 0.5, rows + 0.5], axis=1))
        rotation = np.asarray(p.getMatrixFromQuaternion(quat.tolist())).reshape(3, 3)
        local = (points - centre) @ rotation  # into the block frame
        assert np.abs(local).max() <= obj.size[0] / 2 + 0.006, f"{name}: {np.abs(local).max():.3f} m off"
        assert np.linalg.norm(points.mean(axis=0) - centre) < 0.03
    assert hits >= min_hits
    return hits


def test_camera_models_match_rendered_images(env: TabletopEnv) -> None:
    for seed in range(3):
        env.reset(seed=seed, options={"task": "place_in_container"})
        frames, cameras = env.frames(), env.cameras()
        _check_camera(frames["static"], cameras["static"], env, min_hits=2)
        _check_camera(frames["wrist"], cameras["wrist"], env, min_hits=1)
        ids = {o.segmentation_id for o in env.objects().values()}
        assert ids == set(range(FIRST_OBJECT_ID, FIRST_OBJECT_ID + len(ids)))
        assert ids <= set(np.unique(frames["static"].segmentation))
    # After moving, the wrist camera model follows the hand.
    _step(env, (0.03, 0.03, -0.03), (0.0, 0.0, 0.1), n=3)
    _check_camera(env.frames()["wrist"], env.cameras()["wrist"], env, min_hits=1)


# ---------------------------------------------------------------------------- expert and oracle
@pytest.mark.parametrize("task", sorted(TASK_FAMILIES))
def test_expert_succeeds_and_noop_does_not(fast_env: TabletopEnv, task: str) -> None:
    for seed in (0, 1, 2):
        result = play_expert(fast_env, task, seed)
        assert result.success, f"{task} seed {seed}"
        assert result.steps <= 60
    fast_env.reset(seed=0, options={"task": task})
    hold = 1.0 if fast_env.task.layout.gripper_open else 0.0
    for _ in range(15):
        assert not _step(fast_env, gripper=hold)[4]["success"]


def test_push_left_moves_left_in_the_image(fast_env: TabletopEnv) -> None:
    static = fast_env.cameras()["static"]
    for seed in range(6):
        fast_env.reset(seed=seed, options={"task": "push_block"})
        target = fast_env.task.target
        before = static.project(fast_env.scene.pose(target)[0][None])[0][0, 0]
        assert play_expert(fast_env, "push_block", seed).success
        after = static.project(fast_env.scene.pose(target)[0][None])[0][0, 0]
        sign = -1 if "left" in fast_env.task.instruction else 1
        assert sign * (after - before) > 10  # pixels


# ---------------------------------------------------------------------------------- recording
def test_rollout_expert_records_a_valid_episode(env: TabletopEnv) -> None:
    episode = rollout_expert(env, "place_in_container", seed=4)
    assert isinstance(episode, Episode)
    length = len(episode)
    assert episode.success is True
    assert 20 <= length <= 80
    assert episode.source == "demo"
    assert episode.task == "place_in_container"
    assert episode.fps == 10.0
    assert episode.instruction == env.task.instruction
    assert episode.episode_id == "demo_place_in_container_000004"
    assert episode.frames["static"].shape == (length, 224, 224, 3)
    assert episode.frames["wrist"].shape == (length, 128, 128, 3)
    assert episode.depth["static"].dtype == np.float32
    assert episode.depth["static"].min() > 0.05
    assert episode.segmentation["wrist"].dtype == np.int32
    assert episode.actions.dtype == np.float32
    assert set(np.unique(episode.actions[:, 6])) == {0.0, 1.0}
    assert episode.state is not None
    assert episode.state.shape == (length, 8)
    assert set(episode.geometry()) == {"depth", "segmentation", "camera", "objects"}
    # Frame t is the observation before action t: the TCP then moves by about action t.
    moved = np.diff(episode.state[:, :3], axis=0) - episode.actions[:-1, :3]
    assert np.median(np.abs(moved)) < 0.002
    # Objects: blocks tracked per step, containers static, ids as in the segmentation.
    for name, obj in episode.objects.items():
        expected = length if obj.category == "block" else 1
        assert obj.positions.shape == (expected, 3)
        assert obj.orientations is not None
        assert obj.size is not None
        assert obj.segmentation_id is not None
        assert obj.segmentation_id in np.unique(episode.segmentation["static"])
        assert name.endswith("block") == (obj.category == "block")
    static = episode.camera["static"]
    assert isinstance(static, CameraModel)
    assert (static.width, static.height) == (224, 224)
    assert episode.camera_extrinsics["wrist"].shape == (length, 4, 4)
    np.testing.assert_array_equal(episode.camera["wrist"].extrinsics, episode.camera_extrinsics["wrist"][0])
    # The per-step wrist model sees the target block where the segmentation has it, at every 5th step.
    target = episode.objects[env.task.target]
    for step in range(0, length, 5):
        model = episode.camera_at("wrist", step)
        uv, depth = model.project(target.positions[step][None])
        (u, v), z = uv[0], depth[0]
        if z > 0 and 2 <= u < 126 and 2 <= v < 126:
            window = episode.segmentation["wrist"][step, int(v) - 2 : int(v) + 3, int(u) - 2 : int(u) + 3]
            assert target.segmentation_id in window or ROBOT_ID in window
    assert episode.meta["seed"] == 4
    assert episode.meta["noise"] > 0
    assert all(episode.meta["timing"][k] > 0 for k in ("physics_s", "render_s", "expert_s"))
    # The block ends where the oracle says.
    block = episode.objects[env.task.target]
    assert np.linalg.norm(block.positions[-1][:2] - episode.objects[env.task.reference].positions[0][:2]) < 0.1


def test_rollout_is_deterministic(fast_env: TabletopEnv) -> None:
    a = rollout_expert(fast_env, "stack_blocks", seed=5)
    b = rollout_expert(fast_env, "stack_blocks", seed=5)
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.state, b.state)
    c = rollout_expert(fast_env, "stack_blocks", seed=5, noise=0.0)
    assert not np.array_equal(a.actions[: len(c)], c.actions[: len(a)])
    assert a.frames == {}
    assert a.depth == {}


def test_evaluate_expert_summary() -> None:
    cfg = ExpertEvalConfig(episodes_per_task=2, seed=10, tasks=["pick_block", "gripper_over_block"])
    results = evaluate_expert(cfg)
    assert set(results) == {"pick_block", "gripper_over_block"}
    for row in results.values():
        assert row["episodes"] == 2
        assert row["successes"] == 2
        assert row["success_rate"] == 1.0
        assert 3 <= row["mean_steps"] <= 60
    table = format_table(results)
    assert "pick_block" in table
    assert "100.0%" in table
    assert table.splitlines()[-1].startswith("all")


@pytest.mark.slow
def test_expert_success_rate_over_30_seeds_with_two_workers() -> None:
    results = evaluate_expert(ExpertEvalConfig(episodes_per_task=30, workers=2))
    assert set(results) == set(TASK_FAMILIES)
    for task, row in results.items():
        assert row["success_rate"] >= 0.9, f"{task}: {row}"
