"""`python -m vla train CONFIG.yaml [key=value ...]`: fine-tune a VLM into a VLA on robot data with accelerate.

A plain torch loop under `Accelerator` (DDP, DeepSpeed or FSDP via `accelerate launch` / `torchrun`; bf16 on GPU):
AdamW + a transformers LR schedule, gradient clipping, losses split into Huber and BCE, gripper accuracy, lr and
samples/s logged to tensorboard or wandb. Every `save_every` steps a complete checkpoint `checkpoint-NNNNNN/` (a
`Policy.from_pretrained` folder plus `train_state/` for resuming: optimizer, scheduler, RNG) is written under a
temporary name and renamed; all are kept for the checkpoint sweep.
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
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from datasets_build.configs import config_to_dict
from datasets_build.errors import ConfigError, DataError, OutputExistsError
from vla.card import vla_card_text
from vla.configuration_vla import VLATrainConfig
from vla.data import VLACollator
from vla.modeling_vla import VLAPolicyModel
from vla.sampling import ResumeState
from vla.train_data import image_size_check, prepare_training_data, resolve_schedule, training_record

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d{6,})$")
TRAIN_STATE = "train_state"
STEP_FILE = "step.json"
SUMMARY_FILE = "train_summary.json"


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


def format_parameter_table(rows: list[tuple[str, int, bool]]) -> str:
    """The trainable / frozen parameter groups as a fixed-width table."""
    lines = [f"{'group':<20} {'parameters':>14}  trainable"]
    lines += [f"{name:<20} {count:>14,}  {'yes' if trainable else 'FROZEN'}" for name, count, trainable in rows]
    total = sum(count for _, count, _ in rows)
    trainable_total = sum(count for _, count, trainable in rows if trainable)
    lines.append(f"{'total':<20} {total:>14,}  {trainable_total:,} trainable")
    return "\n".join(lines)


def _prepare_out(cfg: VLATrainConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.resume:
        if not cfg.overwrite:
            raise OutputExistsError(f"{out}: output folder is not empty (set overwrite=true or resume=true)")
        shutil.rmtree(out)
    return out


def _batches(loader: DataLoader, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    for batch in loader:
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _checksum(model: torch.nn.Module, device: torch.device) -> torch.Tensor:
    """One float64 number summarising every parameter (compared across ranks to prove DDP kept them in sync)."""
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i, param in enumerate(model.parameters()):
        total += param.detach().double().sum() * (1.0 + 1e-3 * (i % 97))
    return total


def train(cfg: VLATrainConfig) -> dict[str, Any]:
    """Run one training job; returns a summary (steps, checkpoints, last logged metrics, world size) and writes it,
    with the history of every logged step, to `out/train_summary.json`."""
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    # accelerate only takes its multi-process CPU (gloo) path when asked for the CPU explicitly (torchrun on CPU)
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        cpu=multi_cpu,
        mixed_precision=precision,
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
    model = VLAPolicyModel.build(cfg.model)
    if accelerator.is_main_process:
        print(format_parameter_table(model.parameter_groups()))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(
        cfg.lr_scheduler, optimizer, num_warmup_steps=schedule.warmup_steps, num_training_steps=schedule.steps
    )
    # The scheduler stays unprepared: it steps once per optimizer step whatever the number of processes.
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    unwrapped: VLAPolicyModel = accelerator.unwrap_model(model)

    if cfg.resume and existing:
        accelerator.load_state(str(existing[-1] / TRAIN_STATE))
        if accelerator.is_main_process:
            print(f"resumed from {existing[-1]} at step {start}")
    if start >= schedule.steps:
        return {"steps": start, "checkpoints": [str(p) for p in existing], "world_size": world}

    loader = DataLoader(
        data.dataset,
        batch_size=per_device,
        num_workers=cfg.data.num_workers,
        collate_fn=VLACollator(unwrapped.backbone),
        pin_memory=accelerator.device.type == "cuda",
        prefetch_factor=4 if cfg.data.num_workers > 0 else None,
    )
    recipe = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if cfg.report_to != "none":
        flat = {k: v for k, v in json.loads(json.dumps(asdict(cfg), default=str)).items() if not isinstance(v, dict)}
        accelerator.init_trackers("vla", config=flat)

    def save(step: int) -> Path:
        final = out / f"checkpoint-{step:06d}"
        staging = out / f".tmp-checkpoint-{step:06d}"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            card = vla_card_text(unwrapped.config, record, step, history[-1] if history else {})
            unwrapped.save_pretrained(staging, normalizer, recipe=recipe, atomic=False, training=record, card=card)
            position = ResumeState(step * cfg.gradient_accumulation_steps, world, cfg.data.num_workers, per_device)
            (staging / STEP_FILE).write_text(json.dumps({"step": step, "data": position.to_dict()}) + "\n")
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging / TRAIN_STATE))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
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
    bar = tqdm(
        total=schedule.steps,
        initial=start,
        desc="vla train",
        disable=not (cfg.progress and accelerator.is_main_process),
    )
    for step in range(start + 1, schedule.steps + 1):
        metrics: dict[str, torch.Tensor] = {}
        for _ in range(cfg.gradient_accumulation_steps):
            batch = next(batches)
            with accelerator.accumulate(model):
                metrics = model(batch)
                accelerator.backward(metrics["loss"])
                if accelerator.sync_gradients and cfg.grad_clip > 0:
                    accelerator.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        window_steps += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == schedule.steps:
            reduced = {k: accelerator.reduce(v.detach().float(), reduction="mean").item() for k, v in metrics.items()}
            elapsed = time.perf_counter() - window_start
            reduced["samples_per_s"] = window_steps * samples_per_step / max(elapsed, 1e-9)
            reduced["lr"] = scheduler.get_last_lr()[0]
            reduced["step"] = step
            history.append(reduced)
            accelerator.log({f"train/{k}": v for k, v in reduced.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{reduced['loss']:.4f}", acc=f"{reduced['gripper_accuracy']:.2f}")
            window_start, window_steps = time.perf_counter(), 0
        if step % schedule.save_every == 0 or step == schedule.steps:
            saved.append(save(step))
    bar.close()
    if not all(math.isfinite(h["loss"]) for h in history):
        raise DataError("training diverged (non-finite loss)", cfg.out)
    checksums = accelerator.gather(_checksum(model, accelerator.device).reshape(1)).tolist()
    accelerator.end_training()
    summary = {
        "steps": schedule.steps,
        "warmup_steps": schedule.warmup_steps,
        "samples_per_epoch": schedule.samples_per_epoch,
        "world_size": world,
        "checkpoints": [str(p) for p in saved],
        "last": history[-1] if history else {},
        "rank_parameter_checksums": checksums,
    }
    if accelerator.is_main_process:  # the full log-step history goes to the file, the summary stays short
        (out / SUMMARY_FILE).write_text(json.dumps({**summary, "history": history}, indent=2) + "\n")
    return summary
