"""The robot's end-effector positions in the world frame, when a source's state carries them."""

from __future__ import annotations

import numpy as np

from datasets_build.episode import Episode

_XYZ = ["x", "y", "z"]
_EE_POS = ["ee_pos_x", "ee_pos_y", "ee_pos_z"]


def ee_positions(episode: Episode) -> np.ndarray | None:
    """(T, 3) float64 world end-effector positions from `state`, or None when the state does not name them.

    A source declares its state layout in `episode.meta["state_names"]`; the position is taken when the
    first three names are x, y, z (demo sim, CALVIN's robot_obs, LIBERO's ee_pos, LeRobot features named so).
    """
    names = episode.meta.get("state_names")
    if episode.state is None or not isinstance(names, list) or len(names) < 3:
        return None
    if [str(n).lower() for n in names[:3]] not in (_XYZ, _EE_POS) or episode.state.shape[-1] < 3:
        return None
    return np.asarray(episode.state[:, :3], dtype=np.float64)
