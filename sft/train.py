"""`train`: the SFT stage end to end (recipe stage kind `sft_train`).

Order matters for failing fast: the output folder, then the shard sets (cards, sha256), then the model and
its chat template, then freezing/LoRA/FAST, all before the first step. The trainer writes resumable
checkpoints to `output_dir/checkpoints` every `save_steps` (keeping `save_total_limit`), each with the recipe
and a card; the final checkpoint folder `output_dir/final` is written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.state import PartialState
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from trl import SFTConfig

from datasets_build import faults
from datasets_build.checkpoint import FAST_TOKENIZER_DIR
from datasets_build.configs import config_to_dict
from datasets_build.errors import ConfigError
from datasets_build.fast import FastTokenizer
from datasets_build.launch import check_launch, frozen_dtype_name, launched_engine
from datasets_build.outputs import cleaned_if_unused, prepare_output_folder
from datasets_build.parameter_groups import GroupRow, backbone_prefixes, format_parameter_table, parameter_groups
from datasets_build.precision import cast_parameters, dtype_name, parse_dtype
from datasets_build.progress import on_terminal
from datasets_build.shards import CARD_NAME, fingerprint_path, sha256_file
from datasets_build.vlm_families import LAYER_CLASSES, MODULE_PATHS
from sft.action_tokens import FastSetup, prepare_fast
from sft.card import card_text, save_checkpoint_folder, write_card_files
from sft.checkpoints import TRAINER_STATE, mark_complete, resume_checkpoint, steps_done
from sft.collator import SFTCollator
from sft.config import REPORT_TO, SFTTrainConfig
from sft.data import OpenedSource, open_sources, stream_dataset
from sft.freezing import RowMask, apply_freezing, apply_lora, train_new_rows_only
from sft.model import LoadedModel, load_model
from sft.omni_head import HEAD_DIR, OmniGenerationHead, add_query_tokens, collate_targets
from sft.trainer import ExtraLoss, SFTTrainerWithExtras

CHECKPOINTS = "checkpoints"
FINAL = "final"
SUMMARY_FILE = "train_summary.json"
OUTPUT_KIND = "sft train"  # the marker kind of its run folders (datasets_build.outputs)


@dataclass
class TrainingRun:
    """Everything `build_trainer` set up: the trainer and the facts the model card records."""

    cfg: SFTTrainConfig
    trainer: SFTTrainerWithExtras
    loaded: LoadedModel
    sources: list[OpenedSource]
    frozen: list[str]
    table: str
    fast: FastSetup | None
    resume_from: str | None
    corpora: list[dict[str, Any]] = field(default_factory=list)
    groups: list[GroupRow] = field(default_factory=list)


def check_output_dir(cfg: SFTTrainConfig) -> Path:
    """The run folder: refuse a non-empty one unless resuming or overwriting (then cleared)."""
    return prepare_output_folder(cfg.output_dir, OUTPUT_KIND, cfg.overwrite, resume=cfg.resume)


def sft_arguments(cfg: SFTTrainConfig, checkpoints: Path) -> SFTConfig:
    """TRL `SFTConfig` from the run config: assistant-only loss, no truncation (image tokens must stay whole)."""
    t = cfg.trainer
    if t.report_to not in REPORT_TO:
        raise ConfigError(f"trainer.report_to: {t.report_to!r} is not one of {', '.join(REPORT_TO)}")
    if t.max_steps < 1:
        raise ConfigError(f"trainer.max_steps: must be >= 1, got {t.max_steps}")
    return SFTConfig(
        output_dir=str(checkpoints),
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        max_grad_norm=t.max_grad_norm,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_steps=t.logging_steps,
        report_to=[] if t.report_to == "none" else [t.report_to],
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.bf16,
        activation_checkpointing=t.activation_checkpointing,
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=t.dataloader_num_workers,
        assistant_only_loss=True,
        max_length=None,
        remove_unused_columns=False,
        disable_tqdm=not on_terminal(),  # off a terminal the log lines stay (PrinterCallback), the bar goes
    )


def corpora_provenance(sources: list[OpenedSource]) -> list[dict[str, Any]]:
    """Per shard set: name, path, weight, samples, shard sha256s and the sha256 of its dataset_card.json."""
    out = []
    for source in sources:
        entry = source.provenance()
        card = source.shard_set.root / CARD_NAME
        entry["card_sha256"] = sha256_file(card) if card.is_file() else ""
        out.append(entry)
    return out


class CardOnSave(TrainerCallback):
    """Writes the resolved recipe and a model card into every periodic checkpoint (main process only)."""

    def __init__(self, run: TrainingRun) -> None:
        self.run = run

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Called by the Trainer right after it wrote `checkpoint-<step>`."""
        if not state.is_world_process_zero:
            return
        folder = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            faults.hit("sft.checkpoint_saved")
            metrics = dict(state.log_history[-1]) if state.log_history else {}
            write_card_files(folder, config_to_dict(self.run.cfg), readme_for(self.run, state.global_step, metrics))
            write_extras(self.run, folder)
            mark_complete(folder, state.global_step)  # last: a resume trusts only marked checkpoints

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Called after every optimizer step, before that step's checkpoint (a fault-injection point)."""
        faults.hit("sft.step")


