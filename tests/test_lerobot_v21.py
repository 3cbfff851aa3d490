"""LeRobot v2.1 reading (one parquet and mp4 per episode, jsonl metadata) and the action mapping options."""

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datasets_build.errors import ConfigError, DataError
from datasets_build.lerobot.video import VideoStreamWriter
from datasets_build.sources import LeRobotMapping, LeRobotSource, open_source

FPS = 10
SIZE = 16
TASKS = ["pick up the red block", "open the drawer"]
V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"


def _action(episode, length, dim=8):
    """Stored action: dims 0-5 arm, then (8-D only) an extra dim of 99, then the gripper in -1 open / +1 close."""
    action = np.zeros((length, dim), dtype=np.float32)
    action[:, 0] = episode + np.arange(length) / 10
    action[:, 5] = -0.5
    if dim == 8:
        action[:, 6] = 99.0
    action[:, -1] = np.where(np.arange(length) % 2 == 0, -1.0, 1.0)
    return action


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _wrist(episode, length):
    frames = np.zeros((length, SIZE, SIZE, 3), dtype=np.uint8)
    frames[:, :4, :4] = (255, 0, 0)  # red top-left: orientation check
    frames[:, -1, -1, 1] = np.arange(length) + 10 * episode  # per-step marker
    return frames


