"""Demo-sim episodes written in CALVIN, RLDS and LIBERO layouts read back through the project's own sources."""

from __future__ import annotations

import numpy as np
import pytest

from datasets_build.actions import GRIPPER
from datasets_build.errors import ConfigError, OutputExistsError
from datasets_build.fixture_data import CALVIN_SCALE, FixtureDataConfig, write_episodes, write_fixture_data
from datasets_build.sources import open_source


@pytest.mark.parametrize(("fmt", "source"), [("calvin", "calvin"), ("rlds", "rlds"), ("libero", "libero")])
def test_written_formats_read_back(tmp_path, demo_episodes, fmt, source):
    episodes = demo_episodes[:3]
    write_episodes(episodes, fmt, tmp_path, shards=2)
    read = {e.instruction: e for e in open_source(source, tmp_path).episodes()}
    assert len(read) == len({e.instruction for e in episodes})
    for original in episodes:
        got = read[original.instruction]
        camera = {"calvin": "static", "rlds": "image_0", "libero": "agentview"}[fmt]
        assert got.frames[camera].shape == original.frames["static"].shape
        np.testing.assert_array_equal(got.actions[:, GRIPPER], original.actions[:, GRIPPER])
        arm = original.actions[:, :6]
        if fmt == "calvin":  # CALVIN keeps its normalised rel_actions scale
            np.testing.assert_allclose(got.actions[:, :6], np.clip(arm / CALVIN_SCALE, -1, 1), atol=1e-6)
            np.testing.assert_array_equal(got.frames[camera], original.frames["static"])
        else:
            np.testing.assert_allclose(got.actions[:, :6], arm, atol=1e-6)
        if fmt == "libero":  # stored upside down, read upright
            np.testing.assert_array_equal(got.frames[camera], original.frames["static"])


def test_fixture_stage_writes_a_complete_folder_once(tmp_path):
    out = tmp_path / "bridge"
    record = write_fixture_data(FixtureDataConfig(format="rlds", out=str(out), episodes=2, image_size=32))
    assert record["episodes"] == 2
    assert (out / "fixture_data.json").is_file()
    assert (out / "dataset_info.json").is_file()
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    with pytest.raises(OutputExistsError):
        write_fixture_data(FixtureDataConfig(format="rlds", out=str(out), episodes=2, image_size=32))
    with pytest.raises(ConfigError, match="format"):
        FixtureDataConfig(format="hdf6", out=str(out))
