"""What training samplers read of each source (layouts, one frame), Bridge labels as OpenVLA makes them, OpenVLA's
LIBERO RLDS release, and source options in `stats`, `fit-fast` and corpus builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets_build.cli import main as datasets_main
from datasets_build.configs import build_config
from datasets_build.corpora.build import BuildConfig, open_build_source
from datasets_build.errors import ConfigError, DataError
from datasets_build.sources import open_source
from datasets_build.sources.base import EpisodeLayout
from datasets_build.sources.rlds import LIBERO_RLDS, RLDSSource, binarize_gripper, paper_bridge_labels
from tests import rlds_fixtures as fx
from tests.helpers import synthetic_episode
from tests.test_lerobot import _write as write_lerobot
from tests.test_libero import _actions as libero_actions
from tests.test_libero import write_libero

H, W = 24, 32


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rlds")
    return fx.write_rlds(root, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(H, W), fx.bridge_v2_episodes(), [2, 1])


def test_openvla_gripper_binarisation() -> None:
    # in-between values take the next decided value; a trailing undecided run keeps the raw last value
    assert binarize_gripper(np.array([0.98, 0.5, 0.5, 0.02, 0.3])).tolist() == pytest.approx([1, 0, 0, 0, 0.3])
    assert binarize_gripper(np.array([0.02, 0.6, 0.97, 0.97])).tolist() == [0, 1, 1, 1]
    state = np.cumsum(np.ones((5, 7)), axis=0) * [1, 2, 3, 4, 5, 6, 7]
    arm, grip = paper_bridge_labels(state, np.array([0.0, 0.98, 0.5, 0.03, 0.4]))
    assert arm.shape == (3, 6)
    assert np.allclose(arm, [[1, 2, 3, 4, 5, 6]] * 3)  # consecutive state differences
    assert grip.tolist() == [1, 0, 0]  # binarised over steps 1..4, last dropped; undecided counts as closed


def test_bridge_labels_paper_against_raw(bridge: Path) -> None:
    raw = RLDSSource(bridge)
    paper = RLDSSource(bridge, bridge_labels="paper")
    for key in raw.episode_keys():
        a, b = raw.load_episode(key), paper.load_episode(key)
        assert len(b) == len(a) - 2  # first and last step dropped
        np.testing.assert_allclose(b.actions[:, :6], np.diff(a.state[:, :6], axis=0)[1:], rtol=1e-6)
        np.testing.assert_array_equal(b.frames["image_0"], a.frames["image_0"][1:-1])
        np.testing.assert_array_equal(b.state, a.state[1:-1])
        assert b.meta["bridge_labels"] == "paper"
        assert b.meta["reward"] == a.meta["reward"][1:-1]
        layout = paper.episode_layout(key)
        np.testing.assert_array_equal(layout.actions, b.actions)
        encoded = paper.load_encoded(key)
        assert encoded is not None
        assert len(encoded[1]) == len(b)
    # fixture gripper: 0 (zero first action), 0.98 ..., 0.02 at the end -> steps 1..T-2 all open
    assert paper.load_episode(paper.episode_keys()[2]).actions[:, 6].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="bridge_labels must be one of raw, paper"):
        RLDSSource(bridge, bridge_labels="openvla")


def test_bridge_labels_only_for_bridge_and_oxe_bridge_relabels(tmp_path: Path) -> None:
    oxe = fx.write_rlds(tmp_path, "bridge", "0.1.0", fx.oxe_bridge_spec(H, W), fx.oxe_bridge_episodes(), [2])
    src = RLDSSource(oxe, bridge_labels="paper")
    episode = src.load_episode(src.episode_keys()[0])  # 4 steps -> 2; state is constant: zero motion
    assert len(episode) == 2
    assert np.allclose(episode.actions[:, :6], 0)
    assert episode.actions[:, 6].tolist() == [1.0, 0.0]  # open_gripper [T, T, F, F] at steps 1, 2
    fractal = fx.write_rlds(
        tmp_path, "fractal20220817_data", "0.1.0", fx.fractal_spec(32, 40), fx.fractal_episodes(), [3]
    )
    with pytest.raises(ConfigError, match="only defined for Bridge data"):
        RLDSSource(fractal, bridge_labels="paper")
    short = fx.write_rlds(
        tmp_path / "s", "bridge_dataset", "1.0.0", fx.bridge_v2_spec(H, W), fx.bridge_v2_episodes((2,)), [1]
    )
    with pytest.raises(DataError, match="needs >= 3 steps"):
        RLDSSource(short, bridge_labels="paper").load_episode(RLDSSource(short).episode_keys()[0])


def test_libero_rlds_release_mapping(tmp_path: Path) -> None:
    """`libero_10_no_noops/1.0.0` with the builder's name `liber_o10`, as OpenVLA publishes it."""
    root = tmp_path / "modified_libero_rlds"
    version = fx.write_rlds(root, "liber_o10", "1.0.0", fx.libero_rlds_spec(16, 16), fx.libero_rlds_episodes(), [2])
    folder = root / "libero_10_no_noops"
    version.parent.rename(folder)
    src = open_source("rlds", folder)
    assert src.mapping is LIBERO_RLDS
    episode = src.load_episode(src.episode_keys()[0])
    assert episode.instruction == "put both moka pots on the stove 0"
    assert episode.actions[:, 6].tolist() == [1, 1, 0, 0, 0]  # -1 open / +1 close -> 1 / 0
    assert list(episode.frames) == ["image"]
    assert episode.fps == 20.0
    assert episode.state.shape == (5, 8)
    with pytest.raises(ConfigError):
        RLDSSource(folder, bridge_labels="paper")


