"""`build`: stream episodes from a source through a corpus builder into shards; `verify`: re-check built answers.

Output depends only on the inputs, the seed and the corpus options: each episode gets a generator
derived from (seed, source, episode_id), workers return results in episode order, and the card
records the config without execution-only fields (out, workers, overwrite). With `workers > 1` each
worker opens the source itself and loads episodes by key (the main process reads only the cheap
summaries that give the instruction history), so decoding scales with the workers.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets_build.configs import config_to_dict
from datasets_build.corpora.base import (
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    available_corpora,
    episode_rng,
    make_builder,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError, DataError
from datasets_build.sample import Sample
from datasets_build.shards import ShardSet, ShardWriter
from datasets_build.sources import open_source
from datasets_build.sources.base import Source, check_partition

_EXECUTION_ONLY = ("out", "workers", "overwrite")
_HISTORY = 64  # distinct instructions remembered from earlier episodes (task-question distractors)


@dataclass
class BuildConfig:
    """One corpus build: which corpus, from which source, into which folder; `options` are the corpus's own."""

    name: str = "robo2vlm"
    source: str = "demo"
    input: str = "runs/demo/episodes"
    out: str = "runs/demo/corpora/robo2vlm"
    max_samples: int | None = None
    seed: int = 0
    workers: int = 1
    num_shards: int = 1
    shard_index: int = 0
    image_size: int = 224
    skip_bad: bool = False
    overwrite: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    source_options: dict[str, Any] = field(default_factory=dict)  # keyword options of the source (e.g. bridge_labels)


def open_build_source(cfg: BuildConfig) -> Source:
    """The build's source with its options (one-line ConfigError for an option the source does not take)."""
    try:
        return open_source(cfg.source, cfg.input, skip_bad=cfg.skip_bad, **cfg.source_options)
    except TypeError as exc:
        raise ConfigError(f"source_options: bad option for source {cfg.source!r} ({exc})") from exc


_WORKER: dict[str, Any] = {}


def _init_worker(cfg: BuildConfig) -> None:
    """Each worker opens its own source and builder, so episodes never cross process boundaries."""
    _WORKER["builder"] = make_builder(cfg.name, cfg.options, cfg.image_size)
    _WORKER["source"] = open_build_source(cfg)


def _run_key(job: tuple[Any, int, tuple[str, ...]]) -> EpisodeResult | str:
    """Load and build one episode in a worker; a DataError under skip_bad comes back as its reason."""
    key, seed, seen = job
    source = _WORKER["source"]
    try:
        episode = source.load_episode(key)
    except DataError as exc:
        if not source.skip_bad:
            raise
        return exc.field or type(exc).__name__
    rng = episode_rng(seed, episode.episode_id, episode.source)
    result: EpisodeResult = _WORKER["builder"].build(episode, EpisodeContext(rng, seen))
    return result


def _instructions(episode: Episode) -> list[str]:
    found = [episode.instruction] if episode.instruction else []
    return found + [w.instruction for w in episode.language if w.instruction and w.instruction not in found]


def _remember(history: deque[str], texts: list[str]) -> None:
    for text in texts:
        if text and text not in history:
            history.append(text)


def _jobs(episodes: Iterator[Episode], seed: int) -> Iterator[tuple[Episode, int, tuple[str, ...]]]:
    """Each episode with the distinct instructions of the episodes before it (bounded, in stream order)."""
    history: deque[str] = deque(maxlen=_HISTORY)
    for episode in episodes:
        yield episode, seed, tuple(history)
        _remember(history, _instructions(episode))


def _key_jobs(source: Source, cfg: BuildConfig) -> Iterator[tuple[Any, int, tuple[str, ...]]]:
    """Episode keys of this partition with the same instruction history, read from cheap summaries."""
    check_partition(cfg.num_shards, cfg.shard_index)
    history: deque[str] = deque(maxlen=_HISTORY)
    for i, key in enumerate(source.episode_keys()):
        if i % cfg.num_shards != cfg.shard_index:
            continue
        try:
            summary = source.summarize_episode(key)
        except DataError as exc:
            if not cfg.skip_bad:
                raise
            source.skipped[exc.field or type(exc).__name__] += 1
            continue
        yield key, cfg.seed, tuple(history)
        _remember(history, summary.instructions)


