"""The data side of a `vla train` run: episode index, action normalisation, the dataset, the schedule in steps,
and the record of all of it that goes into every checkpoint.

`prepare_training_data` reads (or loads the cached) episode layouts once, builds the normaliser from them (or
from `data.stats`), picks the sampler (`auto`: global for random-access sources, a stream for RLDS) and returns
the dataset for this rank. `resolve_schedule` turns an epoch-based schedule into steps from the number of
training samples.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import IterableDataset

from datasets_build.errors import ConfigError, DataError
from datasets_build.sources import open_source
from datasets_build.sources.base import EpisodeLayout, Source
from vla.configuration_vla import VLATrainConfig
from vla.data import VLAGlobalDataset, VLASampleStream
from vla.episode_index import fingerprint, layout_stats, load_layouts, read_layouts, save_layouts
from vla.normalization import ActionNormalizer
from vla.presets import get_preset, preset_record
from vla.sampling import ResumeState, SampleIndex


@dataclass(frozen=True)
class Schedule:
    """Steps of a run: total, warm-up, checkpoint cadence, and the epoch they were derived from."""

    steps: int
    warmup_steps: int
    save_every: int
    samples_per_epoch: int  # 0 when not counted (stream sampler, step-based schedule, no statistics pass)


def resolve_schedule(cfg: VLATrainConfig, samples: int) -> Schedule:
    """`steps`, `warmup_steps` and `save_every`, with every epoch-based field (> 0) converted at `samples` per
    epoch: steps = ceil(epochs x samples / batch_size), warm-up and cadence rounded to whole steps."""
    per_epoch = samples / cfg.batch_size if samples else 0.0
    needs = [name for name in ("epochs", "warmup_epochs", "save_every_epochs") if getattr(cfg, name) > 0]
    if needs and not per_epoch:
        raise ConfigError(f"{', '.join(needs)}: an epoch-based schedule needs the number of training samples")
    steps = math.ceil(cfg.epochs * per_epoch) if cfg.epochs > 0 else cfg.steps
    warmup = round(cfg.warmup_epochs * per_epoch) if cfg.warmup_epochs > 0 else cfg.warmup_steps
    save_every = max(1, round(cfg.save_every_epochs * per_epoch)) if cfg.save_every_epochs > 0 else cfg.save_every
    return Schedule(max(1, steps), warmup, save_every, samples)


@dataclass
class TrainingData:
    """What `prepare_training_data` returns."""

    dataset: IterableDataset
    normalizer: ActionNormalizer
    sampler: str
    samples: int  # training samples in one epoch (0 when not counted)
    episodes: int
    record: dict[str, Any] = field(default_factory=dict)  # for the checkpoint's training record


def _open(cfg: VLATrainConfig) -> Source:
    try:
        return open_source(cfg.data.source, cfg.data.path, **cfg.data.options)
    except TypeError as exc:
        raise ConfigError(f"data.options: bad option for source {cfg.data.source!r} ({exc})") from exc


def _needs_layouts(cfg: VLATrainConfig, sampler: str) -> bool:
    epoch_based = cfg.epochs > 0 or cfg.warmup_epochs > 0 or cfg.save_every_epochs > 0
    needs_stats = not cfg.data.stats and cfg.model.normalization != "none"
    return sampler == "global" or epoch_based or needs_stats


def episode_layouts(
    cfg: VLATrainConfig, source: Source, out: Path, main_first: AbstractContextManager[Any], progress: bool
) -> list[EpisodeLayout]:
    """The source's layouts: the cache in `out/episode_index` when it matches, else read (by the main process
    first, inside `main_first`) and cached."""
    key = fingerprint(cfg.data.source, cfg.data.path, cfg.data.options)
    with main_first:
        layouts = load_layouts(out, key)
        if layouts is None:
            layouts = read_layouts(source, progress=progress)
            save_layouts(out, layouts, key)
    return layouts


def normalizer_for(cfg: VLATrainConfig, layouts: list[EpisodeLayout] | None) -> ActionNormalizer:
    """From `data.stats`, or the layouts' actions; mode `none` needs no statistics."""
    model = cfg.model
    if model.normalization == "none":
        return ActionNormalizer.from_stats(None, "none", action_clip=model.action_clip)
    if cfg.data.stats:
        return ActionNormalizer.from_file(cfg.data.stats, model.normalization, action_clip=model.action_clip)
    stats = layout_stats(layouts or [])
    if not stats:
        raise DataError("no episodes to compute action statistics from", cfg.data.path)
    return ActionNormalizer.from_stats(stats, model.normalization, where=cfg.data.path, action_clip=model.action_clip)