def test_libero_hdf5_layout_and_single_frames_match_episodes(tmp_path: Path) -> None:
    raw = libero_actions(12, seed=3)
    raw[[0, 1, 5], :6] = 0.0  # no-ops: two leading, one inside (same gripper as before)
    write_libero(tmp_path / "open_the_drawer_demo.hdf5", {"demo_0": raw, "demo_1": libero_actions(6, seed=4)})
    src = open_source("libero", tmp_path, filter_noops=True)
    assert src.random_access
    for key in src.episode_keys():
        episode = src.load_episode(key)
        layout = src.episode_layout(key)
        np.testing.assert_array_equal(layout.actions, episode.actions)
        assert layout.instruction == episode.instruction
        for step in (0, len(episode) // 2, len(episode) - 1):
            np.testing.assert_array_equal(src.read_image(key, "agentview", step), episode.frames["agentview"][step])
    assert len(src.load_episode(src.episode_keys()[0])) == 9
    with pytest.raises(DataError, match="outside"):
        src.read_image(src.episode_keys()[0], "agentview", 9)


def test_lerobot_video_and_image_frames_read_singly(tmp_path: Path) -> None:
    episodes = [synthetic_episode(length=5, size=16, seed=i, episode_id=f"e{i}") for i in range(2)]
    for video in (False, True):
        root = write_lerobot(tmp_path / f"ds{video}", episodes, video=video)
        src = open_source("demo", root)
        assert src.random_access  # a row group per episode, or videos
        key = src.episode_keys()[1]
        episode = src.load_episode(key)
        assert isinstance(src.episode_layout(key), EpisodeLayout)
        np.testing.assert_array_equal(src.episode_layout(key).actions, episode.actions)
        for step in (0, 3):
            np.testing.assert_array_equal(src.read_image(key, "static", step), episode.frames["static"][step])


def test_stats_fit_fast_and_build_take_source_options(
    tmp_path: Path, bridge: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stats.json"
    assert datasets_main(["stats", "rlds", str(bridge), "bridge_labels=paper", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["action"]["count"] == [3 + 4 + 5 - 6]
    fast = tmp_path / "fast"
    args = ["fit-fast", "rlds", str(bridge), "--horizon", "1", "--out", str(fast), "--vocab-size", "300"]
    assert datasets_main([*args, "--source-option", "bridge_labels=paper"]) == 0
    assert json.loads((fast / "fit_fast.json").read_text())["source_options"] == {"bridge_labels": "paper"}
    assert '"chunks": 6' in capsys.readouterr().out  # 1 + 2 + 3 steps of paper labels
    cfg = build_config(
        BuildConfig, {"source": "rlds", "input": str(bridge), "source_options": {"bridge_labels": "paper"}}
    )
    assert [len(e) for e in open_build_source(cfg).episodes()] == [1, 2, 3]
    bad = build_config(BuildConfig, {"source": "rlds", "input": str(bridge), "source_options": {"labels": "paper"}})
    with pytest.raises(ConfigError, match="source_options: bad option for source 'rlds'"):
        open_build_source(bad)
