"""`python -m vla train CONFIG.yaml [key=value ...]`: fine-tune a VLM into a VLA on robot data with accelerate.

A plain torch loop on the engine the launch asked for (`vla.engines`: one process, DDP, FSDP2 or DeepSpeed via
`accelerate launch --config_file recipes/accelerate/X.yaml` / torchrun). Trainable parameters are fp32 master
weights whatever the checkpoint stores, the forward pass runs under bf16 autocast (`mixed_precision`, bf16 on GPU),
frozen parts may stay bf16 (`frozen_dtype`). AdamW + a transformers LR schedule, gradient clipping, losses split
into Huber and BCE, gripper accuracy, gradient norm, lr and samples/s logged to tensorboard or wandb. A non-finite
loss or gradient norm stops the run at the step it appears, before that step's update or checkpoint. Every
`save_every` steps a complete checkpoint `checkpoint-NNNNNN/` (a `Policy.from_pretrained` folder in `save_dtype`
plus `train_state/` with the fp32 masters, optimizer, scheduler and RNG for resuming) is written under a temporary
name and renamed; all are kept for the checkpoint sweep.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import yaml
from accelerate.accelerator import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch.utils.data import DataLoader
from transformers import get_scheduler

from datasets_build import faults
from datasets_build.configs import config_to_dict
from datasets_build.errors import ConfigError, DataError
from datasets_build.launch import frozen_dtype_name
from datasets_build.outputs import cleaned_if_unused, prepare_output_folder
from datasets_build.parameter_groups import format_parameter_table
from datasets_build.precision import compute_dtype, dtype_name, parse_dtype
from datasets_build.progress import progress_bar
from datasets_build.vlm_families import LAYER_CLASSES, family_of
from vla.backbones import load_backbone_config
from vla.card import vla_card_text
from vla.configuration_vla import VLATrainConfig
from vla.data import VLACollator
from vla.engines import Engine, check_engine, launched_engine, make_engine
from vla.head import StandardizedInputHead, refresh_input_statistics
from vla.modeling_vla import VLAPolicyModel
from vla.sampling import ResumeState
from vla.train_data import image_size_check, prepare_training_data, resolve_schedule, training_record

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{6,})$")
TRAIN_STATE = "train_state"
STEP_FILE = "step.json"
SUMMARY_FILE = "train_summary.json"
OUTPUT_KIND = "vla train"  # the marker kind of its run folders (datasets_build.outputs)
HEAD_STATISTICS_BATCHES = 16  # batches a standardised head input's running statistics are recomputed from


def checkpoint_dirs(out: str | Path) -> list[Path]:
    """The completed checkpoints in `out`, oldest first."""
    root = Path(out)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def _resume_state(latest: Path, start: int, cfg: VLATrainConfig, world: int, per_device: int) -> ResumeState:
    """Where the data stopped at checkpoint `latest` (step.json's "data"; older checkpoints: this run's layout)."""
    record = json.loads((latest / STEP_FILE).read_text()).get("data")
    if isinstance(record, dict):
        return ResumeState(**{k: int(v) for k, v in record.items() if k in ResumeState.__dataclass_fields__})
    return ResumeState(start * cfg.gradient_accumulation_steps, world, cfg.data.num_workers, per_device)


def _prepare_out(cfg: VLATrainConfig) -> Path:
    """The run folder, marked as `vla train`'s (overwrite replaces only a folder this command wrote)."""
    return prepare_output_folder(cfg.out, OUTPUT_KIND, cfg.overwrite, resume=cfg.resume)


