"""How a `vla train` run is distributed: the engine its launch asked for, and what each engine does differently.

The engine comes from the launcher, as accelerate sets it (`datasets_build.launch`): `accelerate launch
--config_file recipes/accelerate/{ddp,zero2,zero3,fsdp}.yaml -m vla train ...` (or torchrun with the same
ACCELERATE_* / FSDP_* variables). Every engine trains fp32 master weights with bf16 compute
(`datasets_build.precision`):

- `single`, `ddp`, `deepspeed`: accelerate prepares, saves (`save_state`) and gathers (`get_state_dict`) the model.
  DeepSpeed keeps the fp32 masters in its optimizer and runs the module in bf16.
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) applied here: one unit per decoder layer and vision block of
  the family (`datasets_build.vlm_families.LAYER_CLASSES`), one root unit for the rest; sharded fp32 masters,
  bf16 all-gathers and fp32 gradient reduction (`MixedPrecisionPolicy`). Sharding here rather than in accelerate
  lets one code path run on GPUs (nccl; accelerate sees an FSDP module and leaves it alone) and on CPUs (gloo),
  where accelerate 1.x offers no FSDP. Its resume state is a sharded `torch.distributed.checkpoint` folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.accelerator import Accelerator
from torch import nn

from datasets_build.errors import ConfigError
from datasets_build.launch import ENGINES, check_launch, launched_engine
from datasets_build.precision_options import check_attn_implementation

__all__ = ["ENGINES", "AccelerateEngine", "Engine", "Fsdp2Engine", "check_engine", "launched_engine", "make_engine"]


OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def check_engine(engine: str, attn_implementation: str, env: Mapping[str, str] | None = None) -> None:
    """Everything an engine or attention kernel needs, checked before any model is loaded (one-line errors)."""
    check_attn_implementation(attn_implementation, "model.attn_implementation")
    check_launch(engine, attn_implementation, env)


SCHEDULER_STATE = "scheduler.json"
LEGACY_SCHEDULER_STATE = "custom_checkpoint_0.pkl"  # accelerate's register_for_checkpointing file (older states)


def save_scheduler(scheduler: Any, folder: Path) -> None:
    """The LR scheduler's state as JSON beside the train state (plain numbers: nothing to unpickle on resume)."""
    if scheduler is not None:
        (folder / SCHEDULER_STATE).write_text(json.dumps(scheduler.state_dict(), default=str))


def load_scheduler(scheduler: Any, folder: Path) -> None:
    """Restore `save_scheduler`'s file; a state written before it holds accelerate's pickle, read tensors-only."""
    if scheduler is None:
        return
    if (folder / SCHEDULER_STATE).is_file():
        scheduler.load_state_dict(json.loads((folder / SCHEDULER_STATE).read_text()))
    elif (folder / LEGACY_SCHEDULER_STATE).is_file():
        scheduler.load_state_dict(torch.load(folder / LEGACY_SCHEDULER_STATE, map_location="cpu", weights_only=True))


class AccelerateEngine:
    """`single`, `ddp` and `deepspeed`: accelerate prepares, accumulates, saves and gathers."""

    def __init__(self, accelerator: Accelerator, name: str, micro_batch: int = 1, grad_clip: float = 0.0) -> None:
        self.accelerator = accelerator
        self.name = name
        self.micro_batch = micro_batch
        self.grad_clip = grad_clip
        self.model: nn.Module | None = None
        self.scheduler: Any = None
        self.optimizer: torch.optim.Optimizer | None = None

    def prepare(self, model: nn.Module, make_optimizer: OptimizerFactory) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Optimizer over the trainable parameters, then `accelerator.prepare` (DDP / DeepSpeed wrapping)."""
        if self.name == "deepspeed":
            # accelerate fills DeepSpeed's "auto" batch only from a prepared DataLoader (ours is not: every rank
            # reads its own episodes) and its "auto" clipping with 1.0: both come from the run's config instead.
            config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            config["train_micro_batch_size_per_gpu"] = self.micro_batch
            config["gradient_clipping"] = self.grad_clip
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        return self.model, self.optimizer

    def register(self, scheduler: Any) -> None:
        """Checkpoint `scheduler` with the train state (as JSON: accelerate would reload it with full unpickling)."""
        self.scheduler = scheduler

    @contextlib.contextmanager
    def micro_step(self, sync: bool) -> Iterator[None]:
        """One forward/backward of a gradient-accumulation cycle (`sync`: its last one)."""
        with self.accelerator.accumulate(self.model):
            yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward pass (accelerate scales by the accumulation steps; DeepSpeed also steps here)."""
        self.accelerator.backward(loss)

    def clip_grad_norm(self, max_norm: float) -> float | None:
        """Clip the gradients' global norm to `max_norm` (inf: measure only); returns the norm before clipping
        (None when DeepSpeed, which clips inside its step, has not reported one)."""
        params = [p for p in self.model.parameters() if p.requires_grad]  # type: ignore[union-attr]
        norm = self.accelerator.clip_grad_norm_(params, max_norm)
        return float(norm) if norm is not None else None

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The whole model's weights on the main process (collective: call on every rank)."""
        state: dict[str, torch.Tensor] = self.accelerator.get_state_dict(self.model)
        return state if self.accelerator.is_main_process else None

    def save_state(self, folder: Path) -> None:
        """Resume state: fp32 masters, optimizer, scheduler, RNG (accelerate's layout; DeepSpeed's for ZeRO)."""
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            save_scheduler(self.scheduler, folder)

    def load_state(self, folder: Path) -> None:
        """Restore what `save_state` wrote (tensors loaded with `weights_only=True`, the scheduler from JSON)."""
        self.accelerator.load_state(str(folder))
        load_scheduler(self.scheduler, folder)

    def checksum(self) -> torch.Tensor:
        """One float64 over every parameter (equal on every rank when the replicas agree)."""
        model = self.accelerator.unwrap_model(self.model)
        params = list(model.parameters())
        gathered: Any = contextlib.nullcontext()
        if self.name == "deepspeed" and any(hasattr(p, "ds_id") for p in params):  # ZeRO-3 partitions parameters
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters(params)
        with gathered:
            return _checksum(params, self.accelerator.device)


