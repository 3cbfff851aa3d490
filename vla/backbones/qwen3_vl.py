"""Qwen3-VL (2B, 4B, 8B): the Qwen prompt schemes; 16 px patches, the processor upsamples 224 to 256."""

from __future__ import annotations

from vla.backbones.qwen2_5_vl import QwenBackbone


class Qwen3VLBackbone(QwenBackbone):
    """Qwen3-VL dense models (DeepStack mergers live inside `model.visual`)."""

    family = "qwen3_vl"
