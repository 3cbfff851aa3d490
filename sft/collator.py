"""The batch collator: TRL's `DataCollatorForVisionLanguageModeling` (assistant-only labels, the family's
training chat template), plus the FAST `vocab_tail` id remap and an optional hook for extra columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import ProcessorMixin
from trl.chat_template_utils import get_training_chat_template, has_generation_markers
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

ROW_KEYS = ("images", "messages")
TASK_KEY = "task_names"  # per-row task names (a list of str) for per-task losses; popped before the forward
IdRemap = Callable[[torch.Tensor], torch.Tensor]


def training_chat_template(processor: ProcessorMixin) -> str | None:
    """The chat template with `{% generation %}` markers TRL swaps in for assistant-only loss (None: already has)."""
    template = processor.chat_template
    if template and has_generation_markers(template):
        return None
    result: str | None = get_training_chat_template(processor)
    return result


class SFTCollator:
    """Collate rows into model inputs with labels only on the assistant answers.

    `remap` rewrites token ids after tokenisation (FAST `vocab_tail`: placeholder `<fast_t>` ids -> the VLM
    vocabulary tail, in inputs and labels alike); `extra` collates further columns (e.g. generation targets
    for an extra head) into the batch.
    """

    def __init__(
        self,
        processor: ProcessorMixin,
        remap: IdRemap | None = None,
        extra: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
    ) -> None:
        self.inner = DataCollatorForVisionLanguageModeling(
            processor=processor,
            max_length=None,
            assistant_only_loss=True,
            chat_template=training_chat_template(processor),
        )
        self.remap = remap
        self.extra = extra

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Model inputs + labels for a list of rows; row `task`s ride along as `task_names`."""
        batch: dict[str, Any] = self.inner([{k: row[k] for k in ROW_KEYS} for row in rows])
        if self.remap is not None:
            batch["input_ids"] = self.remap(batch["input_ids"])
            labels = batch["labels"]
            batch["labels"] = torch.where(labels == -100, labels, self.remap(labels.clamp(min=0)))
        if self.extra is not None:
            batch.update(self.extra(rows))
        if all("task" in row for row in rows):
            batch[TASK_KEY] = [str(row["task"]) for row in rows]
        return batch
