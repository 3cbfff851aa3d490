"""`python -m vla info MODEL`: parameter counts and head widths of a VLA built on MODEL, beside Table 9.

For the paper's nine backbones the model is built from `datasets_build.vlm_families.real_config` on the meta
device (no weights, no download); any other Hub id or folder is read from its own config the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import AutoModelForImageTextToText

from datasets_build.vlm_families import PAPER_BACKBONES, PAPER_PARAMS_M, family_of, real_config
from vla.backbones import load_backbone_config
from vla.head import ActionHead, FCDecoderHead, head_width


@dataclass(frozen=True)
class Table9Row:
    """One printed row of the paper's Table 9 (widths of the first two head layers; head size in millions)."""

    params_m: int
    hidden: int
    printed_width: int
    head_size_m: float


TABLE9: dict[str, Table9Row] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": Table9Row(PAPER_PARAMS_M["Qwen/Qwen2.5-VL-3B-Instruct"], 2048, 1024, 6.58),
    "Qwen/Qwen2.5-VL-7B-Instruct": Table9Row(PAPER_PARAMS_M["Qwen/Qwen2.5-VL-7B-Instruct"], 3584, 1792, 11.6),
    "Qwen/Qwen3-VL-2B-Instruct": Table9Row(PAPER_PARAMS_M["Qwen/Qwen3-VL-2B-Instruct"], 2048, 1024, 6.58),
    "Qwen/Qwen3-VL-4B-Instruct": Table9Row(PAPER_PARAMS_M["Qwen/Qwen3-VL-4B-Instruct"], 2560, 1280, 8.02),
    "Qwen/Qwen3-VL-8B-Instruct": Table9Row(PAPER_PARAMS_M["Qwen/Qwen3-VL-8B-Instruct"], 4096, 2048, 13.92),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": Table9Row(PAPER_PARAMS_M["Qwen/Qwen3-VL-30B-A3B-Instruct"], 2048, 1024, 6.58),
    "google/paligemma-3b-pt-224": Table9Row(PAPER_PARAMS_M["google/paligemma-3b-pt-224"], 2048, 1024, 6.58),
    # printed 1502: a misprint for 1152 = 2304 / 2 (only 1152 reproduces the printed head size)
    "google/paligemma2-3b-pt-224": Table9Row(PAPER_PARAMS_M["google/paligemma2-3b-pt-224"], 2304, 1502, 7.27),
    "microsoft/kosmos-2-patch14-224": Table9Row(PAPER_PARAMS_M["microsoft/kosmos-2-patch14-224"], 2048, 1024, 6.58),
}
assert set(TABLE9) == set(PAPER_BACKBONES)


def model_info(name: str, chunk_size: int = 10) -> dict[str, Any]:
    """Counts for a VLA on `name` (a paper id uses its real config; others their own config), on the meta device."""
    config = real_config(name) if name in PAPER_BACKBONES else load_backbone_config(name)
    with torch.device("meta"):
        backbone = AutoModelForImageTextToText.from_config(config)
        hidden = int(config.get_text_config().hidden_size)
        head = ActionHead(hidden, chunk_size)
        fc_decoder = FCDecoderHead(hidden, chunk_size)
    backbone_params = sum(p.numel() for p in backbone.parameters())
    head_params = sum(p.numel() for p in head.parameters())
    info: dict[str, Any] = {
        "model": name,
        "family": family_of(config),
        "hidden": hidden,
        "head_widths": [head_width(hidden), head[2].out_features, head[4].out_features],
        "backbone_params": backbone_params,
        "head_params": head_params,
        "head_table9_layers_params": head.table9_parameters(),
        "fc_decoder_head_params": sum(p.numel() for p in fc_decoder.parameters()),
        "action_query_params": hidden,
        "total_params": backbone_params + head_params + hidden,
        "chunk_size": chunk_size,
    }
    if name in TABLE9:
        info["paper"] = asdict(TABLE9[name])
    return info


def format_info(info: dict[str, Any]) -> str:
    """Human-readable report of `model_info`, with the paper's Table 9 row when there is one."""
    w = info["head_widths"]
    lines = [
        f"model            {info['model']} ({info['family']})",
        f"LLM hidden       {info['hidden']}",
        f"head             Linear({info['hidden']},{w[0]}) ReLU Linear({w[0]},{w[1]}) ReLU Linear({w[1]},{w[2]})",
        f"backbone params  {info['backbone_params'] / 1e6:,.1f}M",
        (
            f"head params      {info['head_params'] / 1e6:.2f}M (first two layers, as Table 9 prints: "
            f"{info['head_table9_layers_params'] / 1e6:.3f}M)"
        ),
        (
            f"fc_decoder head  {info['fc_decoder_head_params'] / 1e6:.2f}M (VLM4VLA's released head, "
            "model.head_type=fc_decoder: Table 9's head size at chunk 10)"
        ),
        f"query params     {info['action_query_params']:,}",
        f"total params     {info['total_params'] / 1e6:,.1f}M",
    ]
    paper = info.get("paper")
    if paper:
        note = " (misprint for 1152)" if paper["printed_width"] == 1502 else ""
        lines.append(
            f"paper Table 9    params {paper['params_m']}M, hidden {paper['hidden']}, "
            f"Linear({paper['hidden']},{paper['printed_width']}){note}, head size {paper['head_size_m']}M"
        )
    return "\n".join(lines)
