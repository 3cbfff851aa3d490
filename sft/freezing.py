"""Freezing by parameter group, LoRA target presets and FAST token rows (the parameter-group table is
`datasets_build.parameter_groups`, shared with `vla train`).

Groups come from `datasets_build.vlm_families.MODULE_PATHS` (vision tower, projector, word embeddings, LLM,
lm_head). FAST `new_tokens` adds rows to the embeddings; when the embedding matrix is otherwise frozen (by a
flag or by LoRA) it is made trainable again with a gradient hook that zeroes the gradient of the old rows, and
it is excluded from weight decay (see `SFTTrainerWithExtras.get_decay_parameter_names`), so AdamW's moments
of old rows stay zero and their weights stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from datasets_build.errors import ConfigError
from datasets_build.vlm_families import MODULE_PATHS
from sft.config import LORA_PRESETS, FreezeConfig, LoraSettings


def embedding_rows(model: nn.Module) -> int:
    """Rows of the model's input embedding matrix (its token vocabulary size)."""
    return int(model.get_input_embeddings().weight.shape[0])  # type: ignore[operator]


def _has_module(model: nn.Module, path: str) -> bool:
    """Whether `model` has a submodule at dotted `path`."""
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def apply_freezing(model: nn.Module, family: str, freeze: FreezeConfig) -> list[str]:
    """Set requires_grad=False on the chosen groups and extra module paths; returns what was frozen.

    ConfigError (before any step) when a chosen group or path is absent from this model.
    """
    paths = MODULE_PATHS[family]
    chosen = {
        "vision_tower": (freeze.vision_tower, paths.vision_tower),
        "projector": (freeze.projector, paths.projector),
        "word_embeddings": (freeze.word_embeddings, paths.word_embeddings),
        "llm": (freeze.llm, paths.language_model),
        "lm_head": (freeze.lm_head, paths.lm_head),
    }
    frozen = []
    for group, (wanted, path) in chosen.items():
        if not wanted:
            continue
        if not _has_module(model, path):
            raise ConfigError(f"freeze.{group}: the {family} model has no module {path!r}")
        model.get_submodule(path).requires_grad_(False)
        frozen.append(group)
    for path in freeze.modules:
        if not _has_module(model, path):
            raise ConfigError(f"freeze.modules: the {family} model has no module {path!r}")
        model.get_submodule(path).requires_grad_(False)
        frozen.append(path)
    return frozen


def lora_targets(model: nn.Module, family: str, preset: str) -> list[str]:
    """Full names of the nn.Linear layers a preset adapts: `llm` (the language model's), `llm_vision` (plus the
    vision tower's, projector included). MoE expert weights are fused tensors, not Linear, and stay as they are."""
    if preset not in LORA_PRESETS:
        raise ConfigError(f"lora.preset: {preset!r} is not one of {', '.join(LORA_PRESETS)}")
    paths = MODULE_PATHS[family]
    roots = [paths.language_model] + ([paths.vision_tower] if preset == "llm_vision" else [])
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name.startswith(root + ".") for root in roots)
    ]
    if not names:
        raise ConfigError(f"lora.preset: no Linear layers under {roots} in this {family} model")
    return names


def apply_lora(model: nn.Module, family: str, lora: LoraSettings) -> PeftModel:
    """Wrap `model` with PEFT LoRA adapters on the preset's layers (everything else frozen)."""
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_targets(model, family, lora.preset),
        bias="none",
    )
    peft_model: PeftModel = get_peft_model(model, config)
    return peft_model


@dataclass
class RowMask:
    """Embedding matrices that train only their rows from `first_row` on (the added FAST tokens)."""

    first_row: int
    parameters: list[nn.Parameter] = field(default_factory=list)


def train_new_rows_only(model: nn.Module, first_row: int) -> RowMask:
    """Make frozen input/output embedding matrices train rows >= `first_row` only: requires_grad on, plus a
    gradient hook that zeroes the old rows. Matrices that are already trainable keep training in full."""
    mask = RowMask(first_row)
    seen: set[int] = set()
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):  # type: ignore[operator]
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or id(weight) in seen or weight.requires_grad:
            continue
        seen.add(id(weight))
        keep = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        keep[first_row:] = 1
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, keep=keep: grad * keep.to(grad.device, grad.dtype))
        mask.parameters.append(weight)
    return mask
