import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from datasets_build.errors import DataError, OutputExistsError
from datasets_build.lerobot import LeRobotWriter
from datasets_build.sources import open_source
from datasets_build.sources.demo import demo_features, episode_to_columns
from tests.helpers import synthetic_episode


def _write(root, episodes, video=False, **kw):
    sizes = {c: f.shape[1:3] for c, f in episodes[0].frames.items()}
    with LeRobotWriter(root, fps=10, features=demo_features(sizes, 4, video=video), **kw) as w:
        for ep in episodes:
            cols, extra = episode_to_columns(ep, 4)
            w.add_episode(cols, task=ep.instruction, extra=extra)
    return root


def test_layout_is_lerobot_v3(tmp_path):
    eps = [synthetic_episode(length=5, seed=i, episode_id=f"e{i}") for i in range(3)]
    root = _write(tmp_path / "ds", eps)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 3
    assert info["total_frames"] == 15
    assert info["total_tasks"] == 1
    assert info["features"]["frame_index"]["dtype"] == "int64"
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert data.num_rows == 15
    assert data.column("index").to_pylist() == list(range(15))
    assert data.column("episode_index").to_pylist() == [0] * 5 + [1] * 5 + [2] * 5
    meta = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [m["dataset_from_index"] for m in meta] == [0, 5, 10]
    assert meta[1]["tasks"] == ["pick up the red block"]
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pandas()
    assert tasks.loc["pick up the red block", "task_index"] == 0
    stats = json.loads((root / "meta/stats.json").read_text())
    allact = np.concatenate([e.actions for e in eps])
    np.testing.assert_allclose(stats["action"]["max"], allact.max(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["q01"], np.quantile(allact.astype(np.float64), 0.01, axis=0), rtol=1e-5)
    assert stats["action"]["count"] == [15]
    assert not list(tmp_path.glob(".*partial"))


def test_demo_round_trip_keeps_geometry(tmp_path):
    eps = [synthetic_episode(length=4, seed=i, episode_id=f"e{i}") for i in range(2)]
    src = open_source("demo", _write(tmp_path / "ds", eps))
    assert len(src) == 2
    back = list(src.episodes())
    for a, b in zip(eps, back, strict=True):
        np.testing.assert_array_equal(a.frames["static"], b.frames["static"])
        assert tuple(b.frames["static"][0, 0, 0]) == (255, 0, 0)  # orientation kept
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.segmentation["wrist"], b.segmentation["wrist"])
        np.testing.assert_allclose(a.depth["static"], b.depth["static"], atol=0.0005 + 1e-6)
        np.testing.assert_allclose(a.camera["static"].intrinsics, b.camera["static"].intrinsics, rtol=1e-6)
        np.testing.assert_allclose(a.camera_extrinsics["wrist"], b.camera_extrinsics["wrist"], atol=1e-6)
        np.testing.assert_allclose(a.objects["red block"].positions, b.objects["red block"].positions)
        assert b.objects["red block"].segmentation_id == 3
        assert b.instruction == a.instruction
        assert b.task == "pick_block"
        assert b.success is True
        assert b.meta["seed"] == a.meta["seed"]
    # deterministic partition
    assert [e.episode_id for e in src.episodes(num_shards=2, shard_index=1)] == ["000001"]


def test_video_features_decode(tmp_path):
    eps = [synthetic_episode(length=6, size=32, seed=i, episode_id=f"e{i}") for i in range(2)]
    for ep in eps:  # smooth frames so lossy video stays close
        ep.frames["static"][:] = np.linspace(0, 250, 32, dtype=np.uint8)[None, None, :, None]
        ep.frames["wrist"][:] = 128
    root = _write(tmp_path / "ds", eps, video=True)
    assert (root / "videos/observation.images.static/chunk-000/file-000.mp4").is_file()
    back = list(open_source("demo", root).episodes())
    assert back[1].frames["static"].shape == (6, 32, 32, 3)
    err = np.abs(back[1].frames["static"].astype(int) - eps[1].frames["static"].astype(int)).mean()
    assert err < 6


def test_existing_output_and_interrupted_write(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "x").write_text("keep")
    with pytest.raises(OutputExistsError, match="ds"):
        _write(root, [synthetic_episode()])
    assert (root / "x").read_text() == "keep"
    other = tmp_path / "other"
    ep = synthetic_episode()
    sizes = {c: f.shape[1:3] for c, f in ep.frames.items()}

    def interrupted_write():
        with LeRobotWriter(other, fps=10, features=demo_features(sizes, 4)) as w:
            w.add_episode(episode_to_columns(ep, 4)[0], task="t")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        interrupted_write()
    assert not other.exists()
    assert not list(tmp_path.glob(".*partial"))


def test_reader_errors_name_the_file(tmp_path):
    root = _write(tmp_path / "ds", [synthetic_episode()])
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v9.9"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"info.json: codebase_version: unsupported"):
        open_source("lerobot", root)
    with pytest.raises(DataError, match="not a LeRobot dataset"):
        open_source("lerobot", tmp_path)


@pytest.mark.parametrize("damage", ["name-not-utf8", "no-index-columns", "column-without-name"])
def test_tasks_table_with_corrupt_schema_is_a_data_error(tmp_path, damage):
    """Fuzz escapes (lerobot-meta, 10k cases): a non-UTF-8 column name and corrupt pandas index metadata in
    meta/tasks.parquet raised UnicodeDecodeError/KeyError from pyarrow instead of naming the file."""
    root = _write(tmp_path / "ds", [synthetic_episode()])
    path = root / "meta/tasks.parquet"
    if damage == "name-not-utf8":  # same length, so the parquet footer stays well-formed
        path.write_bytes(path.read_bytes().replace(b"task_index", b"task\x9a_ndex"))
    else:
        table = pq.read_table(path)
        pandas_meta = json.loads(table.schema.metadata[b"pandas"])
        if damage == "no-index-columns":
            del pandas_meta["index_columns"]
        else:
            del pandas_meta["columns"][0]["name"]
        pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)
    with pytest.raises(DataError, match=r"tasks.parquet: task_index: cannot read the tasks table"):
        open_source("lerobot", root)
