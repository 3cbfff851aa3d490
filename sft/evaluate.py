"""`evaluate`: greedy answers of a checkpoint on held-out shards, scored per task with the corpus answer parsers.

Scores come from `datasets_build.answers.score_answer` (points in region, choice / yes-no accuracy, quantity
error, box IoU, trajectory distance; points without a target region count as unverifiable); FAST-token answers
are decoded through the FAST tokenizer (`fast_l1` against the recorded actions, `fast_invalid`): the one the
checkpoint was trained with (`fast_tokenizer/`, else its recipe's `fast.tokenizer`), else the one the corpus
was built with (its card), or `fast_tokenizer` when given. Results are averaged per task into JSON and a
Markdown table (recipe stage kind `sft_evaluate`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForImageTextToText
from trl.data_utils import prepare_multimodal_messages

from datasets_build.answers import answer_kind, score_answer
from datasets_build.checkpoint import FAST_TOKENIZER_DIR, RECIPE_FILE
from datasets_build.errors import ConfigError, DataError
from datasets_build.fast import FastTokenizer
from datasets_build.fast.vocab import FastVocabMapping, answer_text
from datasets_build.locking import output_lock
from datasets_build.outputs import write_text_atomic
from datasets_build.precision import inference_dtype
from datasets_build.progress import progress_bar
from datasets_build.sample import Sample
from datasets_build.shards import ShardSet
from sft.config import EvaluateConfig
from sft.freezing import embedding_rows
from sft.model import load_processor


def split_turns(sample: Sample) -> tuple[list[dict[str, Any]], str]:
    """The prompt turns (everything before the last assistant turn) and the reference answer text."""
    messages = sample.messages
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("the last turn is not an assistant answer", sample.key, "messages")
    content = messages[-1]["content"]
    reference = content if isinstance(content, str) else "".join(p.get("text") or "" for p in content)
    return messages[:-1], reference


def _vocab_tail_mapping(checkpoint: str, tokenizer: Any, vocab_rows: int) -> FastVocabMapping | None:
    """The FAST vocab_tail mapping the checkpoint was trained with (from its recipe), if any."""
    recipe_path = Path(checkpoint) / RECIPE_FILE
    if not recipe_path.is_file():
        return None
    recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    fast = recipe.get("fast") or {}
    if not fast.get("tokenizer") or fast.get("mapping") != "vocab_tail":
        return None
    saved = Path(checkpoint) / FAST_TOKENIZER_DIR
    size = FastTokenizer.from_pretrained(saved if saved.is_dir() else fast["tokenizer"]).vocab_size
    mapping: FastVocabMapping = FastVocabMapping.for_tokenizer(tokenizer, size, "vocab_tail", embedding_rows=vocab_rows)
    return mapping


def _recipe_fast(checkpoint: str) -> str | None:
    """The recipe's `fast.tokenizer` (checkpoints written before the tokenizer was saved beside the model)."""
    recipe_path = Path(checkpoint) / RECIPE_FILE
    if not recipe_path.is_file():
        return None
    recipe = yaml.safe_load(recipe_path.read_text(encoding="utf-8")) or {}
    return (recipe.get("fast") or {}).get("tokenizer") or None


def fast_tokenizer_for(cfg: EvaluateConfig, shard_set: ShardSet) -> tuple[FastTokenizer | None, str]:
    """The FAST tokenizer that decodes this set's answers, and where it came from ("" when there is none)."""
    if cfg.fast_tokenizer:
        return FastTokenizer.from_pretrained(cfg.fast_tokenizer), cfg.fast_tokenizer
    saved = Path(cfg.checkpoint) / FAST_TOKENIZER_DIR
    if saved.is_dir():
        return FastTokenizer.from_pretrained(saved), str(saved)
    source = _recipe_fast(cfg.checkpoint)
    if source is None and shard_set.card is not None:
        options = shard_set.card.build_config.get("options")
        source = options.get("tokenizer") if isinstance(options, dict) else None
    if not source:
        return None, ""
    return FastTokenizer.from_pretrained(source), str(source)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean of every metric per task, plus `count`, and an `all` row over every sample."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for group in (row["task"], "all"):
            for metric, value in row["scores"].items():
                if metric != "count":
                    sums[group][metric].append(float(value))
            sums[group]["count"].append(1.0)
    out: dict[str, dict[str, float]] = {}
    for group, metrics in sums.items():
        out[group] = {m: (sum(v) if m == "count" else sum(v) / len(v)) for m, v in metrics.items()}
    return out