def write_v21(root, lengths=(3, 4, 5), *, video=True, action_dim=8, chunks_size=2, task_of=lambda e: e % 2):
    """A LeRobot v2.1 dataset in its true layout; episodes chunked `chunks_size` per chunk folder."""
    features = {
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        "observation.state": {"dtype": "float32", "shape": [3], "names": None},
        "observation.images.wrist": {"dtype": "image", "shape": [SIZE, SIZE, 3], "names": ["h", "w", "c"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if video:
        features["observation.images.front"] = {
            "dtype": "video",
            "shape": [SIZE, SIZE, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": FPS, "video.codec": "av1", "video.pix_fmt": "yuv420p"},
        }
    (root / "meta").mkdir(parents=True)
    info = {
        "codebase_version": "v2.1",
        "robot_type": "test",
        "total_episodes": len(lengths),
        "total_frames": sum(lengths),
        "total_tasks": len(TASKS),
        "total_videos": len(lengths) if video else 0,
        "total_chunks": (len(lengths) + chunks_size - 1) // chunks_size,
        "chunks_size": chunks_size,
        "fps": FPS,
        "splits": {"train": f"0:{len(lengths)}"},
        "data_path": V21_DATA,
        "video_path": V21_VIDEO if video else None,
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=2))
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    episodes, stats, index = [], [], 0
    for ep, length in enumerate(lengths):
        chunk = ep // chunks_size
        action = _action(ep, length, action_dim)
        table = pa.table(
            {
                "action": pa.array(list(action), type=pa.list_(pa.float32(), action_dim)),
                "observation.state": pa.array(
                    list(np.full((length, 3), ep, dtype=np.float32)), type=pa.list_(pa.float32(), 3)
                ),
                "observation.images.wrist": pa.array(
                    [_png(f) for f in _wrist(ep, length)],
                    type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                ),
                "timestamp": pa.array(np.arange(length, dtype=np.float32) / FPS),
                "frame_index": pa.array(np.arange(length, dtype=np.int64)),
                "episode_index": pa.array(np.full(length, ep, dtype=np.int64)),
                "index": pa.array(np.arange(index, index + length, dtype=np.int64)),
                "task_index": pa.array(np.full(length, task_of(ep), dtype=np.int64)),
            }
        )
        path = root / V21_DATA.format(episode_chunk=chunk, episode_index=ep)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        if video:
            mp4 = root / V21_VIDEO.format(episode_chunk=chunk, video_key="observation.images.front", episode_index=ep)
            writer = VideoStreamWriter(mp4, FPS, SIZE, SIZE)
            frames = np.zeros((length, SIZE, SIZE, 3), dtype=np.uint8)
            frames[:] = np.linspace(0, 240, SIZE, dtype=np.uint8)[None, None, :, None]
            writer.write(frames)
            writer.close()
        episodes.append({"episode_index": ep, "tasks": [TASKS[task_of(ep)]], "length": length})
        stats.append({"episode_index": ep, "stats": {"action": {"min": action.min(0).tolist()}}})
        index += length
    episodes.reverse()  # the reader must not rely on the file order
    (root / "meta/episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (root / "meta/episodes_stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats))
    return root


SIGNED_CLOSE = {"gripper": "signed_close_positive", "action_dims": (0, 1, 2, 3, 4, 5, 7)}


def test_v21_layout_values(tmp_path):
    root = write_v21(tmp_path / "ds")
    assert (root / "data/chunk-001/episode_000002.parquet").is_file()  # chunking by chunks_size
    assert (root / "videos/chunk-000/observation.images.front/episode_000001.mp4").is_file()
    src = open_source("lerobot", root, mapping=SIGNED_CLOSE)
    assert isinstance(src, LeRobotSource)
    assert src.is_v21
    assert len(src) == 3
    episodes = list(src.episodes())
    assert [e.episode_id for e in episodes] == ["000000", "000001", "000002"]
    assert [len(e) for e in episodes] == [3, 4, 5]
    assert [e.instruction for e in episodes] == [TASKS[0], TASKS[1], TASKS[0]]
    ep = episodes[2]
    stored = _action(2, 5)
    np.testing.assert_allclose(ep.actions[:, :6], stored[:, :6])
    assert ep.actions[0, 0] == pytest.approx(2.0)
    assert ep.actions[:, 6].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]  # -1 open -> 1, +1 close -> 0
    np.testing.assert_array_equal(ep.state, np.full((5, 3), 2, dtype=np.float32))
    assert ep.fps == FPS
    assert set(ep.cameras) == {"wrist", "front"}
    np.testing.assert_array_equal(ep.frames["wrist"], _wrist(2, 5))  # PNG in parquet: exact
    assert tuple(ep.frames["wrist"][0, 0, 0]) == (255, 0, 0)
    front = ep.frames["front"]
    assert front.shape == (5, SIZE, SIZE, 3)
    assert front[0, :, 0].mean() < 40  # left-to-right ramp, lossy video
    assert front[0, :, -1].mean() > 200
    assert [s.episode_id for s in src.episodes(num_shards=2, shard_index=1)] == ["000001"]


def test_v21_summaries_and_default_mapping(tmp_path):
    root = write_v21(tmp_path / "ds", video=False, action_dim=7, lengths=(2, 3))
    with pytest.raises(DataError, match="gripper must be 1"):  # -1/+1 stored, default mapping is binary_open
        next(LeRobotSource(root).episodes())
    src = LeRobotSource(root, mapping=LeRobotMapping(gripper="signed_close_positive"))
    summaries = list(src.summaries())
    assert [s.length for s in summaries] == [2, 3]
    assert summaries[1].actions[:, 6].tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(summaries[1].actions[:, 6 - 1], -0.5)
    assert summaries[1].instructions == [TASKS[1]]
    assert summaries[1].cameras == {"wrist": (SIZE, SIZE, 3)}


def test_long_action_needs_action_dims(tmp_path):
    root = write_v21(tmp_path / "ds", video=False, lengths=(2,))
    with pytest.raises(DataError, match="action_dims"):
        next(LeRobotSource(root, mapping={"gripper": "signed_close_positive"}).episodes())
    with pytest.raises(DataError, match="outside the stored 8 dims"):
        next(LeRobotSource(root, mapping={"action_dims": (0, 1, 2, 3, 4, 5, 8)}).episodes())
    with pytest.raises(ConfigError, match="7 non-negative"):
        LeRobotMapping(action_dims=(0, 1, 2))
    with pytest.raises(ConfigError, match="unknown gripper mode"):
        LeRobotMapping(gripper="inverted")
    with pytest.raises(ConfigError, match="bad LeRobot mapping"):
        LeRobotSource(root, mapping={"grip": "relative"})


@pytest.mark.parametrize(
    ("mode", "stored", "expected"),
    [
        ("binary_open", [1, 0, 0, 1], [1, 0, 0, 1]),
        ("signed_open_positive", [1, -1, -1, 1], [1, 0, 0, 1]),
        ("signed_close_positive", [-1, 1, 1, -1], [1, 0, 0, 1]),
        ("continuous", [0.9, 0.2, 0.0, 0.7], [1, 0, 0, 1]),
        ("relative", [0, 1, 0, -1], [1, 0, 0, 1]),  # +1 close, 0 keep, -1 open
        ("relative", [0, 0, -1, 0], [0, 0, 1, 1]),  # first command "open": it was closed before
    ],
)
def test_gripper_modes(mode, stored, expected):
    actions = np.zeros((4, 7), dtype=np.float32)
    actions[:, 0] = [0.1, 0.2, 0.3, 0.4]
    actions[:, 6] = stored
    out = LeRobotMapping(gripper=mode).convert_actions(actions, "test")
    assert out[:, 6].tolist() == expected
    np.testing.assert_array_equal(out[:, :6], actions[:, :6])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(actions[:, 6], np.float32(stored))  # input untouched


def test_v21_bad_input(tmp_path):
    root = write_v21(tmp_path / "ds", video=False, lengths=(2, 2, 2), action_dim=7, task_of=lambda e: 0)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "data/chunk-000/episode_000001.parquet").unlink()
    src = LeRobotSource(root, mapping={"gripper": "signed_close_positive"}, skip_bad=True)
    assert [e.episode_id for e in src.episodes()] == ["000000", "000002"]
    assert sum(src.skipped.values()) == 1
    with pytest.raises(DataError, match=r"episode_000001\.parquet"):
        list(LeRobotSource(root, mapping={"gripper": "signed_close_positive"}).episodes())

    info["codebase_version"] = "v1.6"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="unsupported codebase version") as err:
        LeRobotSource(root)
    assert err.value.field == "codebase_version"

    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/episodes.jsonl").write_text('{"episode_index": 0, "length": 2}\nnot json\n')
    with pytest.raises(DataError, match=r"episodes.jsonl:2.*invalid JSON"):
        LeRobotSource(root)
    (root / "meta/episodes.jsonl").unlink()
    with pytest.raises(DataError, match=r"episodes\.jsonl"):
        LeRobotSource(root)
