"""FAST action tokens in SFT: `new_tokens` adds rows that train while the old rows stay bit-identical under
frozen embeddings and weight decay; `vocab_tail` keeps the vocabulary and puts the answer on its tail ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoProcessor

from datasets_build.checkpoint import FAST_TOKENIZER_DIR
from datasets_build.configs import build_config
from datasets_build.fast import FastTokenizer, parse_answer
from datasets_build.fast.vocab import FastVocabMapping
from datasets_build.shards import fingerprint_path
from sft.config import SFTTrainConfig
from sft.data import open_sources, stream_dataset
from sft.evaluate import EvaluateConfig, evaluate
from sft.train import build_trainer, finish

QWEN25 = "Qwen/Qwen2.5-VL-3B-Instruct"


@pytest.fixture(scope="module")
def fast_corpus(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from datasets_build.corpora import BuildConfig, build_corpus
    from datasets_build.fast.fit import FitFastConfig, fit_fast
    from datasets_build.tiny_models import install_tiny_backbones

    install_tiny_backbones(ids=[QWEN25])
    root = tmp_path_factory.mktemp("sft_fast")
    tokenizer = root / "fast"
    fit_fast(FitFastConfig(source="demo", input=str(demo_dir), out=str(tokenizer), horizon=4, vocab_size=96))
    corpus = root / "fast_tokens"
    options = {"tokenizer": str(tokenizer), "stride": 4}
    build_corpus(BuildConfig(name="fast_tokens", input=str(demo_dir), out=str(corpus), max_samples=16, options=options))
    return tokenizer, corpus


def make_cfg(fast_corpus: tuple[Path, Path], out: Path, mapping: str, **layers: Any) -> SFTTrainConfig:
    tokenizer, corpus = fast_corpus
    base = {
        "model": QWEN25,
        "data": [{"path": str(corpus)}],
        "output_dir": str(out),
        "shuffle_buffer": 4,
        "fast": {"tokenizer": str(tokenizer), "mapping": mapping},
        "trainer": {"max_steps": 2, "save_steps": 100, "learning_rate": 1e-2, "weight_decay": 0.1},
    }
    return build_config(SFTTrainConfig, base, layers, where="test")


def test_new_tokens_train_only_the_added_rows(fast_corpus, tmp_path):
    rows = AutoConfig.from_pretrained(QWEN25).get_text_config().vocab_size
    base_ids = len(AutoProcessor.from_pretrained(QWEN25).tokenizer)
    assert base_ids < rows  # the tiny Qwen pads its embeddings past the tokenizer, as the release does
    run = build_trainer(make_cfg(fast_corpus, tmp_path / "run", "new_tokens", freeze={"word_embeddings": True}))
    fast = run.fast
    assert fast is not None
    assert fast.first_new_row == base_ids  # <fast_0> is the first id after the tokenizer, inside the padding rows
    embedding = run.trainer.model.get_input_embeddings().weight
    assert embedding.shape[0] == max(rows, base_ids + fast.mapping.fast_vocab_size)
    assert embedding.requires_grad
    assert "only the added FAST rows train" in run.table
    decay = run.trainer.get_decay_parameter_names(run.trainer.model)
    assert not any("embed_tokens" in n for n in decay)
    before = embedding.detach().clone()
    run.trainer.train()
    after = run.trainer.model.get_input_embeddings().weight.detach()
    assert torch.equal(before[:base_ids], after[:base_ids])  # old rows: no gradient, no decay
    assert not torch.equal(before[base_ids:], after[base_ids:])  # answer tokens moved
    final = finish(run, {})
    processor = AutoProcessor.from_pretrained(final)
    assert processor.tokenizer.convert_tokens_to_ids("<fast_0>") == base_ids
    assert AutoConfig.from_pretrained(final).get_text_config().vocab_size == embedding.shape[0]
    # the checkpoint carries the FAST tokenizer it was trained with, and its card says which one
    tokenizer, corpus = fast_corpus
    saved = final / FAST_TOKENIZER_DIR
    assert fingerprint_path(saved)["fingerprint"] == fingerprint_path(tokenizer)["fingerprint"]
    card = (final / "README.md").read_text()
    assert str(tokenizer) in card
    assert fingerprint_path(tokenizer)["fingerprint"] in card
    # evaluate decodes the answers through it: decoded-action L1 and the invalid rate, not exact match alone
    result = evaluate(EvaluateConfig(checkpoint=str(final), data=[str(corpus)], max_samples=4, max_new_tokens=12))
    assert result["fast_tokenizers"] == {str(corpus): str(saved)}
    scores = result["per_task"]["fast_tokens/next_actions"]
    assert scores["count"] == 4
    assert 0.0 <= scores["fast_invalid"] <= 1.0
    assert "exact_match" in scores
    for row in result["predictions"]:
        assert ("fast_l1" in row["scores"]) == (row["scores"]["fast_invalid"] == 0.0)


def test_fast_answers_score_through_the_tokenizer(fast_corpus):
    from datasets_build.answers import score_answer
    from datasets_build.shards import ShardSet

    tokenizer = FastTokenizer.from_pretrained(fast_corpus[0])
    sample = next(iter(ShardSet(fast_corpus[1])))
    reference = sample.messages[-1]["content"][0]["text"]
    perfect = score_answer(reference, reference, sample.meta, fast_tokenizer=tokenizer)
    assert perfect["exact_match"] == 1.0
    assert perfect["fast_invalid"] == 0.0
    assert perfect["fast_l1"] < 0.05  # the quantisation error only
    broken = score_answer("<fast_1>", reference, sample.meta, fast_tokenizer=tokenizer)
    assert broken == {"exact_match": 0.0, "fast_invalid": 1.0}
    assert score_answer(reference, reference, sample.meta) == {"exact_match": 1.0}  # no tokenizer: exact match


def test_vocab_tail_keeps_the_vocabulary_and_labels_the_tail(fast_corpus, tmp_path):
    rows = AutoConfig.from_pretrained(QWEN25).get_text_config().vocab_size
    run = build_trainer(make_cfg(fast_corpus, tmp_path / "run", "vocab_tail"), verbose=False)
    assert run.fast is not None
    assert run.fast.first_new_row is None
    assert run.trainer.model.get_input_embeddings().weight.shape[0] == rows
    assert len(run.loaded.processor.tokenizer) <= rows  # the saved processor gets no placeholder tokens
    tokenizer = run.loaded.processor.tokenizer
    mapping = FastVocabMapping(
        "vocab_tail", FastTokenizer.from_pretrained(fast_corpus[0]).vocab_size, tokenizer.vocab_size
    )
    assert run.fast.mapping == mapping  # counted from the tokenizer's ordinary vocabulary, not the embedding rows
    assert max(mapping.to_vlm([0])) < tokenizer.convert_tokens_to_ids("<|endoftext|>")
    examples = [r for _, r in zip(range(3), stream_dataset(open_sources(run.cfg.data), 0, 1), strict=False)]
    batch = run.trainer.data_collator(examples)
    assert int(batch["input_ids"].max()) < rows
    end = run.loaded.processor.tokenizer.encode("<|im_end|>\n")
    for i, example in enumerate(examples):
        ids = parse_answer(example["messages"][-1]["content"][0]["text"])
        labels = batch["labels"][i]
        assert labels[labels != -100].tolist() == mapping.to_vlm(ids) + end
    run.trainer.train()
    assert run.trainer.state.global_step == 2