def markdown_table(per_task: dict[str, dict[str, float]]) -> str:
    """One row per task, one column per metric seen (blank where a task has no such metric)."""
    metrics = sorted({m for row in per_task.values() for m in row if m != "count"})
    lines = ["| task | count | " + " | ".join(metrics) + " |", "| --- | --- |" + " --- |" * len(metrics)]
    for task in sorted(per_task, key=lambda t: (t == "all", t)):
        row = per_task[task]
        cells = [f"{row[m]:.3f}" if m in row else "" for m in metrics]
        lines.append(f"| {task} | {int(row['count'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Generate (greedy) and score answers; returns {checkpoint, samples, per_task, predictions}."""
    if not cfg.checkpoint:
        raise ConfigError("evaluate: checkpoint is required")
    if not cfg.data:
        raise ConfigError("evaluate: give at least one shard set (--data)")
    if cfg.out and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise DataError("output path exists and is not a folder", cfg.out)  # before any generation
    sets = [ShardSet(spec, verify=cfg.verify_shards) for spec in cfg.data]
    processor = load_processor(cfg.checkpoint)
    try:
        # generation runs on the CPU here: fp32 weights there, whatever dtype the folder stores (precision rule)
        model = AutoModelForImageTextToText.from_pretrained(
            cfg.checkpoint, dtype=inference_dtype("cpu"), trust_remote_code=False
        )
    except OSError as exc:
        raise ConfigError(f"evaluate: cannot load {cfg.checkpoint!r} ({str(exc).splitlines()[0]})") from exc
    model.eval()
    tail = _vocab_tail_mapping(cfg.checkpoint, processor.tokenizer, embedding_rows(model))
    total = sum(len(s) for s in sets)
    limit = min(total, cfg.max_samples) if cfg.max_samples is not None else total
    rows: list[dict[str, Any]] = []
    tokenizers: dict[int, FastTokenizer | None] = {}
    used: dict[str, str] = {}

    def tokenizer_of(index: int) -> FastTokenizer | None:
        if index not in tokenizers:
            tokenizers[index], where = fast_tokenizer_for(cfg, sets[index])
            if where:
                used[cfg.data[index]] = where
        return tokenizers[index]

    samples = ((i, sample) for i, s in enumerate(sets) for sample in s)
    for index, sample in progress_bar(samples, total=limit, desc="evaluate", unit="sample"):
        if len(rows) >= limit:
            break
        prompt, reference = split_turns(sample)
        messages = prepare_multimodal_messages(prompt, images=list(sample.images))
        inputs: Any = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=False)
        new_ids = generated[0, inputs["input_ids"].shape[1] :].tolist()
        text = processor.decode(new_ids, skip_special_tokens=True)
        if tail is not None and "<fast_" in reference:
            text = answer_text(tail.from_vlm(new_ids))
        fast = tokenizer_of(index) if answer_kind(reference, sample.meta) == "fast" else None
        scores = score_answer(text, reference, sample.meta, fast_tokenizer=fast)
        task = sample.task or "unknown"
        rows.append({"key": sample.key, "task": task, "prediction": text, "reference": reference, "scores": scores})
    per_task = aggregate(rows)
    result = {
        "checkpoint": cfg.checkpoint,
        "samples": len(rows),
        "per_task": per_task,
        "fast_tokenizers": used,
        "predictions": rows,
    }
    if cfg.out:
        with output_lock(cfg.out, "sft evaluate") as lock:
            write_text_atomic(lock.parent / "eval.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
            write_text_atomic(lock.parent / "eval.md", markdown_table(per_task) + "\n")
    return result
