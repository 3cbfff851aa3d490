"""Shard writer, dataset card and reader: round trips, rolling, determinism, failure modes, and the same
shards read by plain webdataset, by `datasets.load_dataset("webdataset")` and by Hub id from the cache."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets_build.errors import ConfigError, DataError, OutputExistsError
from datasets_build.outputs import MARKER_FILE
from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards import (
    CARD_NAME,
    DatasetCard,
    ShardSet,
    ShardWriter,
    fingerprint_path,
    iter_tar_records,
    read_samples,
    shard_file_name,
    tar_file_size,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _picture(i: int, size: int = 32) -> np.ndarray:
    """A smooth, sample-specific RGB image (gradient + a square), so JPEG stays close to the source."""
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x * 255) // size, (y * 255) // size, np.full_like(x, (i * 37) % 256)], axis=-1)
    img[size // 4 : size // 2, size // 4 : size // 2] = [(i * 53) % 256, 40, 200]
    return img.astype(np.uint8)


def _sample(i: int, *, fmt: str = "jpg", n_images: int = 1, target: bool = False, task: str = "t", source: str = "s"):
    return Sample(
        key=f"k{i:05d}",
        messages=[user_turn(f"question {i}", n_images), assistant_turn(f"answer {i}")],
        images=[_picture(i + j) for j in range(n_images)],
        task=task,
        source=source,
        meta={"i": i, "points": [[0.1 * i, 0.2], [3.0, 4.0, 5.0]], "label": "x"},
        target=np.full((8, 8), i % 256, np.uint8) if target else None,
        image_format=fmt,  # type: ignore[arg-type]
    )


def _build(out: Path, samples, **kw) -> DatasetCard:
    with ShardWriter(out, "demo", **kw) as writer:
        for s in samples:
            writer.write(s)
    assert writer.card is not None
    return writer.card


def _final_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != MARKER_FILE)


# -- round trip -------------------------------------------------------------------------------------
def test_round_trip_jpg_png_target_nested_meta(tmp_path: Path) -> None:
    samples = [
        _sample(0, fmt="jpg", n_images=2),
        _sample(1, fmt="png", n_images=1, target=True),
        _sample(2, fmt="png", n_images=3),
        _sample(3, fmt="jpg", n_images=0),
    ]
    samples[2].meta["mixed"] = [1, [2, [3.5, "four"]], {"five": [None, True]}]  # JSON-only, not Arrow-friendly
    _build(tmp_path / "out", samples, max_samples_per_shard=3)
    got = list(ShardSet(tmp_path / "out", verify=True))
    assert [s.key for s in got] == [s.key for s in samples]
    assert got[2].meta["mixed"] == [1, [2, [3.5, "four"]], {"five": [None, True]}]
    for want, have in zip(samples, got, strict=True):
        assert have.messages == want.messages
        assert have.meta == want.meta
        assert (have.task, have.source, have.image_format) == (want.task, want.source, want.image_format)
        assert len(have.images) == len(want.images)
        for a, b in zip(want.images, have.images, strict=True):
            src, back = np.asarray(a), np.asarray(b)
            assert back.shape == src.shape
            if want.image_format == "png":
                np.testing.assert_array_equal(back, src)
            else:
                assert np.abs(back.astype(int) - src.astype(int)).mean() < 3.0
        if want.target is None:
            assert have.target is None
        else:
            np.testing.assert_array_equal(np.asarray(have.target), np.asarray(want.target))


# -- rolling ----------------------------------------------------------------------------------------
def test_roll_by_count(tmp_path: Path) -> None:
    card = _build(tmp_path / "out", [_sample(i) for i in range(10)], max_samples_per_shard=3)
    assert [s.num_samples for s in card.shards] == [3, 3, 3, 1]
    assert [s.name for s in card.shards] == [shard_file_name("demo", i) for i in range(4)]
    assert _final_files(tmp_path / "out") == [CARD_NAME, *(shard_file_name("demo", i) for i in range(4))]


def test_roll_by_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)  # incompressible: ~7 KB PNG per sample

    def noisy(i: int) -> Sample:
        return Sample(
            key=f"n{i:03d}", messages=[user_turn("q"), assistant_turn("a")], images=[noise], image_format="png"
        )

    record = noisy(0).encode()
    per_sample = sum(512 + -(-len(v) // 512) * 512 for k, v in record.items() if k != "__key__")
    limit = tar_file_size(3 * per_sample)
    assert tar_file_size(4 * per_sample) > limit  # a fourth sample would not fit
    card = _build(tmp_path / "out", [noisy(i) for i in range(10)], max_bytes_per_shard=limit)
    assert [s.num_samples for s in card.shards] == [3, 3, 3, 1]
    for entry in card.shards:
        assert entry.bytes == (tmp_path / "out" / entry.name).stat().st_size <= limit
    # one sample larger than the limit still gets written, alone in its shard
    card = _build(tmp_path / "big", [noisy(i) for i in range(3)], max_bytes_per_shard=1000)
    assert [s.num_samples for s in card.shards] == [1, 1, 1]


# -- card -------------------------------------------------------------------------------------------
def test_card_counts_sha_config_inputs_skips(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.txt").write_text("alpha")
    (inputs / "sub").mkdir()
    (inputs / "sub" / "b.bin").write_bytes(b"\0" * 100)
    plan = [("pointing", "bridge"), ("pointing", "calvin"), ("vqa", "bridge"), ("pointing", "bridge")] * 3
    out = tmp_path / "out"
    with ShardWriter(
        out, "demo", max_samples_per_shard=5, build_config={"seed": 3, "path": inputs, "ks": (1, 2)}, inputs=[inputs]
    ) as writer:
        for i, (task, source) in enumerate(plan):
            writer.write(_sample(i, task=task, source=source))
        writer.skip("no_objects")
        writer.skip("no_objects")
        writer.skip("too_short", 3)
    card = DatasetCard.read(out)
    assert card == writer.card
    assert card.num_samples == 12
    assert card.counts_per_task == {"pointing": 9, "vqa": 3}
    assert card.counts_per_source == {"bridge": 9, "calvin": 3}
    assert card.counts_per_task_source == {"pointing": {"bridge": 6, "calvin": 3}, "vqa": {"bridge": 3}}
    assert card.skipped == {"no_objects": 2, "too_short": 3}
    assert card.build_config == {"seed": 3, "path": str(inputs), "ks": [1, 2]}
    assert card.inputs == [fingerprint_path(inputs)]
    assert card.inputs[0]["files"] == 2
    assert card.inputs[0]["bytes"] == 105
    assert [s.num_samples for s in card.shards] == [5, 5, 2]
    for entry in card.shards:
        data = (out / entry.name).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert entry.bytes == len(data)
    text = (out / CARD_NAME).read_text()
    assert "time" not in text
    assert json.loads(text)["schema_version"] == 2


def test_card_validation_names_file_and_field(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, [_sample(i) for i in range(3)])
    raw = json.loads((out / CARD_NAME).read_text())
    for patch, field in [
        ({"schema_version": 99}, "schema_version"),
        ({"num_samples": 4}, "num_samples"),
        ({"shards": [{**raw["shards"][0], "sha256": "xyz"}]}, "shards[0].sha256"),
        ({"shards": [{**raw["shards"][0], "name": "../evil.tar"}]}, "shards[0].name"),
        ({"counts_per_task": {"t": "3"}}, "counts_per_task.t"),
    ]:
        (out / CARD_NAME).write_text(json.dumps({**raw, **patch}))
        with pytest.raises(DataError) as info:
            ShardSet(out)
        assert info.value.where == str(out / CARD_NAME)
        assert info.value.field == field
    with pytest.raises(ConfigError, match="not JSON-serialisable"):
        ShardWriter(tmp_path / "cfg", "demo", build_config={"obj": object()})


def test_fingerprint_is_deterministic_and_content_sensitive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "x.txt").write_text("one")
    (src / "d" / "y.txt").write_text("two")
    first = fingerprint_path(src)
    shutil.copytree(src, tmp_path / "copy")
    assert fingerprint_path(tmp_path / "copy")["fingerprint"] == first["fingerprint"]
    (src / "x.txt").write_text("ONE")  # same size, new content
    assert fingerprint_path(src)["fingerprint"] != first["fingerprint"]
    # past the content budget only names and sizes count (the price of staying cheap on huge folders)
    assert (
        fingerprint_path(src, content_budget_bytes=0)["fingerprint"]
        == fingerprint_path(tmp_path / "copy", content_budget_bytes=0)["fingerprint"]
    )
    single = fingerprint_path(src / "x.txt")
    assert (single["files"], single["bytes"]) == (1, 3)
    with pytest.raises(DataError, match="does not exist"):
        fingerprint_path(tmp_path / "missing")


# -- determinism and failures ----------------------------------------------------------------------
def test_identical_builds_are_byte_identical(tmp_path: Path) -> None:
    def build(out: Path) -> None:
        samples = [_sample(i, fmt="png" if i % 2 else "jpg", target=i % 3 == 0) for i in range(7)]
        _build(out, samples, max_samples_per_shard=3, build_config={"seed": 0})

    build(tmp_path / "a")
    build(tmp_path / "b")
    names = _final_files(tmp_path / "a")
    assert names == _final_files(tmp_path / "b")
    assert len(names) == 4
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_leaves_no_final_file_and_no_card(tmp_path: Path, error: type[BaseException]) -> None:
    out = tmp_path / "out"

    def build_then_fail() -> None:
        with ShardWriter(out, "demo", max_samples_per_shard=3) as writer:
            for i in range(8):
                writer.write(_sample(i))
                if i == 4:  # one shard complete, the second half written
                    assert (out / shard_file_name("demo", 0)).is_file()
                    assert (out / f".{shard_file_name('demo', 1)}.tmp").is_file()
                    raise error("stop")

    with pytest.raises(error):
        build_then_fail()
    assert not out.exists()  # documented choice: completed shards of a failed run are removed, and the folder it made
    # the folder is empty again, so a rerun needs no overwrite
    card = _build(out, [_sample(i) for i in range(2)])
    assert card.num_samples == 2


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="duplicate key") as info:
        _build(tmp_path / "out", [_sample(1), _sample(2), _sample(1)])
    assert info.value.field == "__key__"
    assert not (tmp_path / "out" / CARD_NAME).exists()


def test_existing_folder_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, [_sample(i) for i in range(7)], max_samples_per_shard=2)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError) as info:
        ShardWriter(out, "demo")
    message = str(info.value)
    assert str(out) in message
    assert "\n" not in message
    card = _build(out, [_sample(i) for i in range(2)], overwrite=True)
    assert [s.num_samples for s in card.shards] == [2]
    assert _final_files(out) == [CARD_NAME, shard_file_name("demo", 0), "notes.txt"]


def test_unwritable_output_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError) as info:
        ShardWriter(blocker / "out", "demo")
    assert str(blocker / "out") in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="not a folder"):
        ShardWriter(blocker, "demo")


def test_corrupt_missing_and_truncated_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, [_sample(i) for i in range(6)], max_samples_per_shard=3)
    shard = out / shard_file_name("demo", 1)
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert len(ShardSet(out)) == 6  # same size: only verify notices
    with pytest.raises(DataError, match="sha256") as info:
        ShardSet(out, verify=True)
    assert info.value.where == str(shard)
    shard.write_bytes(bytes(data[:-512]))
    with pytest.raises(DataError, match="size is") as info:
        ShardSet(out)
    assert info.value.where == str(shard)
    shard.unlink()
    with pytest.raises(DataError, match="missing") as info:
        ShardSet(out)
    assert info.value.where == str(shard)


def test_missing_card_requires_opt_in(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, [_sample(i) for i in range(5)], max_samples_per_shard=2)
    (out / CARD_NAME).unlink()
    with pytest.raises(DataError, match="dataset card not found"):
        ShardSet(out)
    loose = ShardSet(out, require_card=False)
    assert loose.card is None
    assert len(loose) == 5
    assert [s.key for s in loose] == [f"k{i:05d}" for i in range(5)]


# -- specs, partitions, shuffling ------------------------------------------------------------------
def test_specs_select_and_shuffle(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(out, [_sample(i) for i in range(10)], max_samples_per_shard=3)
    keys = [f"k{i:05d}" for i in range(10)]
    full = ShardSet(out)
    assert len(full) == 10
    assert [s.key for s in full] == keys
    assert [s.key for s in ShardSet(str(out / "demo-*.tar"))] == keys
    assert [s.key for s in ShardSet([out / shard_file_name("demo", 3), out / shard_file_name("demo", 1)])] == [
        "k00009",
        *keys[3:6],
    ]
    assert len(ShardSet(out / shard_file_name("demo", 1))) == 3

    for by in ("shard", "sample"):
        parts = [full.select(3, i, by=by) for i in range(3)]  # type: ignore[arg-type]
        seen = [[s.key for s in p] for p in parts]
        assert [len(p) for p in parts] == [len(s) for s in seen]
        assert sorted(k for part in seen for k in part) == keys
    assert [s.key for s in full.select(3, 1)] == keys[3:6]
    assert [s.key for s in full.select(3, 1, by="sample")] == keys[1::3]

    a = [s.key for s in full.shuffled(seed=7, buffer_size=4)]
    b = [s.key for s in read_samples(out, shuffle_seed=7, shuffle_buffer=4)]
    c = [s.key for s in full.shuffled(seed=8, buffer_size=4)]
    assert a == b
    assert sorted(a) == keys
    assert a != keys
    assert a != c
    assert [s.key for s in read_samples(out, num_shards=2, shard_index=1)] == [*keys[3:6], "k00009"]
    with pytest.raises(DataError, match="no such shard folder"):
        ShardSet(tmp_path / "nowhere")
    with pytest.raises(DataError, match="glob matches no file"):
        ShardSet(str(tmp_path / "*.tar"))


# -- other readers ---------------------------------------------------------------------------------
def test_plain_webdataset_reads_the_shards(tmp_path: Path) -> None:
    import webdataset as wds

    out = tmp_path / "out"
    samples = [_sample(i, fmt="png", n_images=2 - i % 2, target=i == 1) for i in range(5)]
    card = _build(out, samples, max_samples_per_shard=2)
    urls = [str(out / s.name) for s in card.shards]
    records = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert [r["__key__"] for r in records] == [s.key for s in samples]
    for want, rec in zip(samples, records, strict=True):
        assert {"json", "images.npy", "targets.npy"} <= set(rec)  # the same members in every record
        assert len(rec["targets.npy"]) == (want.target is not None)
        payload = rec["json"]
        assert payload["messages"] == want.messages
        assert json.loads(payload["meta"]) == want.meta
        images = [Image.open(io.BytesIO(b)) for b in rec["images.npy"]]
        assert len(images) == len(want.images)
        np.testing.assert_array_equal(np.asarray(images[-1]), np.asarray(want.images[-1]))


def test_datasets_load_dataset_reads_the_shards(tmp_path: Path) -> None:
    import datasets

    from datasets_build.shards.hf import FEATURES

    out = tmp_path / "out"
    samples = [_sample(i, fmt="png", n_images=1 + i % 3, task="pointing", source="demo") for i in range(6)]
    samples[4].meta["label"] = 7  # a meta value whose type differs between records
    card = _build(out, samples, max_samples_per_shard=4)
    files = [str(out / s.name) for s in card.shards]
    cache = str(tmp_path / "hf_datasets")
    inferred = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", cache_dir=cache)
    assert len(inferred) == 6
    assert inferred.features["images.npy"] == datasets.List(datasets.Value("binary"))
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train", features=FEATURES)
    for want, row, raw in zip(samples, ds, inferred, strict=True):
        assert row["__key__"] == want.key
        assert len(row["images.npy"]) == len(want.images) == len(raw["images.npy"])
        np.testing.assert_array_equal(np.asarray(row["images.npy"][0]), np.asarray(want.images[0]))
        assert row["targets.npy"] == []
        payload = row["json"]
        assert (payload["task"], payload["source"], payload["schema_version"]) == ("pointing", "demo", 2)
        assert json.loads(payload["meta"]) == want.meta
        # Arrow unifies struct fields: image parts come back with "text": None
        texts = [[p.get("text") for p in m["content"]] for m in payload["messages"]]
        assert texts == [[None] * len(want.images) + [f"question {want.meta['i']}"], [f"answer {want.meta['i']}"]]


def _populate_hub_cache(hub_cache: Path, repo_id: str, folder: Path) -> Path:
    """The layout `snapshot_download` resolves offline: datasets--ORG--NAME/{refs/main, snapshots/<hash>/}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / f"datasets--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_open_by_hub_id_from_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HOME / HF_HUB_OFFLINE into `constants` once, at import. Setting the env
    alone is too late in a test session, so we set both the env and the module constants (monkeypatch
    undoes both); passing `cache_dir` explicitly is checked too."""
    from huggingface_hub import constants

    out = tmp_path / "out"
    samples = [_sample(i) for i in range(5)]
    _build(out, samples, max_samples_per_shard=2)
    hf_home = tmp_path / "hf_home"
    snapshot = _populate_hub_cache(hf_home / "hub", "toolkit-org/demo-shards", out)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    by_id = ShardSet("toolkit-org/demo-shards", verify=True)
    assert by_id.root.resolve() == snapshot.resolve()
    assert len(by_id) == 5
    assert [s.key for s in by_id] == [s.key for s in samples]
    assert by_id.card is not None
    assert by_id.card.name == "demo"

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    explicit = ShardSet("toolkit-org/demo-shards", cache_dir=hf_home / "hub")
    assert [s.key for s in explicit] == [s.key for s in samples]
    with pytest.raises(DataError) as info:
        ShardSet("toolkit-org/not-cached")
    assert info.value.where == "toolkit-org/not-cached"
    assert "\n" not in str(info.value)


def test_open_by_hub_id_in_a_fresh_process(tmp_path: Path) -> None:
    """The user's path: HF_HOME and HF_HUB_OFFLINE set before Python starts, nothing patched."""
    import subprocess
    import sys

    out = tmp_path / "out"
    _build(out, [_sample(i) for i in range(3)])
    hf_home = tmp_path / "hf_home"
    _populate_hub_cache(hf_home / "hub", "toolkit-org/demo-shards", out)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    code = "from datasets_build.shards import ShardSet; print([s.key for s in ShardSet('toolkit-org/demo-shards')])"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(["k00000", "k00001", "k00002"])


