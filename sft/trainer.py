"""`SFTTrainerWithExtras`: TRL's SFTTrainer plus what this stage needs on top of it.

- embedding rows that must not move (FAST `new_tokens` on frozen embeddings) are kept out of weight decay;
- logs carry `tokens_per_second` (from TRL's token count) beside loss and learning rate;
- a seam for an extra head: `extra_loss` (an nn.Module whose `forward(model, inputs)` returns a loss added
  to the text loss; its parameters join the optimizer; `input_keys` are popped from the batch before the
  VLM forward). The omni-generation head plugs in here.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from trl import SFTTrainer

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
        extras = {k: inputs.pop(k) for k in (self.extra_loss.input_keys if self.extra_loss else ()) if k in inputs}
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.extra_loss is None:
            return result
        extra = self.extra_loss(model, {**inputs, **extras})
        if return_outputs:
            return result[0] + extra, result[1]
        return result + extra

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add tokens/s since the previous log to the training logs."""
        tokens = int(getattr(self, "_total_train_tokens", 0))
        now = time.perf_counter()
        if "loss" in logs and now > self._log_clock[0]:
            logs["tokens_per_second"] = (tokens - self._log_clock[1]) / (now - self._log_clock[0])
            self._log_clock = (now, tokens)
        super().log(logs, start_time)
