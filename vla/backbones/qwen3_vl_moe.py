"""Qwen3-VL-30B-A3B: Qwen3-VL with a mixture-of-experts LLM; same prompt and image path as Qwen3-VL."""

from __future__ import annotations

from vla.backbones.qwen2_5_vl import QwenBackbone


class Qwen3VLMoeBackbone(QwenBackbone):
    """Qwen3-VL-MoE (128 experts, top-8); only the last hidden state is used, router logits are not."""

    family = "qwen3_vl_moe"