# -- resume and raw records ------------------------------------------------------------------------
def _interrupted(out: Path, stop_after: int, **kw) -> None:
    """A resumable build of k00000.. that is interrupted once `stop_after` samples went in."""

    def build() -> None:
        with ShardWriter(out, "demo", resume=True, **kw) as writer:
            for i in range(stop_after):
                writer.write(_sample(i, task="t" if i % 3 else "u"))
            writer.skip("no_objects")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build()


def test_resume_continues_an_interrupted_build_to_identical_bytes(tmp_path: Path) -> None:
    config = {"seed": 1}
    full = tmp_path / "full"
    _build(
        full, [_sample(i, task="t" if i % 3 else "u") for i in range(10)], max_samples_per_shard=3, build_config=config
    )

    out = tmp_path / "out"
    _interrupted(out, 8, max_samples_per_shard=3, build_config=config)
    # the open third shard is gone; the two completed shards and the progress file stay
    assert _final_files(out) == [".progress.json", shard_file_name("demo", 0), shard_file_name("demo", 1)]
    progress = json.loads((out / ".progress.json").read_text())
    assert progress["num_samples"] == 6
    assert progress["counts_per_task"] == {"t": 4, "u": 2}
    assert [s["name"] for s in progress["shards"]] == [shard_file_name("demo", 0), shard_file_name("demo", 1)]

    with ShardWriter(out, "demo", resume=True, max_samples_per_shard=3, build_config=config) as writer:
        assert writer.resumed_from == writer.num_samples == 6
        assert "k00005" in writer
        assert "k00006" not in writer
        with pytest.raises(DataError, match="duplicate key"):
            writer.write(_sample(5))
        for i in range(6, 10):
            writer.write(_sample(i, task="t" if i % 3 else "u"))
    assert not (out / ".progress.json").exists()
    assert _final_files(out) == _final_files(full)
    for name in _final_files(full):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    (out / ".progress.json").write_text("{}")  # as if killed between writing the card and removing this
    with pytest.raises(OutputExistsError, match="finished build"):
        ShardWriter(out, "demo", resume=True)