def _batches(loader: DataLoader, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    for batch in loader:
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _frozen_dtype(cfg: VLATrainConfig, engine: str, precision: str) -> torch.dtype:
    """Frozen parameters' dtype (`frozen_dtype`; auto: `datasets_build.launch.frozen_dtype_name`)."""
    return parse_dtype(frozen_dtype_name(cfg.frozen_dtype, engine, precision == "bf16"), "frozen_dtype")


def _stop_if_diverged(
    accelerator: Accelerator, value: torch.Tensor | float | None, what: str, step: int, out: str
) -> None:
    """Stop every rank, before any update or checkpoint, when `value` is not finite on some rank."""
    if value is None:
        return
    bad = torch.tensor(0.0 if math.isfinite(float(value)) else 1.0, device=accelerator.device)
    if accelerator.reduce(bad, reduction="sum").item() > 0:
        raise DataError(f"training diverged: non-finite {what} at step {step}; nothing was saved for it", out)


def refresh_head_statistics(
    accelerator: Accelerator, policy: VLAPolicyModel, dataset: Any, collate: VLACollator, batch_size: int
) -> None:
    """Before a checkpoint: a `head_input_norm: batch` head's running statistics become the plain average over the
    first HEAD_STATISTICS_BATCHES batches of this process's sample order, taken with the current weights (the
    momentum average lags a backbone that is still learning). A fresh pass over the dataset: the training stream
    is not touched, so a resumed run trains bit-identically. Every rank runs it (sharded engines gather weights
    in the forward pass)."""
    if not isinstance(policy.head, StandardizedInputHead):
        return
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0, collate_fn=collate)
    states = []
    was_training = policy.training
    policy.eval()
    with torch.no_grad(), accelerator.autocast():
        for _, batch in zip(range(HEAD_STATISTICS_BATCHES), loader, strict=False):
            inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k not in ("actions", "action_mask")}
            states.append(policy.query_states(inputs).float())
    refresh_input_statistics(policy.head, states)
    policy.train(was_training)


def train_step(
    accelerator: Accelerator,
    engine: Engine,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: Iterator[dict[str, torch.Tensor]],
    accumulation: int,
    max_norm: float,
    step: int,
    where: str,
) -> tuple[dict[str, torch.Tensor], float | None]:
    """One optimizer step over `accumulation` micro-batches: forward under autocast, a divergence check before each
    backward and before the update, clipping (`max_norm` inf: measure only), AdamW, the schedule.
    Returns the last micro-batch's metrics and the gradient norm (benchmarks/gpu_check.py runs the same step)."""
    metrics: dict[str, torch.Tensor] = {}
    for micro in range(accumulation):
        batch = next(batches)
        with engine.micro_step(sync=micro == accumulation - 1):
            with accelerator.autocast():
                metrics = model(batch)
            _stop_if_diverged(accelerator, metrics["loss"].detach(), "loss", step, where)
            engine.backward(metrics["loss"])
    grad_norm = engine.clip_grad_norm(max_norm)
    _stop_if_diverged(accelerator, grad_norm, "gradient norm", step, where)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return metrics, grad_norm


def train(cfg: VLATrainConfig) -> dict[str, Any]:
    """Run one training job (see `_train`); an `out` it created and left empty is removed when it fails."""
    with cleaned_if_unused(cfg.out):  # a run that fails before writing anything leaves no empty folder
        return _train(cfg)


