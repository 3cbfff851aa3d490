"""FAST tokenizer throughput on one core: fit time, encode and decode chunks/s, against naive binning.

The baseline, measured in the same run on the same chunks, is per-dimension uniform binning into 256 bins
(RT-2 / OpenVLA style: one token per value), the cheapest action tokenizer there is. Prints chunks/s/core,
tokens per chunk and the ratios; the target is >= 10k chunks/s/core for FAST encode. Usage:
    python benchmarks/bench_fast.py [--chunks 100000] [--horizon 5] [--scale 10] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one core: the tokenizers library would use them all
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.fast import FastTokenizer

TARGET_ENCODE = 10_000.0


def bridge_like_chunks(n: int, horizon: int, seed: int = 0) -> np.ndarray:
    """Smooth 5 Hz end-effector deltas (sinusoids of a few mm per step plus noise) and a binary gripper."""
    rng = np.random.default_rng(seed)
    t = np.arange(horizon)[None, :, None] / 5.0
    amp = np.array([0.01, 0.01, 0.01, 0.05, 0.05, 0.05, 0.0])
    chunks = amp * np.sin(2 * np.pi * rng.uniform(0.05, 0.6, (n, 1, 7)) * t + rng.uniform(0, 6.3, (n, 1, 7)))
    chunks += rng.normal(0, 1e-4, chunks.shape)
    chunks[..., 6] = (rng.uniform(size=(n, 1)) > 0.5).astype(float)
    return chunks


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Smallest wall time of `repeat` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def binning_encode(chunks: np.ndarray, low: np.ndarray, high: np.ndarray, bins: int = 256) -> np.ndarray:
    """The baseline: each value -> one of `bins` uniform bins between the quantiles."""
    normed = np.clip((chunks - low) / np.where(high > low, high - low, 1.0), 0.0, 1.0)
    return np.minimum((normed * bins).astype(np.int64), bins - 1).reshape(len(chunks), -1)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the numbers."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--horizon", type=int, default=5)
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)

    chunks = bridge_like_chunks(args.chunks, args.horizon)
    flat = chunks.reshape(-1, 7)
    low, high = np.quantile(flat, 0.01, axis=0), np.quantile(flat, 0.99, axis=0)
    stats = {"action": {"q01": low.tolist(), "q99": high.tolist()}}

    fit_s, tok = best_of(lambda: FastTokenizer.fit(chunks, stats, vocab_size=1024, scale=args.scale), 1)
    enc_s, ids = best_of(lambda: tok.encode_batch(chunks), args.repeat)
    sub = ids[: min(len(ids), 20_000)]
    dec_s, (decoded, valid) = best_of(lambda: tok.decode_batch(sub), args.repeat)
    base_s, _ = best_of(lambda: binning_encode(chunks, low, high), args.repeat)
    lengths = np.array([len(i) for i in ids])
    err = float(np.abs(tok.normalize(decoded) - tok.normalize(chunks[: len(sub)])).max())
    results = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, 1 used ({platform.processor() or 'cpu'})",
        "python": sys.version.split()[0],
        "chunks": args.chunks,
        "horizon": args.horizon,
        "scale": args.scale,
        "fit_seconds": round(fit_s, 3),
        "vocab_size": tok.vocab_size,
        "encode_chunks_per_s": round(args.chunks / enc_s, 1),
        "decode_chunks_per_s": round(len(sub) / dec_s, 1),
        "binning_encode_chunks_per_s": round(args.chunks / base_s, 1),
        "encode_ratio_to_binning": round(base_s / enc_s, 4),
        "tokens_per_chunk_fast": round(float(lengths.mean()), 2),
        "tokens_per_chunk_binning": args.horizon * 7,
        "compression_vs_binning": round(args.horizon * 7 / float(lengths.mean()), 2),
        "max_abs_error_normalised": round(err, 5),
        "invalid_decodes": int((~valid).sum()),
        "encode_target_chunks_per_s": TARGET_ENCODE,
        "encode_meets_target": args.chunks / enc_s >= TARGET_ENCODE,
    }
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
