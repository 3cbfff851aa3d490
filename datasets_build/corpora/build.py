"""`build`: stream episodes from a source through a corpus builder into shards; `verify`: re-check built answers.

Output depends only on the inputs, the seed and the corpus options: each episode gets a generator
derived from (seed, source, episode_id), workers return results in episode order, and the card
records the config without execution-only fields (`build_record`: no out, workers, overwrite, resume).
With `workers > 1` each worker opens the source itself and loads episodes by key (the main process
reads only the cheap summaries that give the instruction history), so decoding scales with the workers.

Resumable: the writer keeps `.progress.json` with the episode position (`cursor`: key index and
sample index within that episode) of the first sample it had not kept when its last shard completed.
`resume=true` continues an interrupted build from there: episodes before the cursor are not built
again (only their cheap summaries are read, for the instruction history), the cursor's episode is
rebuilt and its kept samples skipped, and skip counts come back with the progress, so shards and card
are byte-identical to an uninterrupted build. A folder whose card exists is complete.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from datasets_build.outputs import OVERWRITE_HINT
from datasets_build.progress import progress_bar
from datasets_build.sample import Sample
from datasets_build.shards import DEFAULT_MAX_BYTES_PER_SHARD, DEFAULT_MAX_SAMPLES_PER_SHARD, ShardSet, ShardWriter
from datasets_build.sources import open_source
from datasets_build.sources.base import Source, check_partition

EXECUTION_ONLY = ("out", "workers", "overwrite", "resume")  # how a build runs, not what it builds
_HISTORY = 64  # distinct instructions remembered from earlier episodes (task-question distractors)


@dataclass
class BuildConfig:
    """One corpus build: which corpus, from which source, into which folder; `options` are the corpus's own.

    `resume` continues an interrupted build in `out` (from its `.progress.json`) instead of refusing it.
    """

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
    max_samples_per_shard: int = DEFAULT_MAX_SAMPLES_PER_SHARD
    max_bytes_per_shard: int = DEFAULT_MAX_BYTES_PER_SHARD
    overwrite: bool = False
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    source_options: dict[str, Any] = field(default_factory=dict)  # keyword options of the source (e.g. bridge_labels)


def open_build_source(cfg: BuildConfig) -> Source:
    """The build's source with its options (one-line ConfigError for an option the source does not take)."""
    try:
        return open_source(cfg.source, cfg.input, skip_bad=cfg.skip_bad, **cfg.source_options)
    except TypeError as exc:
        raise ConfigError(f"source_options: bad option for source {cfg.source!r} ({exc})") from exc


def build_record(cfg: BuildConfig, builder: CorpusBuilder | None = None) -> dict[str, Any]:
    """What defines a build's output, as its card's `build_config` holds it: the config without the
    execution-only fields, with the corpus options resolved (defaults filled in). Fingerprint this."""
    builder = builder or make_builder(cfg.name, cfg.options, cfg.image_size)
    record = {k: v for k, v in config_to_dict(cfg).items() if k not in EXECUTION_ONLY}
    record["options"] = config_to_dict(builder.config)
    return record


_WORKER: dict[str, Any] = {}
# A job is (key index, episode key, instruction history), or (key index, None, reason) for an episode the
# summary pass already found bad (skip_bad); a result is (key index, EpisodeResult or a skip reason).
_Job = tuple[int, Any, Any]
_Result = tuple[int, EpisodeResult | str]


def _init_worker(cfg: BuildConfig) -> None:
    """Each worker opens its own source and builder, so episodes never cross process boundaries."""
    _WORKER["builder"] = make_builder(cfg.name, cfg.options, cfg.image_size)
    _WORKER["source"] = open_build_source(cfg)
    _WORKER["seed"] = cfg.seed


def _build_one(builder: CorpusBuilder, episode: Episode, seed: int, seen: tuple[str, ...]) -> EpisodeResult:
    return builder.build(episode, EpisodeContext(episode_rng(seed, episode.episode_id, episode.source), seen))


def _reason(exc: DataError) -> str:
    return exc.field or type(exc).__name__


def _run_key(job: _Job) -> _Result:
    """Load and build one episode in a worker; a DataError under skip_bad comes back as its reason."""
    index, key, seen = job
    if key is None:
        return index, str(seen)
    source = _WORKER["source"]
    try:
        episode = source.load_episode(key)
    except DataError as exc:
        if not source.skip_bad:
            raise
        return index, _reason(exc)
    return index, _build_one(_WORKER["builder"], episode, _WORKER["seed"], seen)


def _instructions(episode: Episode) -> list[str]:
    found = [episode.instruction] if episode.instruction else []
    return found + [w.instruction for w in episode.language if w.instruction and w.instruction not in found]


def _remember(history: deque[str], texts: list[str]) -> None:
    for text in texts:
        if text and text not in history:
            history.append(text)


def _partition(source: Source, cfg: BuildConfig) -> Iterator[tuple[int, Any]]:
    check_partition(cfg.num_shards, cfg.shard_index)
    for i, key in enumerate(source.episode_keys()):
        if i % cfg.num_shards == cfg.shard_index:
            yield i, key


def _bar_counts(source: Source, cfg: BuildConfig, start: int) -> dict[str, int]:
    """The progress bar's total (this partition's episodes) and initial count (those before the resume point)."""
    try:
        episodes = len(source)
    except TypeError:  # a source that cannot count its episodes without reading them
        return {}
    total = len(range(cfg.shard_index, episodes, cfg.num_shards))
    return {"total": total, "initial": len(range(cfg.shard_index, max(start, 0), cfg.num_shards))}


