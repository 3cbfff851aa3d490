import numpy as np
import pytest

from datasets_build.errors import DataError
from tests.helpers import synthetic_episode


def test_valid_episode_reports_geometry():
    ep = synthetic_episode()
    assert len(ep) == 6
    assert ep.cameras == ["static", "wrist"]
    assert ep.geometry() == ["depth", "segmentation", "camera", "objects"]


def test_window_slices_everything():
    ep = synthetic_episode(length=8)
    w = ep.window(2, 5, instruction="x")
    assert len(w) == 3
    np.testing.assert_array_equal(w.actions, ep.actions[2:5])
    np.testing.assert_array_equal(w.frames["static"], ep.frames["static"][2:5])
    np.testing.assert_array_equal(w.objects["red block"].positions, ep.objects["red block"].positions[2:5])
    np.testing.assert_array_equal(w.camera_extrinsics["wrist"], ep.camera_extrinsics["wrist"][2:5])
    assert w.camera_at("wrist", 0).extrinsics[2, 3] == ep.camera_at("wrist", 2).extrinsics[2, 3]
    assert w.instruction == "x"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"actions": np.zeros((0, 7), np.float32)}, "empty"),
        ({"actions": np.full((6, 7), np.inf, np.float32)}, "non-finite"),
        ({"frames": {"static": np.zeros((5, 8, 8, 3), np.uint8)}}, "5 steps but 6"),
        ({"frames": {"static": np.zeros((6, 8, 8, 3), np.float32)}}, "uint8"),
        ({"state": np.zeros((2, 7), np.float32)}, "state"),
    ],
)
def test_invalid_episodes_name_the_field(change, match):
    ep = synthetic_episode()
    fields = {**ep.__dict__, **change}
    with pytest.raises(DataError, match=match):
        type(ep)(**fields)
