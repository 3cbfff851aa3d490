import numpy as np
import pytest

from datasets_build import actions as A
from datasets_build.errors import DataError


def test_layout_constants_agree():
    assert A.ACTION_DIM == len(A.ACTION_NAMES) == 7
    assert A.ACTION_NAMES[A.GRIPPER] == "gripper"
    assert A.ACTION_NAMES[A.TRANSLATION] == ("x", "y", "z")
    assert A.ACTION_NAMES[A.ROTATION] == ("roll", "pitch", "yaw")


def test_calvin_round_trip():
    calvin = np.array([1.0, -1.0, 1.0, -1.0])
    ours = A.gripper_from_calvin(calvin)
    np.testing.assert_array_equal(ours, [1, 0, 1, 0])
    np.testing.assert_array_equal(A.gripper_to_calvin(ours), calvin)


def test_libero_is_inverted():
    libero = np.array([-1.0, 1.0, 1.0, -1.0])  # -1 open, +1 close
    ours = A.gripper_from_libero(libero)
    np.testing.assert_array_equal(ours, [1, 0, 0, 1])
    np.testing.assert_array_equal(A.gripper_to_libero(ours), libero)


def test_bridge_continuous():
    np.testing.assert_array_equal(A.gripper_from_continuous(np.array([0.98, 0.02, 0.6, 0.4])), [1, 0, 1, 0])


def test_fractal_relative_closedness_to_absolute():
    # starts with no command, then close, hold, open, hold
    rel = np.array([0, 0, 1, 0, 0, -1, 0])
    np.testing.assert_array_equal(A.gripper_from_relative_closedness(rel), [1, 1, 0, 0, 0, 1, 1])
    # first command "open" means it was closed before
    np.testing.assert_array_equal(A.gripper_from_relative_closedness(np.array([0, -1, 0])), [0, 1, 1])
    np.testing.assert_array_equal(A.gripper_from_relative_closedness(np.zeros(3)), [1, 1, 1])


def test_make_action_and_validate():
    a = A.make_action([0.01, 0, 0], [0, 0, 0.1], gripper_open=False)
    assert a.dtype == np.float32
    assert a[A.GRIPPER] == A.GRIPPER_CLOSED
    A.validate_actions(a[None])
    with pytest.raises(DataError, match="gripper"):
        A.validate_actions(np.full((2, 7), 0.5))
    bad = np.zeros((3, 7))
    bad[1, 2] = np.nan
    with pytest.raises(DataError, match="step 1"):
        A.validate_actions(bad)
    with pytest.raises(DataError, match=r"\(T, 7\)"):
        A.validate_actions(np.zeros((3, 6)))
