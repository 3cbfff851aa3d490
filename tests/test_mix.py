"""vqa_mix: quotas, smooth interleaving, determinism, key collisions, errors, resume, and the general-VQA
importers (LLaVA json/jsonl, Hugging Face datasets from save_to_disk and parquet folders), read back with ShardSet."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasets_build.corpora.importers.hf_dataset import import_hf_dataset
from datasets_build.corpora.importers.llava_json import import_llava_json
from datasets_build.corpora.mix import (
    MixConfig,
    MixInput,
    fitting_total,
    largest_remainder,
    load_mix_config,
    mix_shards,
    out_key,
    parse_input_spec,
    smooth_order,
)
from datasets_build.errors import ConfigError, DataError, OutputExistsError
from datasets_build.outputs import MARKER_FILE
from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards import CARD_NAME, DatasetCard, ShardSet, ShardWriter, iter_tar_records
from datasets_build.shards.writer import PROGRESS_NAME

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _picture(i: int, size: int = 16) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.stack([(x * 13 + i) % 256, (y * 7 + 3 * i) % 256, np.full_like(x, (i * 37) % 256)], -1).astype(np.uint8)


def _make_input(folder: Path, name: str, n: int, *, key: str = "k", task: str | None = None, per_shard: int = 4) -> str:
    """A finished shard set of `n` one-image samples with keys `{key}{i:05d}`, task `<name>/q`, source `name`."""
    with ShardWriter(folder, name, max_samples_per_shard=per_shard, build_config={"name": name}) as writer:
        for i in range(n):
            writer.write(
                Sample(
                    key=f"{key}{i:05d}",
                    messages=[user_turn(f"{name} question {i}"), assistant_turn(f"answer {i}")],
                    images=[_picture(i)],
                    task=task or f"{name}/q",
                    source=name,
                    meta={"i": i},
                )
            )
    return str(folder)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("mix_inputs")
    return {
        "vica": _make_input(root / "vica", "vica", 30, key="v"),
        "spacer": _make_input(root / "spacer", "spacer", 12, key="s"),
        "general": _make_input(root / "general", "general", 20, key="g"),
        "twin": _make_input(root / "twin", "twin", 10, key="v"),  # keys collide with vica's
    }


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != MARKER_FILE}


def _mix(out: Path, specs: list[MixInput], **kw: Any) -> dict[str, Any]:
    kw.setdefault("max_samples_per_shard", 7)
    return mix_shards(MixConfig(inputs=specs, out=str(out), progress=False, **kw))


# -- planning ---------------------------------------------------------------------------------------
def test_largest_remainder_and_fitting_total() -> None:
    assert largest_remainder([1, 1, 1], 10) == [4, 3, 3]  # tie: the earlier input
    assert largest_remainder([0.62, 0.38], 1000) == [620, 380]
    for total in range(60):
        shares = largest_remainder([0.5, 0.3, 0.2], total)
        assert sum(shares) == total
        assert all(abs(s - total * w) < 1 for s, w in zip(shares, [0.5, 0.3, 0.2], strict=True))
    # 30 and 12 available at 2:1: 37 -> 24.67 / 12.33 -> [25, 12] fits; 38 -> [25, 13] does not
    assert fitting_total([2, 1], [30, 12]) == 37
    assert largest_remainder([2, 1], 37) == [25, 12]
    assert largest_remainder([2, 1], 38) == [25, 13]
    assert fitting_total([2, 1], [30, None]) == 45


def test_smooth_order_counts_and_prefix_proportions() -> None:
    quotas = [620, 360, 20]
    order = list(smooth_order(quotas))
    assert Counter(order) == {0: 620, 1: 360, 2: 20}
    seen = [0, 0, 0]
    for n, index in enumerate(order, start=1):
        seen[index] += 1
        for i, quota in enumerate(quotas):
            assert abs(seen[i] - n * quota / 1000) < 1.0, (n, i)
    assert list(smooth_order([0, 3])) == [1, 1, 1]


def test_keys_and_input_specs() -> None:
    assert out_key("k00001", None, 0) == "k00001"
    assert out_key("k00001", "vica", 2) == "vica-k00001-r2"
    long = out_key("x" * 80, "general", 1)
    assert len(long) == 80
    assert long != out_key("x" * 79 + "y", "general", 1)
    spec = parse_input_spec("vica=/data/vica@0.62")
    assert (spec.name, spec.path, spec.weight) == ("vica", "/data/vica", 0.62)
    assert parse_input_spec("org/name").path == "org/name"
    assert parse_input_spec("/x/a=b@2", "count") == MixInput(path="/x/a=b", count=2)
    with pytest.raises(ConfigError, match="integer count"):
        parse_input_spec("/x@0.5", "count")


def test_config_from_yaml_flags_and_overrides(tmp_path: Path) -> None:
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(
        "out: runs/mix\nmode: count\ninputs:\n  - {path: /data/vica, count: 600, name: vica}\n"
        "  - {path: /data/llava, count: 400, repeat: true}\n"
    )
    cfg = load_mix_config(str(recipe), seed=None, total=None, overrides={"seed": 5})
    assert cfg.inputs[1] == MixInput(path="/data/llava", count=400, repeat=True)
    assert (cfg.mode, cfg.seed, cfg.out) == ("count", 5, "runs/mix")
    flags = load_mix_config(None, ["a=/x@0.7", "/y@0.3"], out="o", total=100, mode=None, resume=True)
    assert [(i.name, i.path, i.weight) for i in flags.inputs] == [("a", "/x", 0.7), ("", "/y", 0.3)]
    assert (flags.mode, flags.total, flags.resume) == ("weight", 100, True)
    replaced = load_mix_config(str(recipe), ["/z@7"])  # command-line inputs replace the file's
    assert replaced.inputs == [MixInput(path="/z", count=7)]
    with pytest.raises(ConfigError, match="unknown key"):
        load_mix_config(str(recipe), overrides={"totl": 3})
    with pytest.raises(ConfigError, match="needs a count"):
        load_mix_config(str(recipe), overrides={"inputs": [{"path": "/x"}]})


# -- mixing -----------------------------------------------------------------------------------------
def test_count_mode_exact_counts_order_and_metadata(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = tmp_path / "mix"
    summary = _mix(
        out,
        [
            MixInput(inputs["vica"], count=10),
            MixInput(inputs["spacer"], count=12),
            MixInput(inputs["general"], count=5),
        ],
        mode="count",
    )
    assert summary["per_input"] == {"vica": 10, "spacer": 12, "general": 5}
    mixed = list(ShardSet(out, verify=True))
    assert len(mixed) == 27
    per_input = Counter(s.meta["mix_input"] for s in mixed)
    assert per_input == {"vica": 10, "spacer": 12, "general": 5}
    for s in mixed:  # task, source, messages and meta survive; the input name is recorded
        assert s.task == f"{s.meta['mix_input']}/q"
        assert s.source == s.meta["mix_input"]
        assert s.messages[0]["content"][-1]["text"] == f"{s.source} question {s.meta['i']}"
        assert "mix_key" not in s.meta  # no collision among these three
    # within an input, samples keep their order; a count below the size is a spread-out subset
    vica_i = [s.meta["i"] for s in mixed if s.meta["mix_input"] == "vica"]
    assert vica_i == sorted(vica_i)
    assert max(vica_i) > 15
    assert [s.meta["i"] for s in mixed if s.meta["mix_input"] == "spacer"] == list(range(12))
    card = DatasetCard.read(out)
    assert card.build_config["quotas"] == {"vica": 10, "spacer": 12, "general": 5}
    assert card.build_config["mode"] == "count"
    assert card.counts_per_source == {"vica": 10, "spacer": 12, "general": 5}
    vica_card = (Path(inputs["vica"]) / CARD_NAME).read_bytes()
    import hashlib

    assert card.inputs[0]["card_sha256"] == hashlib.sha256(vica_card).hexdigest()
    assert card.inputs[0]["num_samples"] == 30


def test_images_are_copied_byte_for_byte(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = tmp_path / "mix"
    _mix(out, [MixInput(inputs["spacer"], count=12)], mode="count")
    source = {r["__key__"]: r["images.npy"] for p in ShardSet(inputs["spacer"]).shards for r in iter_tar_records(p)}
    copied = {r["__key__"]: r["images.npy"] for p in ShardSet(out).shards for r in iter_tar_records(p)}
    assert copied == source


def test_weight_mode_quotas_and_prefix_proportions(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = tmp_path / "mix"
    summary = _mix(out, [MixInput(inputs["vica"], weight=0.62), MixInput(inputs["general"], weight=0.38)], total=40)
    assert summary["per_input"] == {"vica": 25, "general": 15}  # 24.8 / 15.2 by largest remainder
    names = [s.meta["mix_input"] for s in ShardSet(out)]
    for n in range(1, len(names) + 1):
        assert abs(names[:n].count("vica") - 0.62 * n) <= 1.0
    assert DatasetCard.read(out).build_config["quotas"] == {"vica": 25, "general": 15}
    # total None: the largest mix the inputs can fill at these weights (proportional fallback)
    fallback = _mix(
        tmp_path / "fit", [MixInput(inputs["vica"], weight=2), MixInput(inputs["spacer"], weight=1)], total=None
    )
    assert fallback["per_input"] == {"vica": 25, "spacer": 12}


def test_two_mixes_are_byte_identical_and_seed_matters(tmp_path: Path, inputs: dict[str, str]) -> None:
    specs = [MixInput(inputs["vica"], weight=3), MixInput(inputs["spacer"], weight=1), MixInput(inputs["general"])]
    _mix(tmp_path / "a", specs, total=25, seed=3)
    _mix(tmp_path / "b", specs, total=25, seed=3)
    _mix(tmp_path / "c", specs, total=25, seed=4)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert len(_files(tmp_path / "a")) == 5  # 4 shards of <= 7 + the card
    keys = {s.meta.get("mix_key", s.key) for s in ShardSet(tmp_path / "a")}
    assert keys != {s.meta.get("mix_key", s.key) for s in ShardSet(tmp_path / "c")}


def test_colliding_keys_get_the_input_name(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = tmp_path / "mix"
    _mix(
        out,
        [MixInput(inputs["vica"], count=10), MixInput(inputs["twin"], count=10), MixInput(inputs["spacer"], count=3)],
        mode="count",
    )
    mixed = list(ShardSet(out))
    assert len({s.key for s in mixed}) == 23
    for s in mixed:
        if s.meta["mix_input"] == "spacer":
            assert s.key.startswith("s")
            assert "mix_key" not in s.meta
        else:
            assert s.key == f"{s.meta['mix_input']}-{s.meta['mix_key']}"
    prefixes = {i["name"]: i["key_prefix"] for i in DatasetCard.read(out).build_config["inputs"]}
    assert prefixes == {"vica": "vica", "twin": "twin", "spacer": None}


def test_repeat_cycles_deterministically(tmp_path: Path, inputs: dict[str, str]) -> None:
    out = tmp_path / "mix"
    _mix(out, [MixInput(inputs["spacer"], count=30, repeat=True), MixInput(inputs["general"], count=2)], mode="count")
    spacer = [s for s in ShardSet(out) if s.meta["mix_input"] == "spacer"]
    assert len(spacer) == 30
    assert [s.meta["i"] for s in spacer[:24]] == list(range(12)) * 2  # two full passes, then a seeded subset
    assert [s.key for s in spacer[12:14]] == ["s00000-r1", "s00001-r1"]
    assert all(s.key.endswith("-r2") for s in spacer[24:])
    assert DatasetCard.read(out).build_config["inputs"][0]["passes"] == 3


def test_errors_name_the_input(tmp_path: Path, inputs: dict[str, str]) -> None:
    with pytest.raises(DataError, match="cannot open mix input") as info:
        _mix(tmp_path / "a", [MixInput(inputs["vica"]), MixInput(str(tmp_path / "nowhere"))], total=5)
    assert info.value.where == "inputs[1]"
    with pytest.raises(DataError, match="needs 13 samples but holds 12") as info:
        _mix(tmp_path / "b", [MixInput(inputs["spacer"], count=13)], mode="count")
    assert "spacer" in str(info.value)
    with pytest.raises(DataError, match="needs 20 samples but holds 12"):
        _mix(tmp_path / "c", [MixInput(inputs["spacer"]), MixInput(inputs["general"])], total=40)
    assert not (tmp_path / "b").exists()
    assert not (tmp_path / "c").exists()
    with pytest.raises(ConfigError, match="both named 'vica'"):
        _mix(tmp_path / "d", [MixInput(inputs["vica"]), MixInput(inputs["vica"])], total=4)
    for bad, match in [
        ({"mode": "ratio"}, "mode"),
        ({"mode": "count"}, "needs a count"),
        ({"total": 0}, "total"),
    ]:
        with pytest.raises(ConfigError, match=match):
            MixConfig(inputs=[MixInput(inputs["vica"])], out="o", **bad)
    with pytest.raises(ConfigError, match="weight"):
        MixConfig(inputs=[MixInput(inputs["vica"], weight=0)], out="o")
    with pytest.raises(ConfigError, match="inputs"):
        MixConfig(inputs=[], out="o")


# -- resume -----------------------------------------------------------------------------------------
def test_interrupted_mix_resumes_to_identical_bytes(
    tmp_path: Path, inputs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = [
        MixInput(inputs["vica"], weight=2),
        MixInput(inputs["twin"], weight=1),
        MixInput(inputs["spacer"], weight=1, repeat=True),
    ]
    _mix(tmp_path / "full", specs, total=40, seed=1)

    out = tmp_path / "resumed"
    original = ShardWriter.write_record
    calls = 0

    def interrupt_after_17(self: ShardWriter, record: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls > 17:
            raise KeyboardInterrupt
        original(self, record)

    monkeypatch.setattr(ShardWriter, "write_record", interrupt_after_17)
    with pytest.raises(KeyboardInterrupt):
        _mix(out, specs, total=40, seed=1, resume=True)
    monkeypatch.setattr(ShardWriter, "write_record", original)
    # two shards of 7 completed; the third (3 samples) was open and is gone; no card
    assert sorted(_files(out)) == [PROGRESS_NAME, "vqa_mix-000000.tar", "vqa_mix-000001.tar"]
    assert json.loads((out / PROGRESS_NAME).read_text())["num_samples"] == 14

    with pytest.raises(ConfigError, match="build_config differs"):
        _mix(out, specs, total=40, seed=2, resume=True)
    summary = _mix(out, specs, total=40, seed=1, resume=True)
    assert summary["resumed_from"] == 14
    assert _files(out) == _files(tmp_path / "full")
    with pytest.raises(OutputExistsError):
        _mix(out, specs, total=40, seed=1, resume=True)


def test_resume_before_the_first_shard_and_without_progress(tmp_path: Path, inputs: dict[str, str]) -> None:
    specs = [MixInput(inputs["spacer"], count=5), MixInput(inputs["general"], count=5)]
    _mix(tmp_path / "full", specs, mode="count")
    out = tmp_path / "mix"
    out.mkdir()
    summary = _mix(out, specs, mode="count", resume=True)  # an empty folder: a fresh resumable run
    assert summary["resumed_from"] == 0
    assert _files(out) == _files(tmp_path / "full")


# -- importers --------------------------------------------------------------------------------------
def _write_image(path: Path, i: int, size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_picture(i, 64)[: size[1], : size[0]]).save(path)


def _llava_records() -> list[dict[str, Any]]:
    return [
        {
            "id": "000000033471",
            "image": "coco/train2017/000000033471.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
                {"from": "gpt", "value": "The bus in the image is white and red."},
                {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                {"from": "gpt", "value": "The back of the bus features an advertisement."},
            ],
        },
        {
            "id": "pair-1",
            "image": ["multi/a.png", "multi/b.png"],
            "conversations": [
                {"from": "human", "value": "Image 1: <image>\nImage 2: <image>\nWhich one is brighter?"},
                {"from": "gpt", "value": "The second."},
            ],
        },
        {
            "id": "text-only",
            "conversations": [
                {"from": "human", "value": "Name a primary colour."},
                {"from": "gpt", "value": "Red."},
            ],
        },
        {
            "id": "no-tag",
            "image": "coco/train2017/000000000009.jpg",
            "conversations": [{"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "A tray."}],
        },
        {
            "id": "missing-image",
            "image": "coco/train2017/gone.jpg",
            "conversations": [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}],
        },
        {
            "id": "unanswered",
            "image": "coco/train2017/000000000009.jpg",
            "conversations": [{"from": "human", "value": "<image>\nQ?"}],
        },
    ]


@pytest.fixture
def llava(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "images"
    _write_image(root / "coco/train2017/000000033471.jpg", 1, (64, 48))
    _write_image(root / "coco/train2017/000000000009.jpg", 2)
    _write_image(root / "multi/a.png", 3)
    _write_image(root / "multi/b.png", 4)
    path = tmp_path / "llava_v1_5_mix.json"
    path.write_text(json.dumps(_llava_records()))
    return path, root


def test_llava_json_import(tmp_path: Path, llava: tuple[Path, Path]) -> None:
    path, root = llava
    with pytest.raises(DataError) as info:
        import_llava_json(path, root, tmp_path / "strict", progress=False)
    assert info.value.where == f"{path}:record 4"
    assert info.value.field == "image"
    assert not (tmp_path / "strict" / CARD_NAME).exists()

    summary = import_llava_json(path, root, tmp_path / "out", skip_bad=True, image_size=32, progress=False)
    assert summary["samples"] == 4
    assert summary["skipped"] == {"bad_record:conversations": 1, "bad_record:image": 1}
    samples = list(ShardSet(tmp_path / "out", verify=True))
    assert [s.meta["id"] for s in samples] == ["000000033471", "pair-1", "text-only", "no-tag"]
    multi_turn, pair, text, no_tag = samples
    assert multi_turn.task == "general_vqa/llava_v1_5_mix"
    assert multi_turn.source == "llava_v1_5_mix"
    assert multi_turn.messages == [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "What are the colors of the bus in the image?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "The bus in the image is white and red."}]},
        {"role": "user", "content": [{"type": "text", "text": "What feature can be seen on the back of the bus?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The back of the bus features an advertisement."}]},
    ]
    assert multi_turn.images[0].size == (32, 24)  # capped at 32, aspect kept
    assert multi_turn.meta["turns"] == 2
    assert pair.messages[0]["content"] == [
        {"type": "image"},
        {"type": "image"},
        {"type": "text", "text": "Image 1:Image 2:Which one is brighter?"},
    ]
    assert len(pair.images) == 2
    assert text.images == []
    assert text.messages[0]["content"] == [{"type": "text", "text": "Name a primary colour."}]
    assert len(no_tag.images) == 1
    assert no_tag.images[0].size == (32, 24)
    assert DatasetCard.read(tmp_path / "out").skipped == summary["skipped"]

    limited = import_llava_json(path, root, tmp_path / "two", max_samples=2, dataset="llava665k", progress=False)
    assert limited["samples"] == 2
    assert {s.task for s in ShardSet(tmp_path / "two")} == {"general_vqa/llava665k"}


def test_llava_jsonl_and_tag_mismatch(tmp_path: Path, llava: tuple[Path, Path]) -> None:
    _, root = llava
    records = _llava_records()[:3]
    records[1]["conversations"][0]["value"] = "<image>\nWhich one is brighter?"  # 1 tag, 2 images
    path = tmp_path / "mix.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    with pytest.raises(DataError, match="1 <image> tags but 2 images") as info:
        import_llava_json(path, root, tmp_path / "out", progress=False)
    assert info.value.where == f"{path}:record 1"
    summary = import_llava_json(path, root, tmp_path / "ok", skip_bad=True, progress=False)
    assert summary == {"out": str(tmp_path / "ok"), "samples": 2, "skipped": {"bad_record:conversations": 1}}


def _hf_rows() -> dict[str, list[Any]]:
    def image(i: int) -> Image.Image:
        return Image.fromarray(_picture(i, 24))

    return {
        "messages": [
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A gradient."}]},
            ],
            [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "image"}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": "Same."}]},
            ],
            [
                {"role": "user", "content": [{"type": "text", "text": "No picture here?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Right."}]},
            ],
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Bad row"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
            ],
        ],
        "images": [[image(1)], [image(2), image(3)], [], []],  # the last row lacks its image
    }


def test_hf_dataset_from_save_to_disk(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {
            "messages": [
                {
                    "role": datasets.Value("string"),
                    "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}],
                }
            ],
            "images": datasets.Sequence(datasets.Image()),
        }
    )
    rows = datasets.Dataset.from_dict(_hf_rows(), features=features)
    folder = tmp_path / "cauldron_like"
    datasets.DatasetDict({"train": rows, "test": rows.select([0])}).save_to_disk(str(folder))

    with pytest.raises(DataError, match="1 image parts but 0 images") as info:
        import_hf_dataset(str(folder), "train", tmp_path / "strict", progress=False)
    assert info.value.where == f"{folder}[train]:row 3"
    assert info.value.field == "messages"
    summary = import_hf_dataset(str(folder), "train", tmp_path / "out", skip_bad=True, progress=False)
    assert summary["samples"] == 3
    assert summary["skipped"] == {"bad_record:messages": 1}
    first, second, third = ShardSet(tmp_path / "out")
    assert first.task == "general_vqa/cauldron_like"
    assert first.meta["record_index"] == 0
    assert first.messages[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is shown?"}]
    assert np.abs(np.asarray(first.images[0]).astype(int) - _picture(1, 24)).mean() < 4  # one JPEG pass
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant"]
    assert second.messages[1]["content"] == [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "image"}]
    assert len(second.images) == 2
    assert third.images == []
    assert import_hf_dataset(str(folder), "test", tmp_path / "test", progress=False)["samples"] == 1
    with pytest.raises(DataError, match="no split 'validation'"):
        import_hf_dataset(str(folder), "validation", tmp_path / "none", progress=False)
    with pytest.raises(DataError, match="no column 'pictures'") as info:
        import_hf_dataset(str(folder), "train", tmp_path / "none", images_column="pictures", progress=False)
    assert info.value.field == "pictures"


def test_hf_dataset_from_parquet_folder_with_string_content(tmp_path: Path) -> None:
    import datasets

    rows = datasets.Dataset.from_dict(
        {
            "messages": [
                [{"role": "user", "content": "<image>\nWhat colour?"}, {"role": "assistant", "content": "Blue."}],
                [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
            ],
            "images": [[Image.fromarray(_picture(5, 24))], []],
        },
        features=datasets.Features(
            {
                "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
                "images": datasets.Sequence(datasets.Image()),
            }
        ),
    )
    folder = tmp_path / "vqa_parquet"
    (folder / "data").mkdir(parents=True)
    rows.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    summary = import_hf_dataset(
        str(folder), "train", tmp_path / "out", cache_dir=tmp_path / "hf_cache", dataset="gqa", progress=False
    )
    assert summary["samples"] == 2
    colour, hello = ShardSet(tmp_path / "out")
    assert colour.messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]},
    ]
    assert colour.task == "general_vqa/gqa"
    assert len(colour.images) == 1
    assert hello.images == []


def test_general_vqa_mixes_with_embodied_shards(
    tmp_path: Path, inputs: dict[str, str], llava: tuple[Path, Path]
) -> None:
    path, root = llava
    import_llava_json(path, root, tmp_path / "general_vqa", skip_bad=True, progress=False)
    summary = _mix(
        tmp_path / "mix",
        [MixInput(inputs["vica"], weight=0.62, name="embodied"), MixInput(str(tmp_path / "general_vqa"), weight=0.38)],
        total=10,
    )
    assert summary["per_input"] == {"embodied": 6, "general_vqa": 4}
    tasks = Counter(s.task for s in ShardSet(tmp_path / "mix", verify=True))
    assert tasks == {"vica/q": 6, "general_vqa/llava_v1_5_mix": 4}
