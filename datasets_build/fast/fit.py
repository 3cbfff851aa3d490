"""`fit-fast`: train a FAST tokenizer on the action chunks of any source and save it as a folder.

Chunks are windows of `horizon` actions starting every `stride` steps inside each episode (episodes
shorter than the horizon give no chunk and are counted). The q01/q99 statistics come from a stats.json
written by the `stats` command, or are computed from the same episodes when none is given.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.errors import ConfigError, DataError
from datasets_build.fast.tokenizer import FastTokenizer, action_chunks
from datasets_build.outputs import check_output_folder, staged_output_folder
from datasets_build.progress import progress_bar
from datasets_build.sources import open_source
from datasets_build.stats import RunningStats


@dataclass
class FitFastConfig:
    """One FAST fit: which episodes, the chunk horizon, the tokenizer's size and scale, and where to save."""

    source: str = "demo"
    input: str = "runs/demo/episodes"
    out: str = "runs/demo/fast"
    horizon: int = 4
    stride: int = 1
    vocab_size: int = 1024
    scale: float = 10.0
    stats: str | None = None  # stats.json from the `stats` command; None = computed here
    max_chunks: int | None = None  # keep at most this many chunks (evenly strided, deterministic)
    num_shards: int = 1
    shard_index: int = 0
    skip_bad: bool = False
    overwrite: bool = False
    source_options: dict[str, Any] = field(default_factory=dict)  # keyword options of the source (e.g. bridge_labels)


FIT_RECORD = "fit_fast.json"  # the FitFastConfig a tokenizer folder was fitted with
OUTPUT_KIND = "fit-fast"  # the marker kind of a tokenizer folder (datasets_build.outputs)


def fit_fast(cfg: FitFastConfig) -> dict[str, Any]:
    """Collect chunks, fit, save to `cfg.out`, and return a summary with round-trip and compression numbers."""
    if cfg.horizon < 1 or cfg.stride < 1:
        raise ConfigError("fit-fast: horizon and stride must be >= 1")
    out = Path(cfg.out)
    check_output_folder(out, OUTPUT_KIND, cfg.overwrite)
    try:
        source = open_source(cfg.source, cfg.input, skip_bad=cfg.skip_bad, **cfg.source_options)
    except TypeError as exc:
        raise ConfigError(f"fit-fast: source_options: bad option for source {cfg.source!r} ({exc})") from exc
    parts: list[np.ndarray] = []
    short = 0
    episodes = 0
    running: RunningStats | None = None
    for summary in progress_bar(source.summaries(cfg.num_shards, cfg.shard_index), desc="fit-fast: read", unit="ep"):
        episodes += 1
        actions = np.asarray(summary.actions, dtype=np.float64)
        if running is None:
            running = RunningStats(actions.shape[1])
        running.update(actions)
        chunks, _ = action_chunks(actions, cfg.horizon, cfg.stride)
        if len(chunks) == 0:
            short += 1
            continue
        parts.append(chunks)
    if not parts or running is None:
        raise DataError(f"no episode has {cfg.horizon} or more steps", cfg.input)
    chunks = np.concatenate(parts)
    if cfg.max_chunks is not None and len(chunks) > cfg.max_chunks:
        chunks = chunks[np.linspace(0, len(chunks) - 1, cfg.max_chunks).astype(int)]
    if cfg.stats:
        try:
            stats = json.loads(Path(cfg.stats).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read statistics ({exc})", cfg.stats) from exc
    else:
        stats = {"action": running.result()}
    tokenizer = FastTokenizer.fit(chunks, stats, vocab_size=cfg.vocab_size, scale=cfg.scale)
    with staged_output_folder(out, OUTPUT_KIND, cfg.overwrite) as tmp:
        tokenizer.save_pretrained(tmp)
        (tmp / FIT_RECORD).write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    ids = tokenizer.encode_batch(chunks)
    decoded, valid = tokenizer.decode_batch(ids)
    target = tokenizer.denormalize(tokenizer.normalize(chunks))
    lengths = np.array([len(i) for i in ids])
    return {
        "out": str(out),
        "episodes": episodes,
        "episodes_shorter_than_horizon": short,
        "chunks": len(chunks),
        "horizon": cfg.horizon,
        "action_dim": int(chunks.shape[2]),
        "vocab_size": tokenizer.vocab_size,
        "min_token": tokenizer.config.min_token,
        "max_token": tokenizer.config.max_token,
        "tokens_per_chunk_mean": float(lengths.mean()),
        "tokens_per_chunk_max": int(lengths.max()),
        "values_per_chunk": int(chunks.shape[1] * chunks.shape[2]),
        "round_trip_max_abs_error": float(np.abs(decoded - target).max()),
        "invalid_decodes": int((~valid).sum()),
    }
