"""SFT throughput on tiny Qwen-VL models (CPU): the training step, and the data path alone.

Training step: `sft.train.build_trainer` on tiny Qwen2.5-VL and Qwen3-VL (real classes, random weights)
for `--steps` steps; samples/s and tokens/s from the Trainer's runtime and TRL's token count.
Data path (shards -> collated batch with assistant-only labels), measured in the same process on the same
shards against two baselines:
  - per-sample: the same rows collated one at a time (processor called once per sample), then padded;
  - arrow: the corpus materialised into a `datasets.Dataset` with Image features (images re-encoded to Arrow
    and decoded back per row), then collated in batches: the "load it into a Dataset first" route.
Prints each ratio against the target (>= 3x). Usage:
    python benchmarks/bench_sft.py [--steps 8] [--batch 8] [--repeat 3] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_RATIO = 3.0
MODELS = ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-VL-2B-Instruct")


def build_fixture(root: Path) -> dict[str, Path]:
    """Demo episodes -> robo2vlm + robopoint corpora, and tiny backbones in a private HF cache."""
    from datasets_build.corpora import BuildConfig, build_corpus
    from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes
    from datasets_build.tiny_models import install_tiny_backbones

    episodes = root / "episodes"
    record_demo_episodes(DemoEpisodesConfig(out=str(episodes), episodes=6, seed=0))
    corpora = {}
    for name in ("robo2vlm", "robopoint"):
        corpora[name] = root / name
        build_corpus(BuildConfig(name=name, input=str(episodes), out=str(corpora[name])))
    install_tiny_backbones(ids=list(MODELS))
    return corpora


def best_rate(body: Callable[[], int], repeat: int) -> float:
    """Best items/s over `repeat` runs of `body` (which returns the item count)."""
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        n = body()
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def data_path(corpora: dict[str, Path], batch: int, repeat: int) -> dict[str, Any]:
    """Collated samples/s of the streaming path and of the two baselines."""
    import torch
    from datasets import Dataset, Features, Image, List, Value
    from transformers import AutoProcessor

    from sft.collator import SFTCollator
    from sft.config import ShardSource
    from sft.data import open_sources, sample_row, stream_dataset

    processor = AutoProcessor.from_pretrained(MODELS[0], trust_remote_code=False)
    collator = SFTCollator(processor)
    sources = open_sources([ShardSource(str(p)) for p in corpora.values()])
    total = sum(len(s.shard_set) for s in sources)

    def streaming() -> int:
        n, rows = 0, []
        for row in stream_dataset(sources, seed=0, shuffle_buffer=1):
            rows.append(row)
            if len(rows) == batch:
                collator(rows)
                n, rows = n + batch, []
        return n

    pad_values = {"input_ids": processor.tokenizer.pad_token_id, "labels": -100}

    def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-pad per-sample sequences to one width and concatenate the image tensors."""
        width = max(p["input_ids"].shape[1] for p in parts)
        out = {}
        for key in parts[0]:
            if key in ("pixel_values", "image_grid_thw"):
                out[key] = torch.cat([p[key] for p in parts])
            elif not isinstance(parts[0][key], torch.Tensor):  # task names
                out[key] = [v for p in parts for v in p[key]]
            else:
                value = pad_values.get(key, 0)
                out[key] = torch.cat(
                    [torch.nn.functional.pad(p[key], (0, width - p[key].shape[1]), value=value) for p in parts]
                )
        return out

    def per_sample() -> int:
        n, pending = 0, []
        for source in sources:
            for sample in source.shard_set:
                pending.append(collator([sample_row(sample)]))
                if len(pending) == batch:
                    merge(pending)
                    n, pending = n + batch, []
        return n

    features = Features(
        {
            "images": List(Image()),
            "messages": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
            "task": Value("string"),
        }
    )

    def arrow() -> int:
        rows = [sample_row(s) for source in sources for s in source.shard_set]
        table = Dataset.from_list(rows, features=features)
        n = 0
        for start in range(0, len(table) - batch + 1, batch):
            collator([table[i] for i in range(start, start + batch)])
            n += batch
        return n

    ours = best_rate(streaming, repeat)
    naive = best_rate(per_sample, repeat)
    materialised = best_rate(arrow, repeat)
    return {
        "samples": total,
        "batch": batch,
        "streaming_samples_per_s": ours,
        "per_sample_samples_per_s": naive,
        "arrow_samples_per_s": materialised,
        "ratio_vs_per_sample": ours / naive,
        "ratio_vs_arrow": ours / materialised,
    }


def training_step(corpora: dict[str, Path], model: str, steps: int, batch: int, root: Path) -> dict[str, Any]:
    """samples/s and tokens/s of `steps` full fine-tuning steps of a tiny model."""
    from datasets_build.configs import build_config
    from sft.config import SFTTrainConfig
    from sft.train import build_trainer

    cfg = build_config(
        SFTTrainConfig,
        {
            "model": model,
            "data": [{"path": str(p)} for p in corpora.values()],
            "output_dir": str(root / f"run-{model.replace('/', '--')}"),
            "shuffle_buffer": 16,
            "trainer": {
                "max_steps": steps,
                "save_steps": 10 * steps,
                "logging_steps": steps,
                "per_device_train_batch_size": batch,
                "learning_rate": 1e-4,
            },
        },
    )
    run = build_trainer(cfg, verbose=False)
    output = run.trainer.train()
    runtime = float(output.metrics["train_runtime"])
    tokens = int(getattr(run.trainer, "_total_train_tokens", 0))
    return {
        "model": model,
        "steps": steps,
        "batch": batch,
        "seconds": runtime,
        "samples_per_s": steps * batch / runtime,
        "tokens_per_s": tokens / runtime,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print (optionally save) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (on 2 shared cores, 2 threads ran ~5x slower than 1)"
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("HF_HOME", str(root / "hf"))
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        corpora = build_fixture(root)
        data = data_path(corpora, args.batch, args.repeat)
        steps = [training_step(corpora, m, args.steps, args.batch, root) for m in MODELS]

    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "data_path": data,
        "training_step": steps,
        "target_ratio": TARGET_RATIO,
    }
    print(f"data path ({data['samples']} samples, batch {data['batch']}):")
    print(f"  streaming shards -> batch : {data['streaming_samples_per_s']:8.1f} samples/s")
    print(f"  per-sample collation      : {data['per_sample_samples_per_s']:8.1f} samples/s")
    print(f"  arrow-materialised        : {data['arrow_samples_per_s']:8.1f} samples/s")
    for key in ("ratio_vs_per_sample", "ratio_vs_arrow"):
        verdict = "meets" if data[key] >= TARGET_RATIO else "below"
        print(f"  {key}: {data[key]:.2f}x ({verdict} the {TARGET_RATIO:.0f}x target)")
    for s in steps:
        print(f"train step {s['model']}: {s['samples_per_s']:.2f} samples/s, {s['tokens_per_s']:.0f} tokens/s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
