"""Per-GPU memory of full fine-tuning a VLA under DDP, ZeRO-2 and ZeRO-3 / FSDP, estimated from the real config.

`python -m vla info --memory` prints it for the paper's backbones so that users pick an engine before they
launch. The model is built on the meta device from `datasets_build.vlm_families.real_config` (no download), the
precision is the one `vla train` uses (fp32 master weights, fp32 gradients and AdamW moments for every trainable
parameter, bf16 compute), the batch is the paper's (CALVIN: 128 over 8 GPUs = 16 per GPU).

Per trainable parameter (Rajbhandari et al., ZeRO, 2020, with K = 12 bytes of fp32 optimizer state; an untied
lm_head, which the VLA never uses, is frozen: 2 B on every GPU, or 4 B / N when sharded):
- DDP: masters 4 + gradients 4 + moments 8 = 16 B on every GPU, + 2 B of bf16 weight copies autocast caches
  during a step (DDP's gradient buckets are views of the gradients: `gradient_as_bucket_view`).
- ZeRO-2: bf16 weights 2 B on every GPU; bf16 gradients 2 B and fp32 masters + moments 12 B sharded over N GPUs.
- ZeRO-3 / FSDP: everything sharded, 16 B / N (ZeRO-3: 2 + 2 + 12; FSDP2 here: 4 + 4 + 8), plus the units
  gathered in bf16 while they compute (the root unit and two layer units, with prefetch).
Activations per layer (Korthikanti et al., 2022): 34 s b h bytes with 16-bit activations and fused attention (no
s^2 term with SDPA / flash attention), for the LLM over its sequence and for the vision tower over its patches;
with gradient checkpointing each layer keeps its input (2 s b h bytes) plus one layer's full set. Estimates: the
CUDA context, the allocator's fragmentation and the data pipeline come on top (budget ~5-10 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, PretrainedConfig

from datasets_build.vlm_families import IMAGE_TOKENS_224, LAYER_CLASSES, PAPER_BACKBONES, family_of, real_config
from vla.backbones import load_backbone_config
from vla.head import ActionHead

GIB = 1024**3
PROMPT_TEXT_TOKENS = 48  # prompt text around the image tokens (Qwen's full chat scheme with a CALVIN instruction)
PAPER_BATCH = 128  # CALVIN's global batch (Bridge and LIBERO: 512)
PAPER_GPUS = 8
# patches each vision tower encodes for one 224x224 image (Qwen3-VL's processor upsamples it to 256x256)
VISION_PATCHES = {
    "qwen2_5_vl": 256,
    "qwen3_vl": 256,
    "qwen3_vl_moe": 256,
    "paligemma": 256,
    "paligemma2": 256,
    "kosmos2": 257,
}


@dataclass(frozen=True)
class MemoryEstimate:
    """One backbone's per-GPU memory (GiB) for full fine-tuning at `per_gpu_batch`."""

    model: str
    params: int
    gpus: int
    per_gpu_batch: int
    gradient_checkpointing: bool
    activations_gib: float
    ddp_gib: float
    zero2_gib: float
    zero3_fsdp_gib: float


def _layers_and_width(config: PretrainedConfig) -> tuple[int, int]:
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "depth", None) or config.layers
    width = getattr(config, "hidden_size", None) or config.embed_dim
    return int(layers), int(width)


def _activations(layers: int, width: int, tokens: int, batch: int, checkpointing: bool) -> float:
    """Bytes of activations kept for backward by `layers` transformer layers."""
    per_layer = 34 * tokens * batch * width
    if checkpointing:
        return layers * 2 * tokens * batch * width + per_layer
    return layers * per_layer


def estimate(
    name: str,
    gpus: int = PAPER_GPUS,
    batch: int = PAPER_BATCH,
    gradient_checkpointing: bool = False,
    chunk_size: int = 10,
) -> MemoryEstimate:
    """The estimate for `name` (a paper id uses its real config; another id or folder its own config)."""
    config = real_config(name) if name in PAPER_BACKBONES else load_backbone_config(name)
    family = family_of(config)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
        text = config.get_text_config()
        head = ActionHead(int(text.hidden_size), chunk_size)
    params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in head.parameters())
    lm_head = model.get_output_embeddings().weight
    frozen = 0 if lm_head is model.get_input_embeddings().weight else lm_head.numel()  # an untied head is unused
    trainable = params - frozen
    units = [m for m in model.modules() if type(m).__name__ in LAYER_CLASSES[family]]
    unit_params = [sum(p.numel() for p in u.parameters()) for u in units]
    root = params - sum(unit_params)
    per_gpu = max(1, batch // gpus)
    llm_layers, llm_width = _layers_and_width(text)
    vision_layers, vision_width = _layers_and_width(config.vision_config)
    sequence = IMAGE_TOKENS_224[family] + PROMPT_TEXT_TOKENS
    activations = _activations(llm_layers, llm_width, sequence, per_gpu, gradient_checkpointing)
    activations += _activations(vision_layers, vision_width, VISION_PATCHES[family], per_gpu, gradient_checkpointing)
    gathered = 2 * (root + 2 * max(unit_params, default=0))
    return MemoryEstimate(
        model=name,
        params=params,
        gpus=gpus,
        per_gpu_batch=per_gpu,
        gradient_checkpointing=gradient_checkpointing,
        activations_gib=activations / GIB,
        ddp_gib=(18 * trainable + 2 * frozen + activations) / GIB,
        zero2_gib=(2 * params + 14 * trainable / gpus + activations) / GIB,
        zero3_fsdp_gib=(16 * trainable / gpus + 4 * frozen / gpus + gathered + activations) / GIB,
    )


def memory_table(estimates: list[MemoryEstimate]) -> str:
    """Markdown table of estimates (the README's memory table)."""
    first = estimates[0]
    checkpointing = ", gradient checkpointing" if first.gradient_checkpointing else ""
    title = (
        f"Per-GPU GiB, full fine-tuning, {first.gpus} GPUs x batch {first.per_gpu_batch}{checkpointing} "
        "(fp32 masters + AdamW, bf16 compute; activations included):"
    )
    lines = [
        title,
        "",
        "| backbone | params | activations | DDP | ZeRO-2 | ZeRO-3 / FSDP |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {e.model} | {e.params / 1e9:.2f}B | {e.activations_gib:.1f} | {e.ddp_gib:.1f} | "
        f"{e.zero2_gib:.1f} | {e.zero3_fsdp_gib:.1f} |"
        for e in estimates
    ]
    return "\n".join(lines)


def estimates_json(estimates: list[MemoryEstimate]) -> list[dict[str, Any]]:
    """The estimates as JSON rows."""
    return [asdict(e) for e in estimates]
