"""Mixed precision for both training stages: fp32 master weights, bf16 compute, one dtype rule for inference.

Released VLMs store bf16 (Qwen-VL, PaliGemma 2) or fp32 (PaliGemma, Kosmos-2) weights, and transformers loads them
as stored (`dtype="auto"`). AdamW stepping a bf16 parameter loses every update smaller than half a bf16 step
(2^-9 of the weight, ~0.2 %): at the paper's lr 2e-5 most updates round away and the run silently trains worse.
So training loads the checkpoint as stored, then keeps every trainable parameter (and so the optimizer state) in
fp32, and runs the forward pass under bf16 autocast (`mixed_precision=bf16`). Frozen parameters receive no update,
so they may stay in the stored low precision to save memory (`frozen_dtype`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datasets_build.precision_options import DTYPE_NAMES, check_dtype_name

PRECISIONS = ("no", "bf16", "fp16")  # accelerate's mixed_precision values (compute dtype under autocast)
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
assert tuple(DTYPES) == DTYPE_NAMES
MASTER_DTYPE = torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """'fp32', 'bf16', 'fp16' (or torch's own name for any other dtype)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str, field: str) -> torch.dtype:
    """A dtype from its short name ('fp32', 'bf16', 'fp16'); one-line ConfigError naming `field` otherwise."""
    return DTYPES[check_dtype_name(name, field)]


def compute_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of an accelerate `mixed_precision` value (None: no autocast, each tensor's own dtype)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


@torch.no_grad()
def cast_parameters(model: nn.Module, frozen_dtype: torch.dtype | None = MASTER_DTYPE) -> None:
    """Trainable parameters -> fp32 masters; frozen ones -> `frozen_dtype` (None: leave them as loaded).

    Casts in place (`param.data`), so a parameter shared by two modules (a tied lm_head) stays one parameter.
    """
    for param in model.parameters():
        target = MASTER_DTYPE if param.requires_grad else frozen_dtype
        if target is not None and param.is_floating_point() and param.dtype != target:
            param.data = param.data.to(target)


def stored_dtypes(params: Iterable[nn.Parameter]) -> str:
    """The dtypes a group of parameters is held in: 'fp32', 'bf16' or e.g. 'bf16+fp32' when mixed."""
    names = sorted({dtype_name(p.dtype) for p in params})
    return "+".join(names) if names else "-"


def inference_dtype(device: str | torch.device) -> torch.dtype:
    """Weights dtype for inference: bf16 on a CUDA device that supports it (the dtype the releases are trained and
    stored in; half the memory, tensor-core speed), fp32 on CPU (most CPUs have no fast bf16 matmul, and fp32 keeps
    CPU evaluation bit-stable across machines)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def save_pretrained_as(
    model: Any, folder: str | Path, dtype: torch.dtype | None, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """`model.save_pretrained(folder)` (safetensors) with every floating weight written in `dtype` (None: as held)
    and config.json's `dtype` saying what was written (transformers records the module's dtype, fp32 masters).

    `state_dict` replaces `model.state_dict()` (weights gathered from FSDP / ZeRO shards). Tensors that share
    storage (a tied lm_head) stay one tensor after the cast, so transformers still saves them once.
    """
    state = state_dict if state_dict is not None else model.state_dict()
    if dtype is not None:
        cast: dict[tuple[int, tuple[int, ...], torch.dtype], torch.Tensor] = {}
        converted = {}
        for name, tensor in state.items():
            if tensor.is_floating_point():
                key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
                converted[name] = cast.setdefault(key, tensor.detach().to(dtype))
            else:
                converted[name] = tensor
        state = converted
    model.save_pretrained(folder, state_dict=state, safe_serialization=True)
    written = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(written) == 1:
        config = copy.deepcopy(model.config)
        config.dtype = written.pop()
        config.save_pretrained(folder)
