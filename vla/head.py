"""The action head: the query token's last hidden state -> an action chunk (paper Table 9, A.2.6)."""

from __future__ import annotations

import torch
from torch import nn

from datasets_build.actions import ACTION_DIM

HEAD_OUT_WIDTH = 1024  # second layer's output in every Table 9 row
HEAD_MIN_WIDTH = 1024


def head_width(hidden_size: int) -> int:
    """First layer's width: max(1024, hidden / 2) (Table 9's rule).

    For PaliGemma-2 (hidden 2304) this gives 1152; Table 9 prints 1502, a misprint: only 1152 reproduces the
    printed head size (paper-notes.md, "VLM4VLA policy").
    """
    return max(HEAD_MIN_WIDTH, hidden_size // 2)


class ActionHead(nn.Sequential):
    """Linear(h, w) - ReLU - Linear(w, 1024) - ReLU - Linear(1024, chunk * 7).

    Table 9 prints only the first two layers and omits the final Linear(1024, action dims); the ReLU between the
    second and the final layer is our choice (the paper does not print it). Output per step: 6 normalised
    end-effector dims + one gripper logit.
    """

    def __init__(self, hidden_size: int, chunk_size: int, width: int | None = None) -> None:
        w = width or head_width(hidden_size)
        super().__init__(
            nn.Linear(hidden_size, w),
            nn.ReLU(),
            nn.Linear(w, HEAD_OUT_WIDTH),
            nn.ReLU(),
            nn.Linear(HEAD_OUT_WIDTH, chunk_size * ACTION_DIM),
        )
        self.hidden_size = hidden_size
        self.width = w
        self.chunk_size = chunk_size

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the head (its input is cast to it)."""
        return next(self.parameters()).dtype

    def table9_parameters(self) -> int:
        """Parameters of the two layers Table 9 prints (the final projection excluded)."""
        return sum(p.numel() for layer in (self[0], self[2]) for p in layer.parameters())