def save_fast_tokenizer(source: str, folder: Path) -> None:
    """Copy the FAST tokenizer (a folder's files, or a Hub id's) into `folder`, so the checkpoint decodes its own
    answers wherever it goes."""
    if Path(source).is_dir():
        shutil.copytree(source, folder, dirs_exist_ok=True)
    else:
        FastTokenizer.from_pretrained(source).save_pretrained(folder)


def write_extras(run: TrainingRun, folder: Path) -> None:
    """The parts a checkpoint needs besides model, processor and card: the omni head (the Trainer saves its
    optimizer state, not its weights) and the FAST tokenizer."""
    head = run.trainer.extra_loss
    if isinstance(head, OmniGenerationHead):
        head.save_pretrained(folder / HEAD_DIR, head.query_tokens)
    if run.cfg.fast.tokenizer:
        save_fast_tokenizer(run.cfg.fast.tokenizer, folder / FAST_TOKENIZER_DIR)


def readme_for(run: TrainingRun, steps: int, metrics: dict[str, Any]) -> str:
    """The model card of `run` after `steps` steps."""
    return card_text(
        base_model=run.cfg.model,
        family=run.loaded.family,
        corpora=run.corpora,
        frozen=run.frozen,
        table=run.table,
        steps=steps,
        metrics=metrics,
        lora=config_to_dict(run.cfg.lora) if run.cfg.lora.enabled else None,
        fast=fast_card_entry(run),
    )


def fast_card_entry(run: TrainingRun) -> dict[str, Any] | None:
    """The card's FAST section: the mapping, and which tokenizer (source, fingerprint, folder in the checkpoint)."""
    if run.fast is None:
        return None
    source = run.cfg.fast.tokenizer
    entry: dict[str, Any] = {**run.fast.describe(), "tokenizer": source, "tokenizer_folder": f"{FAST_TOKENIZER_DIR}/"}
    if Path(source).is_dir():
        entry["tokenizer_fingerprint"] = fingerprint_path(source)["fingerprint"]
    return entry