def prepare_training_data(
    cfg: VLATrainConfig,
    out: Path,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    main_first: AbstractContextManager[Any],
    resume: ResumeState | None = None,
    start_step: int = 0,
    progress: bool = True,
) -> TrainingData:
    """Index, normalise and build the dataset of this rank (`batch_size` per rank, `resume` from a checkpoint)."""
    data = cfg.data
    source = _open(cfg)
    sampler = data.sampler
    if sampler == "auto":
        sampler = "global" if source.random_access else "stream"
    layouts = episode_layouts(cfg, source, out, main_first, progress) if _needs_layouts(cfg, sampler) else None
    normalizer = normalizer_for(cfg, layouts)
    samples = len(SampleIndex.from_layouts(layouts, data.window_rule)) if layouts is not None else 0
    common: dict[str, Any] = {
        "camera": data.camera,
        "options": data.options,
        "rank": rank,
        "world_size": world_size,
        "window_rule": data.window_rule,
        "augment": data.augment if data.augment.enabled else None,
        "image_size": cfg.model.image_size,
    }
    dataset: IterableDataset
    if sampler == "global":
        assert layouts is not None
        dataset = VLAGlobalDataset(
            data.source,
            data.path,
            cfg.model.chunk_size,
            normalizer,
            seed=cfg.seed,
            layouts=layouts,
            batch_size=batch_size,
            resume=resume,
            **common,
        )
    else:
        dataset = VLASampleStream(
            data.source,
            data.path,
            cfg.model.chunk_size,
            normalizer,
            seed=cfg.seed + start_step,  # a resumed stream draws fresh samples
            shuffle_buffer=data.shuffle_buffer,
            interleave=data.interleave,
            **common,
        )
    record: dict[str, Any] = {
        "source": data.source,
        "path": data.path,
        "options": dict(data.options),
        "camera": data.camera,
        "sampler": sampler,
        "window_rule": data.window_rule,
        "augment": asdict(data.augment),
        "episodes": len(layouts) if layouts is not None else len(source.episode_keys()),
        "samples_per_epoch": samples,
        "normalization": normalizer.to_dict(),
    }
    if data.source == "rlds":
        record["bridge_labels"] = str(data.options.get("bridge_labels", "raw"))
    if cfg.preset and get_preset(cfg.preset).data_image_size:
        keys = source.episode_keys()
        first = layouts[0] if layouts else source.episode_layout(keys[0])
        camera = data.camera or (first.cameras[0] if first.cameras else "")
        record["image_shape"] = list(source.read_image(keys[0], camera, 0).shape)
    if sampler == "stream":
        record.update(shuffle_buffer=data.shuffle_buffer, interleave=data.interleave)
    return TrainingData(dataset, normalizer, sampler, samples, record["episodes"], record)


def image_size_check(cfg: VLATrainConfig, data: TrainingData) -> str:
    """A deviation note when the preset's paper data had another image size than the training images ("" if not)."""
    image_shape = data.record.get("image_shape")
    if not cfg.preset or not image_shape:
        return ""
    want = get_preset(cfg.preset).data_image_size
    if want and tuple(image_shape[:2]) != (want, want):
        return (
            f"training images are {image_shape[0]}x{image_shape[1]}; the paper's {cfg.preset} data is {want}x{want} "
            "(e.g. LIBERO's original files are 128x128: use the regenerated *_no_noops files or the RLDS release)"
        )
    return ""


def training_record(cfg: VLATrainConfig, data: TrainingData, schedule: Schedule, notes: list[str]) -> dict[str, Any]:
    """The checkpoint's account of the run: preset (choices, overrides, deviations), data, schedule, notes."""
    preset = preset_record(cfg)
    deviations = list(preset.get("deviations", []))
    deviations += [
        f"{key}: preset {v['preset']!r}, this run {v['run']!r}" for key, v in preset.get("overridden", {}).items()
    ]
    deviations += notes
    return {
        "preset": preset,
        "data": data.record,
        "schedule": {
            "steps": schedule.steps,
            "warmup_steps": schedule.warmup_steps,
            "save_every": schedule.save_every,
            "batch_size": cfg.batch_size,
            "samples_per_epoch": schedule.samples_per_epoch,
            "epochs": round(schedule.steps * cfg.batch_size / schedule.samples_per_epoch, 4)
            if schedule.samples_per_epoch
            else None,
            "lr": cfg.lr,
            "lr_scheduler": cfg.lr_scheduler,
            "grad_clip": cfg.grad_clip,
            "seed": cfg.seed,
        },
        "deviations": deviations,
    }
