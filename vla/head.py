"""The action head: the query token's last hidden state -> an action chunk (paper Table 9, A.2.6).

Two layouts: `mlp` (the two layers Table 9 prints + a final Linear) and `fc_decoder`, the head of VLM4VLA's
released code (RoboVLMs' FCDecoder): the same two shared layers, then an arm tower and a gripper tower of
Linear(1024, 1024) ReLU Linear(1024, 512) ReLU Linear(512, 256) ReLU Linear(256, out) each. The towers are the
~3.43M parameters by which every Table 9 head size exceeds its two printed layers (6.58M for hidden 2048 at
chunk 10). Either head may bound its arm outputs with `scale * tanh` (VLM4VLA's arm tower ends in tanh).
"""

from __future__ import annotations

import torch
from torch import nn

from datasets_build.actions import ACTION_DIM
from vla.configuration_vla import ARM_ACTIVATIONS, HEAD_INPUT_NORMS, HEAD_TYPES

HEAD_OUT_WIDTH = 1024  # second layer's output in every Table 9 row
HEAD_MIN_WIDTH = 1024
TOWER_WIDTHS = (1024, 512, 256)  # FCDecoder's MLPTanhHead / MLPSigmoidHead hidden layers


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


def _tower(width: int, out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for hidden in TOWER_WIDTHS:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out))
    return nn.Sequential(*layers)


class FCDecoderHead(nn.Module):
    """VLM4VLA's head: Linear(h, w) ReLU Linear(w, 1024), then an arm tower (chunk * 6) and a gripper tower (chunk
    logits), each 1024-512-256; Xavier-uniform weights and zero biases as RoboVLMs initialises it. `w` follows the
    Table 9 rule, which equals the code's h / 2 for every backbone of the paper. The arm tower ends linear here:
    its tanh is `arm_activation="tanh"` in the policy (as for the `mlp` head)."""

    def __init__(self, hidden_size: int, chunk_size: int, width: int | None = None) -> None:
        super().__init__()
        w = width or head_width(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, w), nn.ReLU(), nn.Linear(w, HEAD_OUT_WIDTH))
        self.arm = _tower(HEAD_OUT_WIDTH, chunk_size * (ACTION_DIM - 1))
        self.gripper = _tower(HEAD_OUT_WIDTH, chunk_size)
        self.hidden_size = hidden_size
        self.width = w
        self.chunk_size = chunk_size
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the head (its input is cast to it)."""
        return next(self.parameters()).dtype

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> (B, chunk * 7), per step the 6 arm outputs then the gripper logit."""
        shared = self.mlp(state)
        arm = self.arm(shared).view(-1, self.chunk_size, ACTION_DIM - 1)
        gripper = self.gripper(shared).view(-1, self.chunk_size, 1)
        return torch.cat([arm, gripper], dim=-1).flatten(1)

    def table9_parameters(self) -> int:
        """Parameters of the two shared layers (those Table 9 prints)."""
        return sum(p.numel() for layer in (self.mlp[0], self.mlp[2]) for p in layer.parameters())


class StandardizedInputHead(nn.Module):
    """`head` on the input standardised per feature (BatchNorm1d without affine): batch statistics in training,
    running ones at inference. A random tiny backbone's query state is ~95% the same vector for every input; the
    head then sees the part that varies at unit scale instead of a few percent of it."""

    def __init__(self, head: nn.Module, hidden_size: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(hidden_size, affine=False)
        self.head = head

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """(B, hidden) -> the wrapped head's output."""
        return self.head(self.norm(state))


def build_head(
    head_type: str, hidden_size: int, chunk_size: int, width: int | None = None, input_norm: str = "none"
) -> nn.Module:
    """The head named by `VLAConfig.head_type`, behind a `StandardizedInputHead` when `input_norm` is "batch"."""
    if input_norm not in HEAD_INPUT_NORMS:
        raise ValueError(f"unknown head input norm {input_norm!r}; known: {HEAD_INPUT_NORMS}")
    if head_type == "fc_decoder":
        head: nn.Module = FCDecoderHead(hidden_size, chunk_size, width)
    elif head_type == "mlp":
        head = ActionHead(hidden_size, chunk_size, width)
    else:
        raise ValueError(f"unknown head type {head_type!r}; known: {HEAD_TYPES}")
    return StandardizedInputHead(head, hidden_size) if input_norm == "batch" else head


def refresh_input_statistics(head: nn.Module, states: list[torch.Tensor]) -> bool:
    """Recompute a `StandardizedInputHead`'s running statistics as the plain average over `states` (query states
    of training batches); False (nothing done) for a head without one."""
    if not isinstance(head, StandardizedInputHead):
        return False
    norm = head.norm
    momentum, training = norm.momentum, norm.training
    norm.reset_running_stats()
    norm.momentum = None  # cumulative average
    norm.train()
    with torch.no_grad():
        for state in states:
            norm(state.float())
    norm.momentum = momentum
    norm.train(training)
    return True


def bound_arm(chunk: torch.Tensor, activation: str, scale: float = 1.0) -> torch.Tensor:
    """(B, chunk, 7) head output -> arm dims `scale * tanh(.)` when `activation` is "tanh"; gripper logits as is."""
    if activation == "linear":
        return chunk
    if activation != "tanh":
        raise ValueError(f"unknown arm activation {activation!r}; known: {ARM_ACTIVATIONS}")
    return torch.cat([scale * torch.tanh(chunk[..., : ACTION_DIM - 1]), chunk[..., ACTION_DIM - 1 :]], dim=-1)
