"""Backbone registry: one adapter class per VLM family, chosen from the loaded config (never from the id)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PretrainedConfig

from datasets_build.errors import ConfigError
from datasets_build.vlm_families import DEFAULT_ATTENTION, FAMILIES, family_of
from vla.action_query import add_action_query_token
from vla.backbones.base import Backbone, BackboneOptions
from vla.backbones.kosmos2 import Kosmos2Backbone
from vla.backbones.paligemma import PaliGemmaBackbone
from vla.backbones.paligemma2 import PaliGemma2Backbone
from vla.backbones.qwen2_5_vl import Qwen2_5_VLBackbone
from vla.backbones.qwen3_vl import Qwen3VLBackbone
from vla.backbones.qwen3_vl_moe import Qwen3VLMoeBackbone

BACKBONES: dict[str, type[Backbone]] = {
    cls.family: cls
    for cls in (
        Qwen2_5_VLBackbone,
        Qwen3VLBackbone,
        Qwen3VLMoeBackbone,
        PaliGemmaBackbone,
        PaliGemma2Backbone,
        Kosmos2Backbone,
    )
}
assert set(BACKBONES) == set(FAMILIES), "every family in datasets_build.vlm_families needs an adapter"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_backbone_config(name_or_path: str, revision: str | None = None) -> PretrainedConfig:
    """The model config of a Hub id (through the HF cache) or folder; ConfigError (one line) if unreadable."""
    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load backbone {name_or_path!r}: {_first_line(exc)}") from exc


def load_backbone(
    name_or_path: str,
    options: BackboneOptions | None = None,
    from_scratch: bool = False,
    revision: str | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str = "auto",
) -> tuple[Backbone, int]:
    """Load a VLM (Hub id, folder, SFT or VLA checkpoint) and add `<ActionQuery>`; returns (adapter, query id).

    `from_scratch` keeps the architecture and processor but initialises every weight randomly (paper Table 8).
    `dtype` None loads the weights as the checkpoint stores them (bf16 for most releases; training then keeps fp32
    masters of what it trains, see `datasets_build.precision`). The query token lands in the embedding rows the
    release pads past its tokenizer when there are any; otherwise the embeddings grow by one row.
    """
    config = load_backbone_config(name_or_path, revision)
    family = family_of(config)
    attention = DEFAULT_ATTENTION[family] if attn_implementation == "auto" else attn_implementation
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the processor of {name_or_path!r}: {_first_line(exc)}") from exc
    token_id = add_action_query_token(processor)
    try:
        if from_scratch:
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attention)
        else:
            model = AutoModelForImageTextToText.from_pretrained(
                name_or_path, revision=revision, dtype=dtype, attn_implementation=attention, trust_remote_code=False
            )
    except ValueError as exc:
        if "attention" not in str(exc) and "attn" not in str(exc):
            raise
        raise ConfigError(f"attn_implementation={attention!r} for {family}: {_first_line(exc)}") from exc
    if token_id >= model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(processor.tokenizer), mean_resizing=False)
    return BACKBONES[family](model, processor, options or BackboneOptions()), token_id


__all__ = ["BACKBONES", "Backbone", "BackboneOptions", "load_backbone", "load_backbone_config"]