def build_corpus(cfg: BuildConfig) -> dict[str, Any]:
    """Build corpus `cfg.name` from `cfg.source` at `cfg.input` into shards at `cfg.out`; return a summary."""
    if cfg.workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {cfg.workers}")
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise ConfigError(f"max_samples: must be >= 1, got {cfg.max_samples}")
    if cfg.image_size < 8:
        raise ConfigError(f"image_size: must be >= 8, got {cfg.image_size}")
    builder = make_builder(cfg.name, cfg.options, cfg.image_size)  # validates name and options up front
    source = open_build_source(cfg)
    record = {k: v for k, v in config_to_dict(cfg).items() if k not in _EXECUTION_ONLY}
    record["options"] = config_to_dict(builder.config)
    summary: dict[str, Any] = {"name": cfg.name, "out": cfg.out, "episodes": 0, "samples": 0}
    with ShardWriter(
        cfg.out, cfg.name, overwrite=cfg.overwrite, build_config=record, inputs=[cfg.input, *builder.card_inputs()]
    ) as writer:
        pool = None
        results: Iterator[EpisodeResult | str]
        if cfg.workers > 1:
            pool = mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))
            results = pool.imap(_run_key, _key_jobs(source, cfg))
        else:
            results = (
                builder.build(ep, EpisodeContext(episode_rng(seed, ep.episode_id, ep.source), seen))
                for ep, seed, seen in _jobs(source.episodes(cfg.num_shards, cfg.shard_index), cfg.seed)
            )
        try:
            bar = tqdm(results, desc=f"build {cfg.name}", unit="ep")
            for result in bar:
                if isinstance(result, str):  # a worker skipped a bad episode (skip_bad)
                    source.skipped[result] += 1
                    continue
                summary["episodes"] += 1
                for reason in result.skipped:
                    writer.skip(reason)
                for sample in result.samples:
                    if cfg.max_samples is not None and writer.num_samples >= cfg.max_samples:
                        break
                    writer.write(sample)
                bar.set_postfix(samples=writer.num_samples)
                if cfg.max_samples is not None and writer.num_samples >= cfg.max_samples:
                    break
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        for reason, count in sorted(source.skipped.items()):
            writer.skip(f"source:{reason}", count)
    card = writer.card
    assert card is not None
    summary["samples"] = card.num_samples
    summary["per_task"] = dict(sorted(card.counts_per_task.items()))
    summary["skipped"] = dict(sorted(card.skipped.items()))
    summary["shards"] = len(card.shards)
    return summary


def verify_corpus(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Re-check every sample's answer with its corpus's `verify`: totals and error rate per task.

    A folder built by one corpus is checked with that builder and the card's options. A mix (e.g. vqa_mix)
    is checked sample by sample with the builder its task names ("robopoint/left" -> robopoint, default
    options); samples no builder can check (general VQA, corpora whose builder needs options such as
    fast_tokens' tokenizer) are counted as `unverified`.
    """
    shard_set = ShardSet(path)
    card = shard_set.card
    corpus = name or (str(card.build_config.get("name", "")) if card is not None else "")
    if not corpus:
        raise DataError("cannot tell which corpus built this folder (no build_config.name in the card)", path)
    known = set(available_corpora())
    builders: dict[str, CorpusBuilder | None] = {}
    if corpus in known:
        options = card.build_config.get("options", {}) if card is not None else {}
        builders[corpus] = make_builder(corpus, options if isinstance(options, dict) else {})

    def builder_for(sample: Sample) -> CorpusBuilder | None:
        which = corpus if corpus in known else sample.task.split("/", 1)[0]
        if which not in builders:
            try:
                builders[which] = make_builder(which) if which in known else None
            except ConfigError:
                builders[which] = None
        return builders[which]

    per_task: dict[str, Counter[str]] = {}
    failed: list[str] = []
    for sample in shard_set:
        counts = per_task.setdefault(sample.task, Counter())
        counts["samples"] += 1
        builder = builder_for(sample)
        if builder is None:
            counts["unverified"] += 1
        elif not builder.verify(sample):
            counts["errors"] += 1
            failed.append(sample.key)
    report: dict[str, Any] = {
        "name": corpus,
        "path": str(path),
        "samples": sum(c["samples"] for c in per_task.values()),
        "errors": len(failed),
        "unverified": sum(c["unverified"] for c in per_task.values()),
        "per_task": {
            task: {
                "samples": c["samples"],
                "errors": c["errors"],
                "unverified": c["unverified"],
                "error_rate": c["errors"] / max(1, c["samples"] - c["unverified"]),
            }
            for task, c in sorted(per_task.items())
        },
        "failed_keys": failed[:20],
    }
    return report


@dataclass
class VerifyConfig:
    """Re-check a built corpus; the stage fails when the error rate exceeds `max_error_rate`."""

    path: str = "runs/demo/corpora/robo2vlm"
    name: str | None = None  # corpus name; None = from the dataset card
    max_error_rate: float = 0.0


def run_verify(cfg: VerifyConfig) -> dict[str, Any]:
    """`verify_corpus` as a recipe stage: DataError when too many answers fail."""
    report = verify_corpus(cfg.path, cfg.name)
    rate = report["errors"] / max(1, report["samples"] - report["unverified"])
    if rate > cfg.max_error_rate:
        raise DataError(f"{report['errors']} of {report['samples']} answers fail verification", cfg.path)
    return report
