"""README.md model card of a VLA checkpoint: what was trained on what, how, and where it departs from the paper.

Written into every checkpoint by `vla train` from the policy config and the run's training record (the same
record `vla_config.json` keeps under "training"), with YAML metadata `huggingface_hub.ModelCard` parses.
"""

from __future__ import annotations

import json
from typing import Any

from huggingface_hub import ModelCardData

from vla.configuration_vla import VLAConfig


def _rows(values: dict[str, Any]) -> list[str]:
    return [f"| {k} | {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v} |" for k, v in values.items()]


def vla_card_text(config: VLAConfig, training: dict[str, Any], step: int, metrics: dict[str, Any]) -> str:
    """The card's Markdown (front matter + sections) for a checkpoint at `step`."""
    preset = training.get("preset") or {}
    data = training.get("data") or {}
    schedule = training.get("schedule") or {}
    tags = ["vlm4vla", "vla", "robotics"] + ([preset["name"]] if preset.get("name") else [])
    meta = ModelCardData(base_model=config.backbone, library_name="transformers", tags=tags)
    lines = [
        f"# VLM4VLA policy on `{config.backbone}`",
        "",
        (
            f"One learnable `<ActionQuery>` token and a `{config.head_type}` head on the VLM's last hidden state, "
            f"predicting {config.chunk_size} actions (6 relative end-effector dims + gripper, 1 = open) from one "
            f"image and an instruction. Checkpoint at step {step}. Load with "
            "`vla.Policy.from_pretrained(folder_or_id)`."
        ),
        "",
        "## Preset",
        "",
    ]
    if preset:
        lines += [
            (
                f"`{preset['name']}` ({preset['summary']}), following the {preset['follow']} where the paper's "
                "text and its released code disagree:"
            ),
            "",
            "| setting | taken | code | paper | note |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {c['name']} | {c['taken']} | `{json.dumps(c['code'])}` | `{json.dumps(c['paper'])}` | {c['note']} |"
            for c in preset.get("choices", [])
        ]
    else:
        lines.append("none (every setting as the recipe states it)")
    lines += ["", "## Data", "", "| | |", "| --- | --- |", *_rows(data), "", "## Schedule", "", "| | |"]
    lines += ["| --- | --- |", *_rows(schedule), "", "## Policy", "", "| | |", "| --- | --- |"]
    lines += _rows(
        {
            k: getattr(config, k)
            for k in (
                "chunk_size",
                "image_size",
                "prompt_scheme",
                "normalization",
                "action_clip",
                "head_type",
                "arm_activation",
                "gripper_loss_weight",
                "freeze_vision_tower",
                "freeze_word_embeddings",
                "eval_sim_options",
            )
        }
    )
    deviations = training.get("deviations") or []
    lines += ["", "## Deviations from the paper's code", ""]
    lines += [f"- {d}" for d in deviations] or ["none recorded"]
    if metrics:
        lines += ["", "## Last logged metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return f"---\n{meta.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