def test_resume_after_a_hard_kill_and_its_checks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _interrupted(out, 7, max_samples_per_shard=3)
    # a hard kill can leave a shard completed after the last progress write, and a temp file
    (out / shard_file_name("demo", 2)).write_bytes((out / shard_file_name("demo", 1)).read_bytes())
    (out / f".{shard_file_name('demo', 3)}.tmp").write_bytes(b"partial")
    with pytest.raises(ConfigError, match="max_samples_per_shard differs"):
        ShardWriter(out, "demo", resume=True, max_samples_per_shard=4)
    with pytest.raises(ConfigError, match="build_config differs"):
        ShardWriter(out, "demo", resume=True, max_samples_per_shard=3, build_config={"seed": 2})
    writer = ShardWriter(out, "demo", resume=True, max_samples_per_shard=3)
    assert writer.num_samples == 6
    assert _final_files(out) == [".progress.json", shard_file_name("demo", 0), shard_file_name("demo", 1)]
    card = writer.close()
    assert card.num_samples == 6
    assert card.skipped == {}  # the skip came after the last completed shard
    assert len(ShardSet(out, verify=True)) == 6

    damaged = tmp_path / "damaged"
    _interrupted(damaged, 4, max_samples_per_shard=3)
    shard = damaged / shard_file_name("demo", 0)
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="changed since the interrupted run") as info:
        ShardWriter(damaged, "demo", resume=True, max_samples_per_shard=3)
    assert info.value.where == str(shard)


