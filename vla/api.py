"""The Policy contract between `vla` and `evaluation`: what a rollout may call, nothing more.

`evaluation` types every policy against `PolicyLike`; `vla.Policy` (the VLM4VLA policy) implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class PolicyLike(Protocol):
    """A deterministic closed-loop policy producing action chunks in the project's action convention.

    images: uint8 (H, W, 3) arrays, one per camera the policy was trained on (VLM4VLA: one static view).
    Returned actions: float32 (chunk, 7), de-normalised, gripper 1 = open.
    """

    chunk_size: int

    def reset(self) -> None:
        """Forget any per-episode state before a new episode."""

    def act(self, images: Sequence[np.ndarray], instruction: str) -> np.ndarray:
        """One observation -> float32 (chunk, 7)."""

    def act_batch(self, images: Sequence[Sequence[np.ndarray]], instructions: Sequence[str]) -> np.ndarray:
        """N observations in one forward pass -> float32 (N, chunk, 7)."""
