"""The safeguards of issue 19 that the bad-input catalogue does not show by an exit code: what overwrite may
delete, staged outputs, LeRobot byte tasks, SFT mixing weights across workers x ranks, the newest complete
SFT checkpoint, the default HF cache, and the exit code of an interrupt."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datasets_build.errors import EXIT_INTERRUPTED, ConfigError, DataError, OutputExistsError
from datasets_build.outputs import (
    MARKER_FILE,
    OVERWRITE_HINT,
    claim_output_folder,
    marker_kind,
    prepare_output_folder,
    remove_output,
    staged_output_folder,
    write_marker,
)
from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards import ShardWriter


# -- what overwrite may delete ---------------------------------------------------------------------
@pytest.mark.parametrize("which", ["cwd", "parent", "home", "root"])
def test_overwrite_never_deletes_cwd_parents_home_or_root(
    which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    target = {"cwd": work, "parent": tmp_path, "home": tmp_path / "home", "root": Path("/")}[which]
    if which != "root":
        write_marker(target, "fit-fast")  # marked as this command's: still never deleted
        (target / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="refusing"):
        remove_output(target, "fit-fast")
    with pytest.raises(ConfigError, match="refusing"):
        prepare_output_folder(target, "fit-fast", overwrite=True)
    if which != "root":
        assert (target / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_only_a_folder_of_the_same_kind(tmp_path: Path) -> None:
    out = prepare_output_folder(tmp_path / "out", "vla train", overwrite=False)
    assert marker_kind(out) == "vla train"
    (out / "old.bin").write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_output_folder(out, "vla train", overwrite=False)
    with pytest.raises(OutputExistsError, match="`vla train`"):
        prepare_output_folder(out, "sft train", overwrite=True)
    assert (out / "old.bin").exists()
    prepare_output_folder(out, "vla train", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExistsError, match=MARKER_FILE):
        prepare_output_folder(foreign, "vla train", overwrite=True)
    assert (foreign / "thesis.tex").exists()
    assert "--overwrite" in OVERWRITE_HINT


def test_resume_keeps_the_folder(tmp_path: Path) -> None:
    out = prepare_output_folder(tmp_path / "out", "sft train", overwrite=False)
    (out / "checkpoint-1").mkdir()
    prepare_output_folder(out, "sft train", overwrite=False, resume=True)
    assert (out / "checkpoint-1").is_dir()


def test_staged_output_leaves_nothing_on_error_and_replaces_its_own_folder(tmp_path: Path) -> None:
    out = tmp_path / "tok"

    def killed_half_way() -> None:
        with staged_output_folder(out, "fit-fast", overwrite=False) as tmp:
            (tmp / "half.json").write_text("{")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        killed_half_way()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with staged_output_folder(out, "fit-fast", overwrite=False) as tmp:
        (tmp / "v1.json").write_text("1")
    with staged_output_folder(out, "fit-fast", overwrite=True) as tmp:
        (tmp / "v2.json").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "v2.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_claimed_folder_is_removed_when_the_command_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError), claim_output_folder(tmp_path / "out", "sft evaluate", overwrite=False):
        raise ConfigError("bad argument")
    assert not (tmp_path / "out").exists()


def test_lerobot_writer_overwrite_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    from datasets_build.lerobot import LeRobotWriter

    root = tmp_path / "ds"
    root.mkdir()
    (root / "notes.txt").write_text("mine")
    features = {"action": {"dtype": "float32", "shape": [7], "names": None}}
    with pytest.raises(OutputExistsError, match=MARKER_FILE):
        LeRobotWriter(root, fps=10, features=features, overwrite=True)
    assert (root / "notes.txt").read_text() == "mine"


def test_training_runs_refuse_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vla.configuration_vla import VLATrainConfig
    from vla.train import _prepare_out

    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="working folder"):
        _prepare_out(VLATrainConfig(out=".", overwrite=True))
    assert (tmp_path / "keep.txt").exists()


# -- inputs ----------------------------------------------------------------------------------------------
def test_lerobot_tasks_stored_as_utf8_bytes_are_decoded(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes
    from datasets_build.sources import open_source

    ds = tmp_path / "ds"
    record_demo_episodes(DemoEpisodesConfig(out=str(ds), episodes=1, tasks=["pick_block"], image_size=64))
    path = ds / "meta/tasks.parquet"
    table = pq.read_table(path)
    column = "__index_level_0__" if "__index_level_0__" in table.column_names else "task"
    text = table.column(column).to_pylist()[0]
    encoded = pa.array([f"{text} — café".encode() for _ in range(table.num_rows)], pa.binary())
    pq.write_table(table.set_column(table.column_names.index(column), column, encoded), path)
    episode = next(open_source("demo", ds).episodes())
    assert episode.instruction == f"{text} — café"
    assert "b'" not in episode.instruction


def test_skip_bad_with_nothing_left_fails_and_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match="skipped"), ShardWriter(out, "demo") as writer:
        writer.skip("bad_episode:actions", 3)
    assert not out.exists()


def test_tiny_models_never_install_into_the_default_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets_build.tiny_models import install_tiny_backbones

    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(ConfigError, match="hf-home"):
        install_tiny_backbones(ids=["Qwen/Qwen2.5-VL-3B-Instruct"])


def test_an_interrupt_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from datasets_build.cli import run_cli

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    assert run_cli(interrupted, argparse.Namespace()) == EXIT_INTERRUPTED
    assert capsys.readouterr().err.strip() == "interrupted"


# -- SFT -------------------------------------------------------------------------------------------------
def _shard_set(out: Path, name: str, samples: int, per_shard: int) -> Path:
    with ShardWriter(out, name, max_samples_per_shard=per_shard) as writer:
        for i in range(samples):
            image = np.full((8, 8, 3), i % 255, np.uint8)
            messages = [user_turn(f"q{i}", 1), assistant_turn(f"a{i}")]
            writer.write(Sample(key=f"{name}{i:04d}", messages=messages, images=[image], task=f"{name}/t"))
    return out


@pytest.mark.parametrize(("world", "workers"), [(2, 2), (3, 1)])
def test_sft_mixing_weights_hold_on_every_worker_of_every_rank(tmp_path: Path, world: int, workers: int) -> None:
    from datasets.distributed import split_dataset_by_node
    from torch.utils.data import DataLoader

    from sft.config import ShardSource
    from sft.data import open_sources, stream_dataset

    one_tar = _shard_set(tmp_path / "small", "small", 24, 100)  # a set with a single tar
    many = _shard_set(tmp_path / "big", "big", 48, 6)  # eight tars
    sources = open_sources([ShardSource(str(one_tar), 1.0), ShardSource(str(many), 3.0)])
    stream = stream_dataset(sources, seed=0, shuffle_buffer=1, slices=world * workers)
    for rank in range(world):
        part = split_dataset_by_node(stream, rank=rank, world_size=world)
        loader = DataLoader(part, batch_size=None, num_workers=workers, collate_fn=lambda row: row)
        counts = Counter(row["task"].split("/")[0] for row in loader)
        assert counts["small"] > 0, (rank, counts)
        assert counts["big"] > 0, (rank, counts)
        share = counts["big"] / (counts["big"] + counts["small"])
        assert 0.6 <= share <= 0.9, (rank, counts)  # weight 3 : 1 -> 0.75 on every rank


def test_resume_picks_the_newest_complete_sft_checkpoint(tmp_path: Path) -> None:
    """A checkpoint holds the completion marker only once the head and card are in: one killed before is skipped."""
    from sft.checkpoints import TRAINER_STATE, mark_complete, resume_checkpoint

    root = tmp_path / "checkpoints"
    head = "omni_head/omni_config.json"
    for step, files in ((2, [TRAINER_STATE, head]), (4, [TRAINER_STATE, head]), (6, [head]), (8, [TRAINER_STATE])):
        for name in files:
            (root / f"checkpoint-{step}" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / f"checkpoint-{step}" / name).write_text(json.dumps({}))
        if step <= 4:
            mark_complete(root / f"checkpoint-{step}", step)
    assert resume_checkpoint(root) == root / "checkpoint-4"  # 6 and 8: killed before their marker
    assert not (root / "checkpoint-6").exists()
    assert not (root / "checkpoint-8").exists()
    assert resume_checkpoint(tmp_path / "none") is None