def _train(cfg: VLATrainConfig) -> dict[str, Any]:
    """One training job; returns a summary (steps, checkpoints, last logged metrics, world size, parameter
    groups) and writes it, with the history of every logged step, to `out/train_summary.json`."""
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    engine_name = launched_engine()
    check_engine(engine_name, cfg.model.attn_implementation)  # a missing deepspeed / flash-attn: before any load
    family = family_of(load_backbone_config(cfg.model.backbone, cfg.model.revision))
    # accelerate only takes its multi-process CPU (gloo) path when asked for the CPU explicitly (torchrun on CPU)
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    # a process that trained before (a recipe chain: SFT then VLA) keeps accelerate's state, precision included;
    # this run sets its own, as transformers' TrainingArguments does (the process group is kept)
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        cpu=multi_cpu,
        mixed_precision=precision,
        # DDP: gradients live in its communication buckets instead of beside them (4 bytes per parameter saved)
        kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)],
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=None if cfg.report_to == "none" else cfg.report_to,
        project_dir=cfg.out,
    )
    world = accelerator.num_processes
    if accelerator.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # CPU training: leave the loader workers their cores (oversubscribing starves the data path)
        cores = (os.cpu_count() or 1) // world
        torch.set_num_threads(max(1, cores - cfg.data.num_workers))
    per_device, rest = divmod(cfg.batch_size, world * cfg.gradient_accumulation_steps)
    if rest or per_device < 1:
        raise ConfigError(
            f"batch_size {cfg.batch_size} is not divisible by {world} processes x "
            f"{cfg.gradient_accumulation_steps} accumulation steps"
        )
    if cfg.model.head_input_norm == "batch" and per_device < 2:
        raise ConfigError(f"model.head_input_norm batch needs >= 2 samples per process and step, got {per_device}")
    out = _prepare_out(cfg) if accelerator.is_main_process else Path(cfg.out)
    accelerator.wait_for_everyone()
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)

    existing = checkpoint_dirs(out)
    start, resume = 0, None
    if cfg.resume and existing:
        start = int(json.loads((existing[-1] / STEP_FILE).read_text())["step"])
        resume = _resume_state(existing[-1], start, cfg, world, per_device)
    data = prepare_training_data(
        cfg,
        out,
        rank=accelerator.process_index,
        world_size=world,
        batch_size=per_device,
        main_first=accelerator.main_process_first(),
        resume=resume,
        start_step=start,
        progress=cfg.progress and accelerator.is_main_process,
    )
    normalizer = data.normalizer
    schedule = resolve_schedule(cfg, data.samples)
    notes = [note] if (note := image_size_check(cfg, data)) else []
    record = training_record(cfg, data, schedule, notes)
    if accelerator.is_main_process:
        preset = f"preset {cfg.preset} ({cfg.preset_follow}), " if cfg.preset else ""
        print(
            f"{preset}{data.sampler} sampler: {data.episodes} episodes, {data.samples or '?'} samples/epoch; "
            f"{schedule.steps} steps (warm-up {schedule.warmup_steps}, a checkpoint every {schedule.save_every})"
        )
        for line in notes:
            print(f"warning: {line}")
    compute = compute_dtype(precision)
    # fp32 masters for everything that trains; DeepSpeed keeps its own (its module runs in bf16)
    policy = VLAPolicyModel.build(
        cfg.model, frozen_dtype=_frozen_dtype(cfg, engine_name, precision), masters=engine_name != "deepspeed"
    )
    groups = policy.parameter_groups(compute)
    if accelerator.is_main_process:
        print(f"engine {engine_name} x{world}, compute {precision}, {family}")
        note = "DeepSpeed holds the fp32 master weights in its optimizer; the module runs in bf16" * (
            engine_name == "deepspeed"
        )
        print(format_parameter_table(groups, note))
    engine = make_engine(
        accelerator, engine_name, LAYER_CLASSES[family], compute, micro_batch=per_device, grad_clip=cfg.grad_clip
    )

    def make_optimizer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    model, optimizer = engine.prepare(policy, make_optimizer)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=schedule.warmup_steps, num_training_steps=schedule.steps
    )
    # The scheduler stays unprepared: it steps once per optimizer step whatever the number of processes.
    engine.register(scheduler)
    unwrapped: VLAPolicyModel = accelerator.unwrap_model(model)
    save_dtype = parse_dtype(cfg.save_dtype, "save_dtype")

    if cfg.resume and existing:
        engine.load_state(existing[-1] / TRAIN_STATE)
        if accelerator.is_main_process:
            print(f"resumed from {existing[-1]} at step {start}", flush=True)
    # a run killed after its last checkpoint trains no step on resume, but still writes its summary below

    collate = VLACollator(unwrapped.backbone)
    loader = DataLoader(
        data.dataset,
        batch_size=per_device,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=accelerator.device.type == "cuda",
        prefetch_factor=4 if cfg.data.num_workers > 0 else None,
        # the iterator draws its base seed from this generator, not from the global RNG: a resumed run creates it
        # after restoring the RNG state, and a draw there would shift every later dropout mask
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    recipe = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if cfg.report_to != "none":
        flat = {k: v for k, v in json.loads(json.dumps(asdict(cfg), default=str)).items() if not isinstance(v, dict)}
        accelerator.init_trackers("vla", config=flat)

    def save(step: int) -> Path:
        final = out / f"checkpoint-{step:06d}"
        staging = out / f".tmp-checkpoint-{step:06d}"
        refresh_head_statistics(accelerator, unwrapped, data.dataset, collate, per_device)
        weights = engine.full_state_dict()  # collective: gathers FSDP / ZeRO-3 shards to the main process
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            card = vla_card_text(unwrapped.config, record, step, history[-1] if history else {})
            unwrapped.save_pretrained(
                staging,
                normalizer,
                recipe=recipe,
                atomic=False,
                training=record,
                card=card,
                state_dict=weights,
                save_dtype=save_dtype,
            )
            position = ResumeState(step * cfg.gradient_accumulation_steps, world, cfg.data.num_workers, per_device)
            (staging / STEP_FILE).write_text(json.dumps({"step": step, "data": position.to_dict()}) + "\n")
            faults.hit("vla.weights_saved")
        accelerator.wait_for_everyone()
        engine.save_state(staging / TRAIN_STATE)  # fp32 masters + optimizer: what resume needs
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            faults.hit("vla.state_saved")
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
        accelerator.wait_for_everyone()
        return final

    model.train()
    batches = _batches(loader, accelerator.device)
    history: list[dict[str, float]] = []
    saved: list[Path] = list(existing)
    samples_per_step = cfg.batch_size
    window_start, window_steps = time.perf_counter(), 0
    max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf  # measure the norm even when not clipping
    bar = progress_bar(
        total=schedule.steps,
        initial=start,
        desc="vla train",
        unit="step",
        enabled=cfg.progress and accelerator.is_main_process,
    )
    for step in range(start + 1, schedule.steps + 1):
        metrics, grad_norm = train_step(
            accelerator,
            engine,
            model,
            optimizer,
            scheduler,
            batches,
            cfg.gradient_accumulation_steps,
            max_norm,
            step,
            cfg.out,
        )
        window_steps += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == schedule.steps:
            reduced = {k: accelerator.reduce(v.detach().float(), reduction="mean").item() for k, v in metrics.items()}
            elapsed = time.perf_counter() - window_start
            reduced["samples_per_s"] = window_steps * samples_per_step / max(elapsed, 1e-9)
            reduced["lr"] = scheduler.get_last_lr()[0]
            if grad_norm is not None:
                reduced["grad_norm"] = grad_norm
            reduced["step"] = step
            history.append(reduced)
            accelerator.log({f"train/{k}": v for k, v in reduced.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{reduced['loss']:.4f}", acc=f"{reduced['gripper_accuracy']:.2f}")
            window_start, window_steps = time.perf_counter(), 0
        if step % schedule.save_every == 0 or step == schedule.steps:
            saved.append(save(step))
        faults.hit("vla.step")
    bar.close()
    checksums = accelerator.gather(engine.checksum().reshape(1)).tolist()
    accelerator.end_training()
    summary = {
        "steps": max(start, schedule.steps),  # a resume of a longer finished run trains none
        "warmup_steps": schedule.warmup_steps,
        "samples_per_epoch": schedule.samples_per_epoch,
        "world_size": world,
        "engine": engine_name,
        "mixed_precision": precision,
        "checkpoints": [str(p) for p in saved],
        "last": history[-1] if history else {},
        "parameter_groups": [row.to_dict() for row in groups],
        "optimizer_param_dtypes": sorted({dtype_name(p.dtype) for g in optimizer.param_groups for p in g["params"]}),
        "rank_parameter_checksums": checksums,
    }
    faults.hit("vla.before_summary")
    if accelerator.is_main_process:  # the full log-step history goes to the file, the summary stays short
        (out / SUMMARY_FILE).write_text(json.dumps({**summary, "history": history}, indent=2) + "\n")
    return summary
