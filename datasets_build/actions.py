"""The project's one action convention, and converters from/to every source's convention.

An action is float32 (7,): xyz translation delta, roll-pitch-yaw rotation delta, gripper.
The gripper is absolute and binary: 1 = open, 0 = closed. Sources convert on read, simulator
adapters convert back; nothing else in the project knows another convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from datasets_build.errors import DataError

ACTION_DIM = 7
ACTION_NAMES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
TRANSLATION = slice(0, 3)
ROTATION = slice(3, 6)
ARM = slice(0, 6)
GRIPPER = 6
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = 0.0
# The convention in words, for metadata a policy reports (vla.Policy.metadata, the policy server).
ACTION_CONVENTION: dict[str, object] = {
    "names": list(ACTION_NAMES),
    "arm": "relative end-effector motion: xyz translation delta, then roll-pitch-yaw rotation delta",
    "gripper": "absolute, binary: 1 = open, 0 = closed",
}


def make_action(translation: Sequence[float], rotation: Sequence[float], gripper_open: bool | float) -> np.ndarray:
    """Build one action in the convention from its parts (gripper: truthy/1 = open)."""
    action = np.zeros(ACTION_DIM, dtype=np.float32)
    action[TRANSLATION] = translation
    action[ROTATION] = rotation
    action[GRIPPER] = GRIPPER_OPEN if float(gripper_open) >= 0.5 else GRIPPER_CLOSED
    return action


def gripper_from_signed(values: np.ndarray, open_value: float = 1.0) -> np.ndarray:
    """Signed gripper command (+-1) -> convention. `open_value` is the sign meaning open."""
    values = np.asarray(values, dtype=np.float32)
    is_open = values > 0 if open_value > 0 else values < 0
    return is_open.astype(np.float32)


def gripper_to_signed(gripper: np.ndarray, open_value: float = 1.0) -> np.ndarray:
    """Convention -> signed gripper command (+-1) where `open_value` means open."""
    is_open = np.asarray(gripper, dtype=np.float32) >= 0.5
    return np.where(is_open, open_value, -open_value).astype(np.float32)


def gripper_from_calvin(values: np.ndarray) -> np.ndarray:
    """CALVIN: +1 open, -1 close."""
    return gripper_from_signed(values, open_value=1.0)


def gripper_to_calvin(gripper: np.ndarray) -> np.ndarray:
    """Convention -> CALVIN (+1 open, -1 close)."""
    return gripper_to_signed(gripper, open_value=1.0)


def gripper_from_libero(values: np.ndarray) -> np.ndarray:
    """LIBERO (robosuite): -1 open, +1 close."""
    return gripper_from_signed(values, open_value=-1.0)


def gripper_to_libero(gripper: np.ndarray) -> np.ndarray:
    """Convention -> LIBERO (-1 open, +1 close)."""
    return gripper_to_signed(gripper, open_value=-1.0)


def gripper_from_continuous(values: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Bridge V2 / OXE bridge: absolute openness in [0, 1] (~1 open, ~0 closed), binarised."""
    return (np.asarray(values, dtype=np.float32) > threshold).astype(np.float32)


def gripper_from_relative_closedness(values: np.ndarray) -> np.ndarray:
    """Fractal: relative command per step (+1 close, -1 open, 0 keep) -> absolute convention.

    A step with no command keeps the previous state. Before the first command the gripper is in the
    state opposite to that command (a first "close" means it was open); with no command at all it
    is open.
    """
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    commands = np.where(values > 0.5, -1, np.where(values < -0.5, 1, 0))  # +1 = open, -1 = close
    nonzero = np.flatnonzero(commands)
    state = 1 if nonzero.size == 0 else -commands[nonzero[0]]
    out = np.empty(values.shape[0], dtype=np.float32)
    for i, command in enumerate(commands):
        if command != 0:
            state = command
        out[i] = GRIPPER_OPEN if state > 0 else GRIPPER_CLOSED
    return out


def validate_actions(actions: np.ndarray, where: str = "actions") -> np.ndarray:
    """Check an (T, 7) action array is in the convention; return it as float32 or raise DataError."""
    arr = np.asarray(actions)
    if arr.ndim != 2 or arr.shape[1] != ACTION_DIM:
        raise DataError(f"expected shape (T, {ACTION_DIM}), got {arr.shape}", where, "actions")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise DataError(f"non-finite value at step {bad}", where, "actions")
    grip = arr[:, GRIPPER]
    if not np.isin(grip, (GRIPPER_OPEN, GRIPPER_CLOSED)).all():
        raise DataError("gripper must be 1 (open) or 0 (closed)", where, "actions[:, 6]")
    return arr
