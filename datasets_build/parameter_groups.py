"""The parameter-group table both training stages print at the start of a run and store with it.

One grouping for `sft train` and `vla train` (paths from `datasets_build.vlm_families.MODULE_PATHS`, the most
specific path winning): `vision_tower` (without its projector, which Qwen-VL keeps inside the tower),
`projector`, `word_embeddings`, `language_model` (without the embeddings), `lm_head`, then any extra groups a
stage adds (the VLA's `action_query` and `action_head`) and `other`. Each row says how many parameters train,
the dtype they are held in (`stored`: what the optimizer steps, fp32 masters) and the dtype the forward pass
computes in (`compute`: bf16 under autocast).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from datasets_build.precision import dtype_name
from datasets_build.vlm_families import ModulePaths

BACKBONE_GROUPS = ("vision_tower", "projector", "word_embeddings", "language_model", "lm_head")
_PEFT_PREFIX = "base_model.model."


@dataclass
class GroupRow:
    """One row of the table."""

    group: str
    parameters: int
    trainable: int
    tensors: int
    stored: str  # dtype(s) the parameters are held in ("bf16+fp32" when mixed)
    compute: str  # dtype of the forward matmuls

    @property
    def frozen(self) -> int:
        """Parameters that receive no update."""
        return self.parameters - self.trainable

    def to_dict(self) -> dict[str, Any]:
        """JSON form (train_summary.json `parameter_groups`, model cards)."""
        return {**asdict(self), "frozen": self.frozen}


def backbone_prefixes(paths: ModulePaths, root: str = "") -> list[tuple[str, str]]:
    """(group, dotted prefix) pairs of a backbone, most specific first; `root` is where the backbone sits."""
    pairs = [
        ("projector", paths.projector),
        ("word_embeddings", paths.word_embeddings),
        ("vision_tower", paths.vision_tower),
        ("lm_head", paths.lm_head),
        ("language_model", paths.language_model),
    ]
    return [(group, f"{root}{prefix}") for group, prefix in pairs]


def group_of(name: str, prefixes: Sequence[tuple[str, str]]) -> str:
    """The group of a parameter name (PEFT's `base_model.model.` prefix ignored); 'other' when none matches."""
    name = name.removeprefix(_PEFT_PREFIX)
    for group, prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return group
    return "other"


def parameter_groups(
    model: nn.Module, prefixes: Sequence[tuple[str, str]], compute: torch.dtype | None = None
) -> list[GroupRow]:
    """One row per group holding parameters (shared tensors counted once): the backbone groups, the extra groups of
    `prefixes` in their order, then 'other'.

    `compute` is the autocast dtype of the run (None: each group computes in its stored dtype).
    """
    extra = [group for group, _ in prefixes if group not in BACKBONE_GROUPS]
    order = [*BACKBONE_GROUPS, *dict.fromkeys(extra), "other"]
    members: dict[str, list[nn.Parameter]] = {group: [] for group in order}
    for name, param in model.named_parameters():  # named_parameters() yields a shared tensor once
        members[group_of(name, prefixes)].append(param)
    rows = []
    for group in order:
        params = members[group]
        if not params:
            continue
        stored = sorted({dtype_name(p.dtype) for p in params})
        rows.append(
            GroupRow(
                group=group,
                parameters=sum(_numel(p) for p in params),
                trainable=sum(_numel(p) for p in params if p.requires_grad),
                tensors=len(params),
                stored="+".join(stored),
                compute=dtype_name(compute) if compute is not None else "+".join(stored),
            )
        )
    return rows


def _numel(param: nn.Parameter) -> int:
    """Elements of a parameter, also when DeepSpeed ZeRO-3 has partitioned it away (`ds_numel`)."""
    return int(getattr(param, "ds_numel", param.numel()))


def format_parameter_table(rows: Sequence[GroupRow], note: str = "") -> str:
    """The rows as fixed-width text, with totals (and an optional note line)."""
    lines = [f"{'group':<16} {'parameters':>14} {'trainable':>14}  {'stored':<10} {'compute':<8}"]
    for row in rows:
        state = f"{row.trainable:,}" if row.trainable else "FROZEN"
        lines.append(f"{row.group:<16} {row.parameters:>14,} {state:>14}  {row.stored:<10} {row.compute:<8}")
    total = sum(r.parameters for r in rows)
    trainable = sum(r.trainable for r in rows)
    lines.append(f"{'total':<16} {total:>14,} {trainable:>14,}")
    if note:
        lines.append(note)
    return "\n".join(lines)