def _summary_instructions(source: Source, key: Any, skip_bad: bool) -> list[str] | str:
    """The instructions of one episode from its summary, or the skip reason (skip_bad)."""
    try:
        return source.summarize_episode(key).instructions
    except DataError as exc:
        if not skip_bad:
            raise
        return _reason(exc)


def _key_jobs(source: Source, cfg: BuildConfig, start: int) -> Iterator[_Job]:
    """Jobs of this partition from key index `start` on, with the instruction history of every episode before
    them (earlier ones read from cheap summaries only)."""
    history: deque[str] = deque(maxlen=_HISTORY)
    for i, key in _partition(source, cfg):
        found = _summary_instructions(source, key, cfg.skip_bad)
        if isinstance(found, str):
            if i >= start:
                yield i, None, found
            continue
        if i >= start:
            yield i, key, tuple(history)
        _remember(history, found)


def _local_results(builder: CorpusBuilder, source: Source, cfg: BuildConfig, start: int) -> Iterator[_Result]:
    """Results in this process, each episode read once (the history comes from the loaded episodes)."""
    history: deque[str] = deque(maxlen=_HISTORY)
    for i, key in _partition(source, cfg):
        if i < start:  # already in the kept shards: only its instructions are needed
            found = _summary_instructions(source, key, cfg.skip_bad)
            if not isinstance(found, str):
                _remember(history, found)
            continue
        try:
            episode = source.load_episode(key)
        except DataError as exc:
            if not cfg.skip_bad:
                raise
            yield i, _reason(exc)
            continue
        yield i, _build_one(builder, episode, cfg.seed, tuple(history))
        _remember(history, _instructions(episode))


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
    check_partition(cfg.num_shards, cfg.shard_index)
    summary: dict[str, Any] = {"name": cfg.name, "out": cfg.out, "episodes": 0, "samples": 0}
    with ShardWriter(
        cfg.out,
        cfg.name,
        max_samples_per_shard=cfg.max_samples_per_shard,
        max_bytes_per_shard=cfg.max_bytes_per_shard,
        overwrite=cfg.overwrite,
        build_config=build_record(cfg, builder),
        inputs=[cfg.input, *builder.card_inputs()],
        resume=cfg.resume,
    ) as writer:
        summary["resumed_from"] = writer.resumed_from
        if not writer.resumed_finished:
            _stream_into(writer, builder, source, cfg, summary)
    card = writer.card
    assert card is not None
    summary["samples"] = card.num_samples
    summary["per_task"] = dict(sorted(card.counts_per_task.items()))
    summary["skipped"] = dict(sorted(card.skipped.items()))
    summary["shards"] = len(card.shards)
    return summary


def _stream_into(
    writer: ShardWriter, builder: CorpusBuilder, source: Source, cfg: BuildConfig, summary: dict[str, Any]
) -> None:
    """Write the samples of every episode from the writer's resume cursor on, counting skips as they come."""
    cursor = writer.resumed_cursor or {}
    start, kept = int(cursor.get("key_index", -1)), int(cursor.get("sample", 0))
    if writer.resumed_from and start < 0:
        raise DataError(f"progress file has samples but no episode position ({OVERWRITE_HINT} and rebuild)", cfg.out)
    pool = None
    results: Iterator[_Result]
    if cfg.workers > 1:
        pool = mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))
        results = pool.imap(_run_key, _key_jobs(source, cfg, max(start, 0)))
    else:
        results = _local_results(builder, source, cfg, max(start, 0))
    try:
        counts = _bar_counts(source, cfg, start)
        bar = progress_bar(
            results, desc=f"build {cfg.name}", unit="ep", total=counts.get("total"), initial=counts.get("initial", 0)
        )
        for index, result in bar:
            resumed_episode = index == start
            if isinstance(result, str):  # a bad episode skipped (skip_bad)
                if not resumed_episode:
                    writer.skip(f"source:{result}")
                continue
            summary["episodes"] += 1
            if not resumed_episode:  # the resumed episode's skips were counted before its first sample
                for reason in result.skipped:
                    writer.skip(reason)
            for j, sample in enumerate(result.samples):
                if cfg.max_samples is not None and writer.num_samples >= cfg.max_samples:
                    break
                if resumed_episode and j < kept:
                    if sample.key not in writer:
                        raise DataError(
                            f"sample {sample.key} of the resumed episode is not in the kept shards: the input or "
                            f"the code changed since the interrupted run ({OVERWRITE_HINT} and rebuild)",
                            cfg.out,
                        )
                    continue
                writer.cursor = {"key_index": index, "sample": j}
                writer.write(sample)
            bar.set_postfix(samples=writer.num_samples)
            if cfg.max_samples is not None and writer.num_samples >= cfg.max_samples:
                break
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def verify_corpus(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Re-check every sample's answer with its corpus's `verify`: totals and error rate per task.

    A folder built by one corpus is checked with that builder and the card's options. A mix (e.g. vqa_mix)
    is checked sample by sample with the builder its task names ("robopoint/left" -> robopoint, default
    options); samples no builder can check (general VQA, corpora whose builder needs options such as
    fast_tokens' tokenizer) are counted as `unverified`.
    """
    shard_set = ShardSet(path, verify=True)  # every shard re-hashed against the card first
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

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"max_error_rate: a fraction of answers in [0, 1], got {self.max_error_rate}")


def run_verify(cfg: VerifyConfig) -> dict[str, Any]:
    """`verify_corpus` as a recipe stage: DataError when too many answers fail."""
    report = verify_corpus(cfg.path, cfg.name)
    rate = report["errors"] / max(1, report["samples"] - report["unverified"])
    if rate > cfg.max_error_rate:
        raise DataError(f"{report['errors']} of {report['samples']} answers fail verification", cfg.path)
    return report