def build_trainer(
    cfg: SFTTrainConfig,
    extra_loss: ExtraLoss | None = None,
    verbose: bool = True,
    loaded: LoadedModel | None = None,
) -> TrainingRun:
    """Check inputs and set up the trainer (no step taken); `extra_loss` is the seam for an extra head; `loaded`
    is a model already in memory in place of loading `cfg.model` (benchmarks/gpu_check.py: real-size random)."""
    out = Path(cfg.output_dir)
    engine = launched_engine()
    check_launch(engine, cfg.attn_implementation)  # a missing deepspeed / flash-attn: before any model load
    if cfg.lora.enabled and (engine == "fsdp" or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"):
        raise ConfigError("lora: merging the adapters needs unsharded weights; train LoRA with ddp or zero2")
    args = sft_arguments(cfg, out / CHECKPOINTS)
    _ = args.device  # the Trainer's own distributed set-up (gloo on CPU under torchrun) before we use it
    state = PartialState()
    if state.is_main_process:
        check_output_dir(cfg)
    state.wait_for_everyone()
    sources = open_sources(cfg.data, verify=cfg.verify_shards)
    if loaded is None:
        loaded = load_model(cfg.model, cfg.revision, attn_implementation=cfg.attn_implementation)
    model: Any = loaded.model
    processor, family = loaded.processor, loaded.family
    if engine == "fsdp":  # FSDP units: the family's decoder layers and vision blocks (accelerate reads this)
        os.environ.setdefault("FSDP_TRANSFORMER_CLS_TO_WRAP", ",".join(LAYER_CLASSES[family]))
    fast = prepare_fast(model, processor, cfg.fast)
    first_new_row = fast.first_new_row if fast is not None else None
    omni_ids: list[int] = []
    if cfg.omni.enabled:
        if extra_loss is not None:
            raise ConfigError("omni.enabled and an explicit extra_loss cannot be combined")
        cfg.omni.check()
        omni_ids = add_query_tokens(processor.tokenizer, model, cfg.omni.num_queries)
        first_new_row = min(omni_ids) if first_new_row is None else min(first_new_row, *omni_ids)
        extra_loss = OmniGenerationHead(cfg.omni, model.config.get_text_config().hidden_size, omni_ids)
    frozen = apply_freezing(model, family, cfg.freeze)
    if cfg.lora.enabled:
        model = apply_lora(model, family, cfg.lora)
        frozen.append("all but LoRA adapters")
    row_mask: RowMask | None = None
    if first_new_row is not None:  # FAST or omni query tokens: new rows train even in frozen embeddings
        row_mask = train_new_rows_only(model, first_new_row)
    # fp32 masters of everything that trains whatever the checkpoint stores; frozen parts per `frozen_dtype`
    frozen_dtype = frozen_dtype_name(cfg.frozen_dtype, engine, cfg.trainer.bf16)
    cast_parameters(model, parse_dtype(frozen_dtype, "frozen_dtype"))
    rows = parameter_groups(
        model, backbone_prefixes(MODULE_PATHS[family]), torch.bfloat16 if cfg.trainer.bf16 else None
    )
    note = ""
    if row_mask is not None and row_mask.parameters:
        note = f"(embedding rows before id {row_mask.first_row} get no gradient: only the added FAST rows train)"
    table = format_parameter_table(rows, note)
    if verbose:
        print(f"parameter groups of {cfg.model} ({family}, engine {engine}):\n{table}", flush=True)
    if not any(r.trainable for r in rows):
        raise ConfigError("freeze: every parameter is frozen; nothing to train")
    extra_columns = None
    if cfg.omni.enabled:
        size, far = cfg.omni.image_size, cfg.omni.depth_far
        extra_columns = functools.partial(collate_targets, size=size, depth_far=far)
    collator = SFTCollator(
        fast.collate_processor if fast else processor, remap=fast.remap if fast else None, extra=extra_columns
    )
    dataset = stream_dataset(
        sources,
        seed=cfg.trainer.seed,
        shuffle_buffer=cfg.shuffle_buffer,
        with_targets=cfg.omni.enabled,
        slices=state.num_processes * max(1, cfg.trainer.dataloader_num_workers),  # one per worker of each rank
    )
    trainer = SFTTrainerWithExtras(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        data_collator=collator,
        row_mask=row_mask,
        extra_loss=extra_loss,
    )
    resume_from = None
    if cfg.resume:
        latest = resume_checkpoint(out / CHECKPOINTS, delete=state.is_main_process)
        resume_from = str(latest) if latest is not None else None
    if resume_from is not None and isinstance(extra_loss, OmniGenerationHead):
        extra_loss.load_weights(Path(resume_from) / HEAD_DIR)
    run = TrainingRun(
        cfg, trainer, loaded, sources, frozen, table, fast, resume_from, corpora_provenance(sources), rows
    )
    trainer.add_callback(CardOnSave(run))
    return run


def finish(run: TrainingRun, metrics: dict[str, Any]) -> Path:
    """Write the final checkpoint folder (LoRA merged) from the main process; returns its path."""
    trainer = run.trainer
    final = Path(run.cfg.output_dir) / FINAL
    # collective: FSDP / ZeRO-3 shards gathered to the main process (LoRA runs are unsharded, see build_trainer)
    weights = None if run.cfg.lora.enabled else trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        if run.cfg.lora.enabled:
            model = model.merge_and_unload()
        readme = readme_for(run, trainer.state.global_step, metrics)
        save_checkpoint_folder(
            model,
            run.loaded.processor,
            final,
            config_to_dict(run.cfg),
            readme,
            extra=lambda folder: write_extras(run, folder),
            state_dict=weights,
            save_dtype=parse_dtype(run.cfg.save_dtype, "save_dtype"),
        )
    trainer.accelerator.wait_for_everyone()
    return final


def train(cfg: SFTTrainConfig) -> dict[str, Any]:
    """Run one SFT stage; returns a summary {checkpoint, steps, metrics, frozen}."""
    with cleaned_if_unused(cfg.output_dir):  # a run that fails before writing anything leaves no empty folder
        return _train(cfg)


def _train(cfg: SFTTrainConfig) -> dict[str, Any]:
    """One SFT stage; returns a summary {checkpoint, steps, metrics, frozen}."""
    run = build_trainer(cfg)
    if run.resume_from is not None and run.trainer.is_world_process_zero():
        print(f"resumed from {run.resume_from}", flush=True)
    if run.resume_from is not None and steps_done(Path(run.resume_from)) >= run.trainer.args.max_steps:
        # killed after its last step: the Trainer would train one step past max_steps on resume; load and finish
        run.trainer._load_from_checkpoint(run.resume_from)
        run.trainer.state = TrainerState.load_from_json(str(Path(run.resume_from) / TRAINER_STATE))
        metrics: dict[str, Any] = {}
    else:
        output = run.trainer.train(resume_from_checkpoint=run.resume_from)
        metrics = {k: v for k, v in output.metrics.items() if isinstance(v, int | float)}
    logged = [h for h in run.trainer.state.log_history if "loss" in h]
    if logged:
        metrics["final_loss"] = float(logged[-1]["loss"])
    faults.hit("sft.before_final")
    final = finish(run, metrics)
    groups = run.trainer.optimizer.param_groups if run.trainer.optimizer is not None else []
    summary = {
        "checkpoint": str(final),
        "steps": run.trainer.state.global_step,
        "metrics": metrics,
        "frozen": run.frozen,
        "parameter_groups": [row.to_dict() for row in run.groups],
        "optimizer_param_dtypes": sorted({dtype_name(p.dtype) for g in groups for p in g["params"]}),
        "parameters_sha1": _state_digest(run),
    }
    if run.trainer.is_world_process_zero():
        path = Path(cfg.output_dir) / SUMMARY_FILE
        path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


def _state_digest(run: TrainingRun) -> str:
    """A short digest of the trained weights (for logs: equal runs print equal digests)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(run.trainer.accelerator.unwrap_model(run.trainer.model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]
