"""The checkpoint folder the VLA stage loads: `save_pretrained` model + processor + resolved recipe + README
model card, written under a temporary name and renamed when complete (`datasets_build.checkpoint` contract)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import ModelCard, ModelCardData
from transformers import PreTrainedModel, ProcessorMixin

from datasets_build.checkpoint import CARD_FILE, RECIPE_FILE, CheckpointFolder
from datasets_build.outputs import refuse_protected
from datasets_build.precision import save_pretrained_as


def card_text(
    *,
    base_model: str,
    family: str,
    corpora: Sequence[dict[str, Any]],
    frozen: Sequence[str],
    table: str,
    steps: int,
    metrics: dict[str, Any],
    lora: dict[str, Any] | None = None,
    fast: dict[str, Any] | None = None,
) -> str:
    """README.md text: YAML metadata `huggingface_hub.ModelCard` parses, then what was trained on what."""
    data = ModelCardData(
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="image-text-to-text",
        tags=["vlm4vla", "sft", family],
    )
    lines = [
        f"# {family} post-trained on auxiliary robot VQA corpora",
        "",
        (
            f"Base model: `{base_model}`. Trained for {steps} optimizer steps with TRL `SFTTrainer`, loss on the "
            "assistant answers only. Load with `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor`."
        ),
        "",
        "## Corpora",
        "",
        "| corpus | path | weight | samples | dataset_card.json sha256 |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {c['name']} | `{c['path']}` | {c['weight']} | {c['samples']} | `{c['card_sha256']}` |" for c in corpora
    ]
    lines += ["", "Shard sha256s:", ""]
    for c in corpora:
        for shard, digest in c["shards"].items():
            lines.append(f"- `{c['name']}/{shard}`: `{digest}`")
    lines += ["", "## Frozen parameter groups", "", ", ".join(frozen) if frozen else "none", "", "```", table, "```"]
    if lora:
        lines += ["", "## LoRA (merged into the saved weights)", "", *(f"- {k}: {v}" for k, v in lora.items())]
    if fast:
        lines += ["", "## FAST action tokens", "", *(f"- {k}: {v}" for k, v in fast.items())]
    lines += ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in sorted(metrics.items())]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"


def write_card_files(folder: str | Path, recipe: dict[str, Any], readme: str) -> None:
    """Write the resolved recipe and the model card into an existing folder."""
    folder = Path(folder)
    (folder / RECIPE_FILE).write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    ModelCard(readme).save(folder / CARD_FILE)


def save_checkpoint_folder(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    out: str | Path,
    recipe: dict[str, Any],
    readme: str,
    extra: Callable[[Path], Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    save_dtype: torch.dtype | None = None,
) -> CheckpointFolder:
    """Write model, processor, recipe and card to a temporary sibling of `out`, check it against the contract,
    then rename it to `out` (replacing an older folder there). `extra(folder)` writes more parts (e.g. the
    omni-generation head) into the temporary folder first. `state_dict`: the full weights when they live in shards;
    `save_dtype`: the weights' dtype on disk (None: as held)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_pretrained_as(model, tmp, save_dtype, state_dict=state_dict)
        processor.save_pretrained(tmp)
        write_card_files(tmp, recipe, readme)
        if extra is not None:
            extra(tmp)
        CheckpointFolder.inspect(tmp)
        if out.exists():
            refuse_protected(out, "replace")
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CheckpointFolder.inspect(out)
