"""A tiny VLA checkpoint made by code (random head, tiny Kosmos-2 from the local HF cache), for serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_BACKBONE = "microsoft/kosmos-2-patch14-224"


def tiny_checkpoint(folder: Path, chunk_size: int = 2) -> Path:
    """Save an untrained VLM4VLA policy (chunk `chunk_size`) under `folder`; deterministic for a given seed."""
    import torch

    from datasets_build.tiny_models import install_tiny_backbones
    from vla.configuration_vla import VLAConfig
    from vla.modeling_vla import VLAPolicyModel
    from vla.normalization import ActionNormalizer

    install_tiny_backbones(ids=[TINY_BACKBONE])
    torch.manual_seed(0)
    model = VLAPolicyModel.build(VLAConfig(backbone=TINY_BACKBONE, chunk_size=chunk_size))
    stats = {"action": {"q01": [-0.02] * 6 + [0.0], "q99": [0.03] * 6 + [1.0]}}
    return model.save_pretrained(folder, ActionNormalizer.from_stats(stats))


def frames(count: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """`count` random uint8 (size, size, 3) images."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