def test_resume_needs_progress_and_overwrite_clears_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _interrupted(out, 1, max_samples_per_shard=3)  # interrupted before any shard completed
    assert _final_files(out) == [".progress.json"]
    with pytest.raises(OutputExistsError):
        ShardWriter(out, "demo")  # without resume a progress file is like any other output
    card = _build(out, [_sample(0)], overwrite=True)
    assert card.num_samples == 1
    assert _final_files(out) == [CARD_NAME, shard_file_name("demo", 0)]
    with pytest.raises(OutputExistsError):
        ShardWriter(out, "demo", resume=True)  # a finished build without progress: nothing to resume


def test_write_record_copies_encoded_records_byte_for_byte(tmp_path: Path) -> None:
    samples = [_sample(i, fmt="png" if i % 2 else "jpg", n_images=i % 3, target=i == 4) for i in range(6)]
    card = _build(tmp_path / "a", samples, max_samples_per_shard=4)
    with ShardWriter(tmp_path / "b", "demo", max_samples_per_shard=4) as writer:
        for entry in card.shards:
            for record in iter_tar_records(tmp_path / "a" / entry.name):
                writer.write_record(record)
    assert writer.card is not None
    assert writer.card.dumps() == card.dumps()
    for entry in card.shards:
        assert (tmp_path / "b" / entry.name).read_bytes() == (tmp_path / "a" / entry.name).read_bytes()
    record = samples[2].encode()  # two jpg images
    with ShardWriter(tmp_path / "c", "demo") as writer:
        for bad, match in [
            ({**record, "__key__": "bad key"}, "keys are"),
            ({k: v for k, v in record.items() if k != "images.npy"}, "members"),
            ({**record, "images.npy": record["targets.npy"]}, "image parts"),
            ({**record, "json": b"{"}, "invalid JSON"),
        ]:
            with pytest.raises(DataError, match=match):
                writer.write_record(bad)
        writer.write_record(record)
        with pytest.raises(DataError, match="duplicate key"):
            writer.write_record(record)


