"""RLDS/TFDS reader: CRC32C, framing and Example decoding, three dataset mappings, bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from datasets_build.errors import ConfigError, DataError
from datasets_build.sources import open_source, rlds, tfrecord
from datasets_build.sources.rlds import BRIDGE_V2, RLDSMapping, RLDSSource
from tests import rlds_fixtures as fx

H, W = 24, 32


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds")
    return fx.write_rlds(root, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(H, W), fx.bridge_v2_episodes(), [2, 1])


@pytest.fixture
def bridge_copy(bridge, tmp_path):
    return shutil.copytree(bridge, tmp_path / "bridge_dataset" / "1.0.0")


def _red_corner(frame):
    return frame[2, 2].astype(int)


# ------------------------------------------------------------------------------ CRC32C and framing


def test_crc32c_known_values_and_numpy_path():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfrecord.crc32c_numpy(b"123456789") == 0xE3069283
    assert tfrecord.crc32c(b"") == 0
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5, 1023, 1024, 1025, 4099, 20_000, 70_001):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert tfrecord.crc32c_numpy(data) == fx.ref_crc32c(data), n
        assert tfrecord.crc32c(data) == fx.ref_crc32c(data), n
        assert tfrecord.masked_crc32c(data) == fx.ref_masked(data)


def test_scan_and_iter_records(tmp_path):
    payloads = [b"", b"x" * 5, os.urandom(3000)]
    path = tmp_path / "f.tfrecord"
    path.write_bytes(b"".join(fx.frame(p) for p in payloads))
    offsets, error = tfrecord.scan_records(path)
    assert error is None
    assert offsets == [0, 16, 16 + 21]
    assert list(tfrecord.iter_records(path)) == payloads


def test_example_decoding_packed_and_unpacked():
    features = {
        "steps/action": ("float", [0.5, -1.25, 3.0e-3, 7.0]),
        "ints": ("int64", [0, 1, 127, 128, 300, -1, -(2**63), 2**62]),
        "steps/observation/image_0": ("bytes", [b"\xff\xd8jpeg", b"", b"abc"]),
        "empty": ("float", []),
        "naïve/ключ": ("bytes", ["héllo".encode()]),
    }
    for packed in (True, False):
        view = tfrecord.parse_example(fx.encode_example(features, packed=packed), "mem")
        assert set(view.keys()) == set(features)
        np.testing.assert_array_equal(view.floats("steps/action"), np.float32([0.5, -1.25, 3.0e-3, 7.0]))
        assert view.ints("ints").tolist() == features["ints"][1]
        assert view.byte_strings("steps/observation/image_0") == [b"\xff\xd8jpeg", b"", b"abc"]
        assert view.floats("empty").size == 0
        assert view.byte_strings("naïve/ключ") == ["héllo".encode()]


def test_malformed_example_is_a_data_error():
    data = fx.encode_example({"a": ("float", [1.0, 2.0])})
    with pytest.raises(DataError, match=r"rec 7.*malformed"):
        tfrecord.parse_example(data[:-3], "rec 7")


# ---------------------------------------------------------------------------------------- Bridge V2


def test_bridge_v2_values(bridge):
    src = RLDSSource(bridge)
    assert src.mapping is BRIDGE_V2
    keys = src.episode_keys()
    assert [(k.shard.name[-14:], k.record) for k in keys] == [
        ("00000-of-00002", 0),
        ("00000-of-00002", 1),
        ("00001-of-00002", 0),
    ]
    eps = list(src.episodes())
    assert [len(e) for e in eps] == [3, 4, 5]
    ep = eps[1]
    assert ep.episode_id == "train-00000-0001"
    assert ep.source == "rlds"
    assert ep.fps == 5.0
    assert ep.instruction == "put the spoon in pot 1"
    np.testing.assert_array_equal(ep.actions[0], np.zeros(7))  # stored all-zero first action kept
    np.testing.assert_allclose(ep.actions[1, :6], [0.01, -0.02, 0.003, 0.1, -0.05, 0.02], rtol=1e-6)
    assert ep.actions[:, 6].tolist() == [0, 1, 1, 0]  # 0 (zero action), 0.98, 0.98, 0.02 -> closed/open
    np.testing.assert_allclose(ep.state, np.arange(28, dtype=np.float32).reshape(4, 7) / 10 + 1)
    assert list(ep.frames) == ["image_0"]  # default: the main camera only
    frames = ep.frames["image_0"]
    assert frames.shape == (4, H, W, 3)
    assert np.abs(_red_corner(frames[0]) - fx.RED).max() < 40  # red corner stays top-left
    assert abs(int(frames[2][H - 2, W - 2, 1]) - (40 + 60)) < 8  # step order kept
    assert ep.meta["episode_metadata/file_path"] == "/data/bridge/raw/traj1.pkl"
    assert ep.meta["episode_metadata/has_image_3"] is True
    assert ep.meta["reward"] == [0, 0, 0, 1]
    assert ep.meta["is_first"] == [True, False, False, False]
    assert eps[2].instruction == ""  # has_language False: empty instruction allowed
    json.dumps(eps[0].meta)  # meta stays JSON-able


def test_bridge_v2_cameras_skip_blank_views(bridge):
    src = RLDSSource(bridge, cameras=["image_0", "image_1", "image_3"])
    eps = list(src.episodes())
    assert list(eps[0].frames) == ["image_0"]  # image_1 all zero (flag says present), image_3 flagged off
    assert eps[0].meta["blank_cameras"] == ["image_1"]
    assert list(eps[1].frames) == ["image_0", "image_3"]
    assert abs(int(eps[1].frames["image_3"][0][H - 2, W - 2, 0]) - 100) < 8
    summary = src.summarize_episode(src.episode_keys()[0])
    assert summary.cameras == {"image_0": (H, W, 3), "image_1": (H, W, 3)}  # flags only, nothing decoded
    with pytest.raises(ConfigError, match="unknown camera"):
        RLDSSource(bridge, cameras=["image_9"])
    assert list(RLDSSource(bridge, cameras="all").load_episode(src.episode_keys()[1]).frames) == [
        "image_0",
        "image_3",
    ]


def test_drop_first_zero_action(bridge):
    full = list(RLDSSource(bridge).episodes())
    dropped = list(RLDSSource(bridge, drop_first_zero_action=True).episodes())
    for a, b in zip(full, dropped, strict=True):
        assert len(b) == len(a) - 1
        np.testing.assert_array_equal(b.actions, a.actions[1:])
        np.testing.assert_array_equal(b.state, a.state[1:])
        np.testing.assert_array_equal(b.frames["image_0"], a.frames["image_0"][1:])
        assert b.meta["reward"] == a.meta["reward"][1:]
        assert b.meta["dropped_zero_first_step"] is True
        assert b.instruction == a.instruction


def test_summaries_match_without_decoding_images(bridge, monkeypatch):
    src = RLDSSource(bridge)
    episodes = list(src.episodes())

    def no_decoding(*args, **kwargs):
        raise AssertionError("summaries must not decode images")

    monkeypatch.setattr(rlds, "decode_image", no_decoding)
    summaries = list(src.summaries())
    for ep, s in zip(episodes, summaries, strict=True):
        assert s.episode_id == ep.episode_id
        assert s.length == len(ep)
        np.testing.assert_array_equal(s.actions, ep.actions)
        np.testing.assert_array_equal(s.state, ep.state)
        assert s.instructions == ([ep.instruction] if ep.instruction else [])
        assert s.cameras == {"image_0": (H, W, 3)}


def test_partitioning_is_deterministic_and_complete(bridge):
    src = RLDSSource(bridge)
    every = [e.episode_id for e in src.episodes()]
    parts = [[e.episode_id for e in RLDSSource(bridge).episodes(2, i)] for i in range(2)]
    assert parts == [every[0::2], every[1::2]]
    assert [s.episode_id for s in src.summaries(3, 2)] == every[2::3]


def test_parent_folder_registry_and_version_choice(bridge, tmp_path):
    assert len(RLDSSource(bridge.parent)) == 3  # the dataset folder with one version inside
    assert len(open_source("rlds", bridge)) == 3
    two = tmp_path / "two"
    for version in ("1.0.0", "1.0.1"):
        shutil.copytree(bridge, two / version)
    with pytest.raises(DataError, match="several versions"):
        RLDSSource(two)
    with pytest.raises(ConfigError, match="no split 'val'"):
        RLDSSource(bridge, split="val")


def test_mapping_by_option_and_unknown_dataset(tmp_path):
    spec = fx.bridge_v2_spec(H, W)
    path = fx.write_rlds(tmp_path, "my_widowx_set", "2.0.0", spec, fx.bridge_v2_episodes((3,)), [1])
    with pytest.raises(ConfigError, match="no mapping for dataset 'my_widowx_set'"):
        RLDSSource(path)
    by_option = RLDSSource(path, dataset="bridge_v2")
    assert len(by_option.load_episode(by_option.episode_keys()[0])) == 3
    custom = RLDSMapping(
        name="custom",
        datasets=(),
        cameras={"wrist": "observation/image_3"},
        default_cameras=("wrist",),
        arm=("action",),
        gripper="action",
    )
    src = RLDSSource(path, dataset=custom)
    ep = src.load_episode(src.episode_keys()[0])
    assert list(ep.frames) == []  # image_3 is padding in this episode
    assert ep.state is None
    with pytest.raises(ConfigError, match="unknown RLDS dataset mapping"):
        RLDSSource(path, dataset="nope")


# ---------------------------------------------------------------------------- OXE bridge and Fractal


def test_oxe_bridge_values(tmp_path):
    path = fx.write_rlds(tmp_path, "bridge", "0.1.0", fx.oxe_bridge_spec(H, W), fx.oxe_bridge_episodes(), [1, 1])
    src = RLDSSource(path)
    assert src.mapping.name == "oxe_bridge"
    ep = src.load_episode(src.episode_keys()[1])
    assert ep.instruction == "open the drawer 1"
    np.testing.assert_allclose(ep.actions[2], [0.2, 1.4, -0.2, 0.02, 0.04, 0.06, 0.0], rtol=1e-6)
    assert ep.actions[:, 6].tolist() == [1, 1, 0]  # open_gripper True, True, False
    assert ep.meta["terminate_episode"] == [0, 0, 1]
    assert "discount" not in ep.meta
    assert np.abs(_red_corner(ep.frames["image"][0]) - fx.RED).max() < 40


def test_fractal_relative_gripper_and_defaults(tmp_path):
    # an older-style dataset_info.json: no fileFormat, no filepathTemplate (TFDS defaults apply)
    path = fx.write_rlds(
        tmp_path,
        "fractal20220817_data",
        "0.1.0",
        fx.fractal_spec(32, 40),
        fx.fractal_episodes(),
        [2, 1],
        template=None,
        file_format=None,
        packed=False,
    )
    src = RLDSSource(path)
    assert src.mapping.name == "fractal"
    eps = list(src.episodes())
    # +1 close, -1 open, 0 keep -> absolute (1 open); before the first command: the opposite state
    assert eps[0].actions[:, 6].tolist() == [1, 0, 0, 0, 1, 1]
    assert eps[1].actions[:, 6].tolist() == [1, 1, 1, 0, 0]
    assert eps[2].actions[:, 6].tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(eps[0].actions[3, :6], [0.03, -0.03, 0.015, 0.06, 0.06, -0.06], rtol=1e-6)
    assert eps[0].state.shape == (6, 8)  # base_pose_tool_reached (7) + gripper_closed (1)
    np.testing.assert_allclose(eps[0].state[0], [0, 1, 2, 3, 4, 5, 6, 0.5])
    assert eps[2].instruction == "pick coke can 2"
    assert eps[0].frames["image"].shape == (6, 32, 40, 3)
    assert eps[0].fps == 3.0
    assert eps[0].meta["attributes/env_name"] == "mobile_manipulator"
    assert eps[0].meta["aspects/success"] is True
    assert eps[0].meta["terminate_episode"][-1] == [1, 0, 0]


# -------------------------------------------------------------------------------------------- bad input


def _flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))


def _shard(path, index):
    return sorted(path.glob("*.tfrecord-*"))[index]


def test_corrupt_data_crc(bridge_copy):
    shard = _shard(bridge_copy, 0)
    offset, length = fx.shard_records(shard)[1]
    _flip(shard, offset + 12 + length // 2)
    src = RLDSSource(bridge_copy)
    with pytest.raises(DataError, match=rf"{shard.name}: record 1: data_crc: corrupt data CRC") as info:
        src.load_episode(src.episode_keys()[1])
    assert info.value.field == "data_crc"
    src.load_episode(src.episode_keys()[0])  # the others still read
    tolerant = RLDSSource(bridge_copy, skip_bad=True)
    assert [len(e) for e in tolerant.episodes()] == [3, 5]
    assert tolerant.skipped == {"data_crc": 1}


def test_corrupt_length_crc(bridge_copy):
    shard = _shard(bridge_copy, 0)
    offset, _ = fx.shard_records(shard)[0]
    _flip(shard, offset + 3)  # the length bytes of record 0
    src = RLDSSource(bridge_copy)
    with pytest.raises(DataError, match=rf"{shard.name}: record 0: length_crc: corrupt length CRC"):
        src.load_episode(src.episode_keys()[0])
    with pytest.raises(DataError, match=r"record 1: length_crc: unreachable"):
        src.load_episode(src.episode_keys()[1])
    tolerant = RLDSSource(bridge_copy, skip_bad=True)
    assert [len(e) for e in tolerant.episodes()] == [5]
    assert tolerant.skipped == {"length_crc": 2}


def test_truncated_record(bridge_copy):
    shard = _shard(bridge_copy, 1)
    shard.write_bytes(shard.read_bytes()[:-10])
    src = RLDSSource(bridge_copy)
    with pytest.raises(DataError, match=rf"{shard.name}: record 0: truncated"):
        src.load_episode(src.episode_keys()[2])
    tolerant = RLDSSource(bridge_copy, skip_bad=True)
    assert len(list(tolerant.summaries())) == 2
    assert tolerant.skipped == {"truncated": 1}


def test_features_json_mismatch(bridge_copy):
    features = json.loads((bridge_copy / "features.json").read_text())
    obs = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    obs["observation"]["featuresDict"]["features"]["state"]["tensor"]["shape"]["dimensions"] = ["6"]
    (bridge_copy / "features.json").write_text(json.dumps(features))
    src = RLDSSource(bridge_copy)
    shard = _shard(bridge_copy, 0)
    with pytest.raises(DataError, match=rf"{shard.name}: record 0: steps/observation/state: 21 values") as info:
        src.load_episode(src.episode_keys()[0])
    assert info.value.field == "steps/observation/state"
    tolerant = RLDSSource(bridge_copy, skip_bad=True)
    assert list(tolerant.episodes()) == []
    assert tolerant.skipped == {"steps/observation/state": 3}


def test_features_json_missing_mapped_key(bridge_copy):
    features = json.loads((bridge_copy / "features.json").read_text())
    del features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]["action"]
    (bridge_copy / "features.json").write_text(json.dumps(features))
    with pytest.raises(DataError, match=r"features.json: steps/action: mapping 'bridge_v2' needs"):
        RLDSSource(bridge_copy)


def test_shard_lengths_mismatch_and_missing_shard(bridge_copy):
    original = (bridge_copy / "dataset_info.json").read_text()
    info = json.loads(original)
    info["splits"][0]["shardLengths"] = ["3", "1"]
    (bridge_copy / "dataset_info.json").write_text(json.dumps(info))
    src = RLDSSource(bridge_copy, skip_bad=True)
    assert [len(e) for e in src.episodes()] == [5]
    assert src.skipped == {"shard_length": 3}
    (bridge_copy / "dataset_info.json").write_text(original)
    _shard(bridge_copy, 1).unlink()
    with pytest.raises(DataError, match="00001-of-00002: shard: shard file missing"):
        list(RLDSSource(bridge_copy).episodes())
    partial = RLDSSource(bridge_copy, allow_missing_shards=True)
    assert len(partial) == 2
    assert [p.name[-14:] for p in partial.missing_shards] == ["00001-of-00002"]


def test_corrupt_jpeg(tmp_path):
    episodes = fx.bridge_v2_episodes((3,))
    blobs = [fx.encode_image(f) for f in episodes[0]["steps/observation/image_0"]]
    blobs[2] = blobs[2][:40]
    episodes[0]["steps/observation/image_0"] = blobs
    path = fx.write_rlds(tmp_path, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(H, W), episodes, [1])
    src = RLDSSource(path)
    with pytest.raises(DataError, match=r"record 0: steps/observation/image_0: step 2: cannot decode"):
        src.load_episode(src.episode_keys()[0])
    assert src.summarize_episode(src.episode_keys()[0]).length == 3


def test_image_size_must_match_features_json(tmp_path):
    path = fx.write_rlds(
        tmp_path, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(H + 2, W), fx.bridge_v2_episodes((3,)), [1]
    )
    src = RLDSSource(path)
    with pytest.raises(DataError, match=r"steps/observation/image_0: image is \(24, 32, 3\)"):
        src.load_episode(src.episode_keys()[0])


def test_shards_written_by_the_tfrecord_package_read_back(bridge, tmp_path):
    """An independent writer (PyPI `tfrecord`: real protobuf serialization, its own CRC32C) as the reference."""
    import tfrecord as tfrecord_pkg  # dev extra

    copy = shutil.copytree(bridge, tmp_path / "bridge_dataset" / "1.0.0")
    episodes = fx.bridge_v2_episodes()
    spec = fx.bridge_v2_spec(H, W)
    kinds = {"bytes": "byte", "float": "float", "int64": "int"}
    shards = sorted(copy.glob("*.tfrecord-*"))
    for shard, members in zip(shards, [episodes[:2], episodes[2:]], strict=True):
        writer = tfrecord_pkg.TFRecordWriter(str(shard))
        for episode in members:
            features = fx._record_features(spec, episode, int(episode["_length"]))
            writer.write({key: (list(values), kinds[kind]) for key, (kind, values) in features.items()})
        writer.close()
    ours = list(RLDSSource(bridge).episodes())
    theirs = list(RLDSSource(copy).episodes())
    assert [e.instruction for e in theirs] == [e.instruction for e in ours]
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.frames["image_0"], b.frames["image_0"])
