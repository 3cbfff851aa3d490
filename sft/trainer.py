"""`SFTTrainerWithExtras`: TRL's SFTTrainer plus what this stage needs on top of it.

- embedding rows that must not move (FAST `new_tokens` on frozen embeddings) are kept out of weight decay;
- logs carry `tokens_per_second` (from TRL's token count) beside loss and learning rate, and `loss/<task>`
  (per-task mean token loss of this rank's batches in each logged step, one extra no-grad forward on logging
  steps only) when the collator passes `task_names`;
- a seam for an extra head: `extra_loss` (an nn.Module whose `forward(model, inputs)` returns a loss added
  to the text loss; its parameters join the optimizer; `input_keys` are popped from the batch before the
  VLM forward). The omni-generation head plugs in here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from trl import SFTTrainer

from datasets_build import faults
from sft.collator import TASK_KEY
from sft.freezing import RowMask


class ExtraLoss(nn.Module):
    """Base class of an extra objective trained jointly with the text loss (e.g. a generation head)."""

    input_keys: tuple[str, ...] = ()

    def forward(self, model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:  # pragma: no cover - interface
        """The extra loss of one batch; `inputs` holds the model inputs and this loss's `input_keys`."""
        raise NotImplementedError


class SFTTrainerWithExtras(SFTTrainer):
    """SFTTrainer with a no-decay row mask, tokens/s logging and an optional extra loss."""

    def __init__(self, *args: Any, row_mask: RowMask | None = None, extra_loss: ExtraLoss | None = None, **kwargs: Any):
        self.row_mask = row_mask
        self.extra_loss = extra_loss
        super().__init__(*args, **kwargs)
        self._log_clock: tuple[float, int] = (time.perf_counter(), 0)
        self._task_losses: dict[str, list[float]] = defaultdict(list)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Reload full-model weights through `from_pretrained`, which undoes the key renaming `save_pretrained`
        applies to Qwen-VL checkpoints (Trainer's plain `load_state_dict` matches no key there and silently
        resumes from the base weights). Adapters, FSDP and sharded-index checkpoints take the Trainer's path."""
        target = model if model is not None else self.model
        weights = Path(resume_from_checkpoint) / "model.safetensors"
        if isinstance(target, PreTrainedModel) and weights.is_file() and not self.is_fsdp_enabled:
            # fp32: the periodic checkpoint holds the fp32 masters (frozen parts may be bf16: copied into them)
            saved = type(target).from_pretrained(resume_from_checkpoint, dtype=torch.float32)
            target.load_state_dict(saved.state_dict(), strict=True)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """The Trainer's, after a fault-injection point between a checkpoint's weights and its other files."""
        faults.hit("sft.model_saved")
        super()._save_optimizer_and_scheduler(output_dir)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        """Trainer's decay list minus matrices whose old rows must stay bit-identical."""
        names: list[str] = super().get_decay_parameter_names(model)
        if self.row_mask is None:
            return names
        masked = {id(p) for p in self.row_mask.parameters}
        excluded = {n for n, p in model.named_parameters() if id(p) in masked}
        return [n for n in names if n not in excluded]

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, plus the extra loss's parameters as their own group."""
        optimizer: torch.optim.Optimizer = super().create_optimizer()
        if self.extra_loss is not None and not getattr(self, "_extra_added", False):
            params = [p for p in self.extra_loss.parameters() if p.requires_grad]
            if params:
                optimizer.add_param_group({"params": params, "weight_decay": self.args.weight_decay})
            self._extra_added = True
        return optimizer

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """TRL's text loss, plus the extra loss when one is attached."""
        tasks = inputs.pop(TASK_KEY, None)
        extras = {k: inputs.pop(k) for k in (self.extra_loss.input_keys if self.extra_loss else ()) if k in inputs}
        if tasks is not None and model.training and (self.state.global_step + 1) % self._logging_every() == 0:
            self._record_task_losses(model, inputs, tasks)
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.extra_loss is None:
            return result
        extra = self.extra_loss(model, {**inputs, **extras})
        if return_outputs:
            return result[0] + extra, result[1]
        return result + extra

    def _logging_every(self) -> int:
        """The logging interval in optimizer steps."""
        steps = self.args.logging_steps
        return max(1, int(steps if steps >= 1 else steps * max(1, self.state.max_steps)))

    @torch.no_grad()
    def _record_task_losses(self, model: nn.Module, inputs: dict[str, Any], tasks: list[str]) -> None:
        """Mean token loss of each sample of the batch, gathered by task name for the next log."""
        labels = inputs["labels"]
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).logits
        shifted = labels[:, 1:]
        losses = nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), shifted, ignore_index=-100, reduction="none"
        )
        counts = (shifted != -100).sum(dim=1)
        for task, total, count in zip(tasks, losses.sum(dim=1).tolist(), counts.tolist(), strict=True):
            if count:
                self._task_losses[task or "unknown"].append(total / count)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add tokens/s since the previous log, and the per-task losses, to the training logs."""
        if "loss" in logs and self._task_losses:
            logs.update({f"loss/{task}": sum(v) / len(v) for task, v in sorted(self._task_losses.items())})
            self._task_losses.clear()
        tokens = int(getattr(self, "_total_train_tokens", 0))
        now = time.perf_counter()
        if "loss" in logs and now > self._log_clock[0]:
            logs["tokens_per_second"] = (tokens - self._log_clock[1]) / (now - self._log_clock[0])
            self._log_clock = (now, tokens)
        super().log(logs, start_time)
