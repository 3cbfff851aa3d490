"""Corpus builds resume after an interruption to byte-identical shards and card (in process, and after a real
kill -9), and `merge` joins the parts of a job-array build into one folder with one card."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from datasets_build.cli import main
from datasets_build.corpora.build import EXECUTION_ONLY, BuildConfig, build_corpus, build_record
from datasets_build.corpora.merge import MergeConfig, merge_corpus
from datasets_build.errors import ConfigError, DataError, OutputExistsError
from datasets_build.outputs import MARKER_FILE
from datasets_build.shards import CARD_NAME, DatasetCard, ShardSet, ShardWriter
from datasets_build.shards.writer import PROGRESS_NAME

PER_SHARD = 7


class Killed(BaseException):
    """Stands in for SIGKILL: raised from inside the writer, with no cleanup run (abort is a no-op)."""


def _cfg(demo_dir: Path, out: Path, **kw: Any) -> BuildConfig:
    return BuildConfig(
        name="robo2vlm", input=str(demo_dir), out=str(out), seed=3, max_samples_per_shard=PER_SHARD, **kw
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def full(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "full"
    build_corpus(_cfg(demo_dir, out))
    return out


def _kill_at(monkeypatch: pytest.MonkeyPatch, nth_write: int) -> None:
    original = ShardWriter.write
    count = {"n": 0}

    def write(self: ShardWriter, sample: Any) -> None:
        count["n"] += 1
        if count["n"] == nth_write:
            raise Killed
        original(self, sample)

    monkeypatch.setattr(ShardWriter, "write", write)
    monkeypatch.setattr(ShardWriter, "abort", lambda self: None)


def test_the_corpus_has_skips_and_several_shards(full: Path) -> None:
    card = DatasetCard.read(full)
    assert len(card.shards) >= 5
    assert card.skipped  # skip counts must come back exactly on resume
    assert card.build_config == build_record(_cfg(Path(card.inputs[0]["path"]), full))
    assert not set(EXECUTION_ONLY) & set(card.build_config)


@pytest.mark.parametrize("nth_write", [1, PER_SHARD + 1, PER_SHARD + 2, 2 * PER_SHARD + 3, 30])
def test_resume_after_a_kill_gives_the_same_bytes(
    demo_dir: Path, full: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nth_write: int
) -> None:
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _kill_at(patch, nth_write)
        with pytest.raises(Killed):
            build_corpus(_cfg(demo_dir, out))  # a plain build: resume was not asked for
    assert not (out / CARD_NAME).exists()
    assert (out / PROGRESS_NAME).is_file()
    with pytest.raises(OutputExistsError, match="resume to continue"):
        build_corpus(_cfg(demo_dir, out))
    summary = build_corpus(_cfg(demo_dir, out, resume=True))
    # a shard is completed when the first sample past it is written: writes 1..nth_write-1 went in
    assert summary["resumed_from"] == PER_SHARD * max(0, (nth_write - 2) // PER_SHARD)
    assert _files(out) == _files(full)


def test_resume_with_workers_and_after_an_interrupt(demo_dir: Path, full: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    original = ShardWriter.write
    seen = {"n": 0}

    def write(self: ShardWriter, sample: Any) -> None:
        seen["n"] += 1
        if seen["n"] == 2 * PER_SHARD + 2:
            raise KeyboardInterrupt
        original(self, sample)

    with monkeypatch.context() as patch:
        patch.setattr(ShardWriter, "write", write)
        with pytest.raises(KeyboardInterrupt):
            build_corpus(_cfg(demo_dir, out, resume=True))
    assert sorted(p.name for p in out.iterdir()) == [
        PROGRESS_NAME,
        MARKER_FILE,
        "robo2vlm-000000.tar",
        "robo2vlm-000001.tar",
    ]  # interrupted: the finished shards, the resume state and the folder's output marker, no partial shard
    with pytest.raises(ConfigError, match="build_config differs"):
        build_corpus(BuildConfig(**{**_cfg(demo_dir, out, resume=True).__dict__, "seed": 4}))
    assert build_corpus(_cfg(demo_dir, out, resume=True, workers=2))["resumed_from"] == 2 * PER_SHARD
    assert _files(out) == _files(full)
    with pytest.raises(OutputExistsError):  # finished: nothing to resume
        build_corpus(_cfg(demo_dir, out, resume=True))


def test_resume_after_a_real_kill_9(demo_dir: Path, full: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = f"""
import os, signal
from datasets_build.shards import ShardWriter
from datasets_build.corpora.build import BuildConfig, build_corpus
original, n = ShardWriter.write, [0]
def write(self, sample):
    n[0] += 1
    if n[0] == {3 * PER_SHARD + 2}:
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, sample)
ShardWriter.write = write
build_corpus(BuildConfig(name="robo2vlm", input={str(demo_dir)!r}, out={str(out)!r}, seed=3,
                         max_samples_per_shard={PER_SHARD}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir())
    assert CARD_NAME not in left
    assert any(name.endswith(".tmp") for name in left)  # the open shard, as a kill leaves it
    args = ["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--out", str(out), "--seed", "3"]
    assert main([*args, "--max-samples-per-shard", str(PER_SHARD), "--resume"]) == 0
    assert _files(out) == _files(full)


# -- merge -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parts(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("parts")
    folders = []
    for index in range(3):
        folders.append(root / f"part-{index}")
        build_corpus(_cfg(demo_dir, folders[-1], num_shards=3, shard_index=index))
    return folders


def test_merge_joins_the_parts_into_one_card(parts: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    summary = merge_corpus(MergeConfig(inputs=[str(p) for p in reversed(parts)], out=str(out), progress=False))
    card = DatasetCard.read(out)
    cards = [DatasetCard.read(p) for p in parts]
    assert summary["parts"] == 3
    assert card.num_samples == sum(c.num_samples for c in cards) == len(ShardSet(out, verify=True))
    assert card.skipped == {k: sum(c.skipped.get(k, 0) for c in cards) for k in {k for c in cards for k in c.skipped}}
    assert card.counts_per_task == {
        t: sum(c.counts_per_task.get(t, 0) for c in cards) for t in {t for c in cards for t in c.counts_per_task}
    }
    assert "shard_index" not in card.build_config
    assert card.build_config["num_shards"] == 3
    assert card.inputs == cards[0].inputs
    copied = [e.sha256 for c in cards for e in c.shards]  # shard-index order, then card order
    assert [e.sha256 for e in card.shards] == copied
    assert [e.name for e in card.shards] == [f"robo2vlm-{i:06d}.tar" for i in range(len(copied))]
    again = tmp_path / "again"
    assert main(["merge", *map(str, parts), "--out", str(again)]) == 0
    assert _files(again) == _files(out)  # deterministic, whatever the order of the inputs
    keys = [s.key for s in ShardSet(out)]
    assert len(keys) == len(set(keys))


def test_merge_refuses_what_is_not_one_complete_build(
    demo_dir: Path, parts: list[Path], tmp_path: Path, capsys
) -> None:
    def refused(inputs: list[Path], needle: str) -> None:
        out = tmp_path / "refused"
        assert main(["merge", *map(str, inputs), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar of a merge under way
        assert err.startswith("error: ")
        assert needle in err, err
        assert not out.exists() or not any(out.iterdir())

    refused(parts[:2], "shard index 2 of num_shards=3 missing")
    refused([*parts, parts[1]], "shard index 1 is given twice")
    other = tmp_path / "other-seed"
    build_corpus(_cfg(demo_dir, other, num_shards=3, shard_index=2, max_samples=5, options={"per_type": 1}))
    capsys.readouterr()
    refused([parts[0], parts[1], other], "build config differs")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for p in parts[2].iterdir():
        if p.name != CARD_NAME:
            (unfinished / p.name).write_bytes(p.read_bytes())
    refused([parts[0], parts[1], unfinished], "incomplete shard folder")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for p in parts[2].iterdir():
        (corrupt / p.name).write_bytes(p.read_bytes())
    tar = next(corrupt.glob("*.tar"))
    data = bytearray(tar.read_bytes())
    data[1000] ^= 0xFF
    tar.write_bytes(bytes(data))
    refused([parts[0], parts[1], corrupt], "sha256 differs from its card")
    single = tmp_path / "single"
    build_corpus(BuildConfig(name="robo2vlm", input=str(demo_dir), out=str(single), max_samples=3))
    capsys.readouterr()
    with pytest.raises(DataError, match="not parts of one build"):
        merge_corpus(MergeConfig(inputs=[str(parts[0]), str(single)], out=str(tmp_path / "x")))
