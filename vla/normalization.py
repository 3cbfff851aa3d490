"""Per-dimension action normalisation from the `stats` command's stats.json, stored in every VLA checkpoint.

`q01_q99` maps [q01, q99] to [-1, 1] and clips (robust to outliers); `mean_std` standardises; `none` keeps the
raw values (no statistics needed). `action_clip` c > 0 then clips the result to [-c, c] and divides by c:
VLM4VLA's `norm_action` with +-0.65 (on CALVIN's raw rel_actions; on Open-X data after OpenVLA's q01/q99 scaling).
All of it folds into one offset/scale per dim and an optional clip to [-1, 1]. Only the 6 arm dims are
normalised; the gripper stays in {0, 1} (a BCE target) and `act` thresholds its logit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.actions import ACTION_DIM, ARM, GRIPPER
from datasets_build.errors import ConfigError, DataError
from datasets_build.inspection import ACTION_KEY

NORMALIZATION_FILE = "normalization.json"
MODES = ("q01_q99", "mean_std", "none")
_EPS = 1e-6


@dataclass(frozen=True)
class ActionNormalizer:
    """offset/scale per action dim: normalised = (action - offset) / scale on the arm dims."""

    mode: str
    offset: np.ndarray  # (7,)
    scale: np.ndarray  # (7,)
    clip: bool = True  # clip normalised arm dims to [-1, 1]
    action_clip: float = 0.0  # the bound folded into `scale` (recorded for the card; 0 = none)

    @classmethod
    def from_stats(
        cls, stats: dict[str, Any] | None, mode: str = "q01_q99", where: str = "stats", action_clip: float = 0.0
    ) -> ActionNormalizer:
        """Build from a LeRobot-layout stats dict (`{"action": {"q01": [...], ...}}`; None for mode `none`)."""
        if mode not in MODES:
            raise ConfigError(f"normalization must be one of {MODES}, got {mode!r}")
        if action_clip < 0:
            raise ConfigError(f"action_clip must be >= 0, got {action_clip}")
        if mode == "none":
            return cls._clipped(mode, np.zeros(ACTION_DIM), np.ones(ACTION_DIM), False, action_clip)
        feature = (stats or {}).get(ACTION_KEY)
        if not isinstance(feature, dict):
            raise DataError(f"no {ACTION_KEY!r} statistics", where, ACTION_KEY)
        keys = ("q01", "q99") if mode == "q01_q99" else ("mean", "std")
        values = []
        for key in keys:
            if key not in feature:
                raise DataError(f"missing {key} for normalization {mode}", where, f"{ACTION_KEY}.{key}")
            arr = np.asarray(feature[key], dtype=np.float64).reshape(-1)
            if arr.shape != (ACTION_DIM,):
                raise DataError(f"expected {ACTION_DIM} values, got {arr.shape}", where, f"{ACTION_KEY}.{key}")
            values.append(arr)
        if mode == "q01_q99":
            offset, scale = (values[0] + values[1]) / 2, (values[1] - values[0]) / 2
        else:
            offset, scale = values[0], values[1]
        return cls._clipped(mode, offset, np.maximum(scale, _EPS), mode == "q01_q99", action_clip)

    @classmethod
    def _clipped(
        cls, mode: str, offset: np.ndarray, scale: np.ndarray, clip: bool, action_clip: float
    ) -> ActionNormalizer:
        """Fold `action_clip` into the scale: clip(x / s, -c, c) / c == clip(x / (s * c), -1, 1)."""
        scale = np.array(scale, dtype=np.float64)
        offset = np.array(offset, dtype=np.float64)
        if action_clip > 0:
            scale = scale * action_clip
            clip = True
        offset[GRIPPER], scale[GRIPPER] = 0.0, 1.0
        return cls(mode, offset.astype(np.float32), scale.astype(np.float32), clip, float(action_clip))

    @classmethod
    def from_file(cls, path: str | Path, mode: str = "q01_q99", action_clip: float = 0.0) -> ActionNormalizer:
        """Read a stats.json written by `python -m datasets_build stats`."""
        path = Path(path)
        if not path.is_file():
            raise DataError("statistics file does not exist", path)
        try:
            stats = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", path) from exc
        return cls.from_stats(stats, mode, where=str(path), action_clip=action_clip)

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """(..., 7) actions -> arm dims normalised (clipped to [-1, 1] when `clip`), gripper unchanged."""
        out = np.array(actions, dtype=np.float32, copy=True)
        out[..., ARM] = (out[..., ARM] - self.offset[ARM]) / self.scale[ARM]
        if self.clip:
            np.clip(out[..., ARM], -1.0, 1.0, out=out[..., ARM])
        return out

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        """Inverse of `normalize` on the arm dims; the gripper column is passed through."""
        out = np.array(normalized, dtype=np.float32, copy=True)
        out[..., ARM] = out[..., ARM] * self.scale[ARM] + self.offset[ARM]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form stored in checkpoints."""
        return {
            "mode": self.mode,
            "offset": self.offset.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
            "action_clip": self.action_clip,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = NORMALIZATION_FILE) -> ActionNormalizer:
        """Inverse of `to_dict`."""
        try:
            mode = str(data["mode"])
            return cls(
                mode,
                np.asarray(data["offset"], dtype=np.float32).reshape(ACTION_DIM),
                np.asarray(data["scale"], dtype=np.float32).reshape(ACTION_DIM),
                bool(data.get("clip", mode == "q01_q99")),  # files written before "clip" existed
                float(data.get("action_clip", 0.0)),
            )
        except (KeyError, ValueError) as exc:
            raise DataError(f"malformed normalisation ({exc})", where) from exc

    def save(self, folder: str | Path) -> Path:
        """Write `normalization.json` into a checkpoint folder."""
        path = Path(folder) / NORMALIZATION_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ActionNormalizer:
        """Read a checkpoint's normalisation; one-line DataError if the checkpoint has none."""
        path = Path(folder) / NORMALIZATION_FILE
        if not path.is_file():
            raise DataError("checkpoint has no normalisation statistics", folder, NORMALIZATION_FILE)
        try:
            return cls.from_dict(json.loads(path.read_text()), where=str(path))
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON ({exc.msg})", path) from exc
