"""Paper Eq. 1: Huber on the 6 relative end-effector dims + BCE on the gripper (1 = open), over the chunk.

Chunk steps past the end of the episode (or language window) are masked out of every term.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from datasets_build.actions import ARM, GRIPPER


def action_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    huber_delta: float = 1.0,
    arm_weight: float = 1.0,
    gripper_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """prediction (B, chunk, 7): normalised arm dims + gripper logit; target (B, chunk, 7): normalised arm dims +
    gripper in {0, 1}; mask (B, chunk) bool. Returns loss, huber, bce and gripper_accuracy (scalars)."""
    valid = mask.to(prediction.dtype)
    steps = valid.sum().clamp(min=1.0)
    huber = F.huber_loss(prediction[..., ARM], target[..., ARM], reduction="none", delta=huber_delta).mean(-1)
    huber = (huber * valid).sum() / steps
    logits = prediction[..., GRIPPER]
    gripper = target[..., GRIPPER]
    bce = (F.binary_cross_entropy_with_logits(logits, gripper, reduction="none") * valid).sum() / steps
    with torch.no_grad():
        correct = ((logits > 0) == (gripper > 0.5)).to(prediction.dtype)
        accuracy = (correct * valid).sum() / steps
    return {
        "loss": arm_weight * huber + gripper_weight * bce,
        "huber": huber.detach(),
        "bce": bce.detach(),
        "gripper_accuracy": accuracy,
    }