class Fsdp2Engine:
    """`fsdp`: FSDP2 sharding by the family's layer classes, the same on nccl and gloo."""

    name = "fsdp"

    def __init__(
        self,
        accelerator: Accelerator,
        layer_classes: tuple[str, ...],
        compute_dtype: torch.dtype | None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.accelerator = accelerator
        override = [c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip()]
        self.layer_classes = tuple(override) or layer_classes
        self.compute_dtype = compute_dtype
        self.reshard_after_forward = env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("true", "1")
        self.offload = env.get("FSDP_OFFLOAD_PARAMS", "false").lower() in ("true", "1")
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: Any = None
        self.accumulation_steps = accelerator.gradient_accumulation_steps
        self.sync_gradients = True

    def prepare(self, model: nn.Module, make_optimizer: OptimizerFactory) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Shard each layer-class module, then the root; the optimizer is made over the sharded parameters."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        dtypes = {p.dtype for p in model.parameters()}
        if len(dtypes) > 1:
            raise ConfigError(f"FSDP needs one parameter dtype, got {sorted(map(str, dtypes))} (set frozen_dtype=fp32)")
        mesh = init_device_mesh(self.accelerator.device.type, (self.accelerator.num_processes,))
        policy = MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32)
        offload = CPUOffloadPolicy() if self.offload else OffloadPolicy()
        kwargs: dict[str, Any] = {"mesh": mesh, "mp_policy": policy, "offload_policy": offload}
        units = [m for m in model.modules() if type(m).__name__ in self.layer_classes]
        if not units:
            raise ConfigError(f"FSDP: the model has none of the layer classes {list(self.layer_classes)} to shard")
        for unit in units:
            fully_shard(unit, reshard_after_forward=self.reshard_after_forward, **kwargs)
        fully_shard(model, reshard_after_forward=self.reshard_after_forward, **kwargs)
        self.model = model
        self.optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
        return model, self.optimizer

    def register(self, scheduler: Any) -> None:
        """Checkpoint `scheduler` with the train state."""
        self.scheduler = scheduler

    @contextlib.contextmanager
    def micro_step(self, sync: bool) -> Iterator[None]:
        """Reduce-scatter gradients only on the last micro-step of an accumulation cycle."""
        self.sync_gradients = sync
        self.model.set_requires_gradient_sync(sync)  # type: ignore[union-attr, operator]
        yield

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the micro-step's share of the loss."""
        (loss / self.accumulation_steps).backward()

    def clip_grad_norm(self, max_norm: float) -> float | None:
        """Global gradient norm across shards (clipped to `max_norm`; inf: measure only)."""
        params = [p for p in self.model.parameters() if p.requires_grad]  # type: ignore[union-attr]
        norm: Any = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Unsharded weights gathered to the main process's CPU (collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state: Any = get_model_state_dict(self.model, options=options)  # type: ignore[arg-type]
        return state if self.accelerator.is_main_process else None

    def save_state(self, folder: Path) -> None:
        """Sharded model + optimizer (torch.distributed.checkpoint, one file per rank) and the scheduler."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)  # type: ignore[arg-type]
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))
        if self.accelerator.is_main_process:
            save_scheduler(self.scheduler, folder)

    def load_state(self, folder: Path) -> None:
        """Restore what `save_state` wrote (same world size or not: DCP reshards)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)  # type: ignore[arg-type]
        state: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
        dcp.load(state, checkpoint_id=str(folder))
        set_state_dict(
            self.model,  # type: ignore[arg-type]
            self.optimizer,  # type: ignore[arg-type]
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )
        load_scheduler(self.scheduler, folder)

    def checksum(self) -> torch.Tensor:
        """One float64 over the unsharded parameters (every rank all-gathers every shard)."""
        params = [p.full_tensor() if hasattr(p, "full_tensor") else p for p in self.model.parameters()]  # type: ignore[union-attr]
        return _checksum(params, self.accelerator.device)


Engine = AccelerateEngine | Fsdp2Engine


def make_engine(
    accelerator: Accelerator,
    name: str,
    layer_classes: tuple[str, ...],
    compute_dtype: torch.dtype | None,
    micro_batch: int = 1,
    grad_clip: float = 0.0,
) -> Engine:
    """The engine object for `name` (one of ENGINES); `micro_batch` per process and `grad_clip` tell DeepSpeed."""
    if name == "fsdp":
        return Fsdp2Engine(accelerator, layer_classes, compute_dtype)
    return AccelerateEngine(accelerator, name, micro_batch, grad_clip)


@torch.no_grad()
def _checksum(params: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i, param in enumerate(params):
        total += param.detach().double().sum().to(device) * (1.0 + 1e-3 * (i % 97))
    return total
