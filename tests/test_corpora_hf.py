"""Every corpus built from demo episodes, and a mix of all of them with a layout-1 input, reads the same through
`ShardSet`, plain `webdataset`, `datasets.load_dataset("webdataset", data_files=...)` (schema inferred, and with
the toolkit's features) and TRL's `SFTTrainer` (`images` + `messages`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from datasets_build.corpora import BuildConfig, build_corpus
from datasets_build.corpora.mix import MixConfig, MixInput, mix_shards
from datasets_build.errors import DataError
from datasets_build.shards import ShardSet
from datasets_build.shards.hf import load_shards, to_trl
from tests.helpers import write_legacy_shards

CORPORA = ("robopoint", "vica", "bridgevqa", "robo2vlm", "sharerobot", "omni_generation", "fast_tokens")


@pytest.fixture(scope="module")
def built(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each corpus (10 samples), a layout-1 copy of some vica clips, and a mix of all of them."""
    from datasets_build.fast.fit import FitFastConfig, fit_fast

    root = tmp_path_factory.mktemp("hf_corpora")
    fit_fast(FitFastConfig(source="demo", input=str(demo_dir), out=str(root / "fast"), horizon=4))
    out: dict[str, Path] = {}
    for name in CORPORA:
        options = {"tokenizer": str(root / "fast")} if name == "fast_tokens" else {}
        out[name] = root / name
        build_corpus(BuildConfig(name=name, input=str(demo_dir), out=str(out[name]), max_samples=10, options=options))
    clips = [s for s in ShardSet(out["vica"]) if len(s.images) > 1][:3]
    singles = list(ShardSet(out["robo2vlm"]))[:3]
    for i, sample in enumerate(singles):
        sample.key = f"legacy-{i}"
        sample.meta = {"answer": i, "kind": "legacy"}  # a meta key whose type differs from other corpora's
    out["legacy"] = write_legacy_shards(root / "legacy", "legacy", [*clips, *singles])
    inputs = [MixInput(str(out[name]), count=len(ShardSet(out[name]))) for name in (*CORPORA, "legacy")]
    out["mix"] = root / "mix"
    mix_shards(MixConfig(inputs=inputs, mode="count", out=str(out["mix"]), max_samples_per_shard=16, progress=False))
    return out


def test_the_corpora_vary_in_what_used_to_break_datasets(built: dict[str, Path]) -> None:
    counts = {len(s.images) for s in ShardSet(built["mix"])}
    assert len(counts) > 1  # vica clips beside single images
    assert any(s.target is not None for s in ShardSet(built["mix"]))  # omni targets beside none
    assert ShardSet(built["legacy"]).card.schema_version == 1
    assert ShardSet(built["mix"]).card.schema_version == 2


@pytest.mark.parametrize("name", [*CORPORA, "mix"])
def test_datasets_infers_one_schema_and_the_features_decode_images(
    built: dict[str, Path], name: str, tmp_path: Path
) -> None:
    shard_set = ShardSet(built[name])
    files = [str(p) for p in shard_set.shards]
    inferred = datasets.load_dataset("webdataset", data_files=files, split="train", cache_dir=str(tmp_path))
    assert len(inferred) == len(shard_set)
    assert set(inferred.column_names) == {"json", "images.npy", "targets.npy", "__key__", "__url__"}
    ds = load_shards(built[name], cache_dir=tmp_path)
    samples = list(shard_set)
    assert [row["__key__"] for row in ds] == [s.key for s in samples]
    for sample, row in zip(samples, ds, strict=True):
        assert json.loads(row["json"]["meta"]) == sample.meta
        assert row["json"]["task"] == sample.task
        assert len(row["images.npy"]) == len(sample.images)
        for have, want in zip(row["images.npy"], sample.images, strict=True):
            assert isinstance(have, Image.Image)
            np.testing.assert_array_equal(np.asarray(have), np.asarray(want))  # the same bytes decoded
        assert len(row["targets.npy"]) == (sample.target is not None)


@pytest.mark.parametrize("name", ["vica", "mix"])
def test_plain_webdataset_and_streaming_datasets_read_every_record(built: dict[str, Path], name: str) -> None:
    import webdataset as wds

    shard_set = ShardSet(built[name])
    samples = {s.key: s for s in shard_set}
    records = list(wds.WebDataset([str(p) for p in shard_set.shards], shardshuffle=False).decode())
    assert [r["__key__"] for r in records] == list(samples)
    for record in records:
        want = samples[record["__key__"]]
        assert record["json"]["messages"] == want.messages or want.key.startswith("legacy")
        assert len(record["images.npy"]) == len(want.images)
        Image.open(io.BytesIO(record["images.npy"][0])).load()
    streamed = load_shards(built[name], streaming=True)
    assert [row["__key__"] for row in streamed] == list(samples)


def test_trl_rows_from_datasets_match_the_toolkit_rows(built: dict[str, Path]) -> None:
    from sft.data import sample_row

    rows = to_trl(load_shards(built["mix"]))
    assert rows.column_names == ["images", "messages", "task", "__key__"]
    streamed = to_trl(load_shards(built["mix"], streaming=True))
    for sample, row, lazy in zip(ShardSet(built["mix"]), rows, streamed, strict=True):
        want = sample_row(sample)
        assert row["task"] == lazy["task"] == want["task"]
        assert len(row["images"]) == len(lazy["images"]) == len(want["images"])
        for message, expected in zip(row["messages"], want["messages"], strict=True):
            parts = [{k: v for k, v in part.items() if v is not None} for part in message["content"]]
            assert parts == expected["content"]


def test_layout_1_folders_read_in_shardset_and_are_refused_by_load_shards_with_a_hint(
    built: dict[str, Path],
) -> None:
    samples = list(ShardSet(built["legacy"]))
    assert len(samples) == 6
    assert {len(s.images) for s in samples} == {1, 4}
    with pytest.raises(DataError, match=r"layout 1.*mix"):
        load_shards(built["legacy"])


@pytest.mark.slow
def test_sft_trainer_takes_the_loaded_dataset(built: dict[str, Path], tmp_path: Path) -> None:
    """TRL's SFTTrainer trains on `to_trl(load_shards(...))` with the loss on the assistant answers only."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from datasets_build.tiny_models import install_tiny_backbones

    install_tiny_backbones(ids=["Qwen/Qwen2.5-VL-3B-Instruct"])
    processor = AutoProcessor.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")
    model = AutoModelForImageTextToText.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")
    dataset = to_trl(load_shards(built["mix"], streaming=True)).remove_columns(["task", "__key__"])
    args = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        per_device_train_batch_size=2,
        max_length=None,
        assistant_only_loss=True,
        report_to=[],
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16; the CPU run stays fp32
        save_strategy="no",
        logging_steps=1,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] != -100).any()
    assert (batch["labels"] == -100).any()
    trainer.train()
    assert trainer.state.global_step == 2
    assert all(np.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