def test_layout_1_shards_read_and_copy_into_layout_2(tmp_path: Path) -> None:
    from datasets_build.sample import unpack_images
    from tests.helpers import legacy_record, write_legacy_shards

    samples = [_sample(i, fmt="png" if i % 2 else "jpg", n_images=i % 3, target=i == 1) for i in range(5)]
    old = write_legacy_shards(tmp_path / "old", "demo", samples, per_shard=2)
    shard_set = ShardSet(old, verify=True)
    assert shard_set.card is not None
    assert shard_set.card.schema_version == 1
    for want, have in zip(samples, shard_set, strict=True):
        assert (have.key, have.meta, len(have.images)) == (want.key, want.meta, len(want.images))
        assert (have.target is None) == (want.target is None)
    with ShardWriter(tmp_path / "new", "demo") as writer:
        for record in shard_set.records():
            writer.write_record(record)
    assert writer.card is not None
    assert writer.card.schema_version == 2
    for want, record in zip(samples, ShardSet(tmp_path / "new").records(), strict=True):
        legacy = legacy_record(want)
        images = [legacy[f"{i}.{want.image_format}"] for i in range(len(want.images))]
        assert unpack_images(record["images.npy"]) == images  # image bytes copied, never re-encoded
        assert json.loads(json.loads(record["json"])["meta"]) == want.meta
    broken = {**legacy_record(samples[2]), "__key__": "k99999"}
    del broken["1.jpg"]
    with ShardWriter(tmp_path / "bad", "demo") as writer, pytest.raises(DataError, match="members"):
        writer.write_record(broken)
