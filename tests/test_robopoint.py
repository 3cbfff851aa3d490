"""The robopoint corpus: points against the recorded segmentation, sides, determinism, verify, skips, parsing."""

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from datasets_build.cli import main
from datasets_build.corpora import BuildConfig, EpisodeContext, build_corpus, episode_rng, make_builder, verify_corpus
from datasets_build.corpora import build as build_module
from datasets_build.corpora.robopoint import format_points, parse_points, parse_tuples
from datasets_build.errors import DataError
from datasets_build.masks import point_pixel, rle_decode, rle_encode
from datasets_build.shards import ShardSet
from datasets_build.sim.scene import TABLE_ID
from tests.helpers import synthetic_episode


@pytest.fixture(scope="module")
def built(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "robopoint"
    args = ["build", "robopoint", "--source", "demo", "--input", str(demo_dir), "--out", str(out), "--seed", "3"]
    assert main(args) == 0
    return out


def samples_of(builder, episodes, seeds=range(3)):
    for seed in seeds:
        for ep in episodes:
            for sample in builder.build(ep, EpisodeContext(episode_rng(seed, ep.episode_id, ep.source))).samples:
                yield ep, sample


def pixels(ep, sample):
    seg = ep.segmentation["static"][sample.meta["frame"]]
    h, w = seg.shape
    return seg, [point_pixel(x, y, h, w) for x, y in parse_points(sample.messages[1]["content"][0]["text"])]


def test_default_table_id_is_the_sims():
    assert make_builder("robopoint").config.table_id == TABLE_ID


def test_points_inside_object_masks(demo_episodes):
    builder = make_builder("robopoint", {"question_types": ["object", "on"], "per_type": 3})
    checked = 0
    for ep, sample in samples_of(builder, demo_episodes):
        seg, pts = pixels(ep, sample)
        assert 3 <= len(pts) <= 5
        sid = ep.objects[sample.meta["objects"][0]].segmentation_id
        for r, c in pts:
            assert seg[r, c] == sid
            assert (seg[r - 1 : r + 2, c - 1 : c + 2] == sid).sum() >= 5  # eroded: 4-neighbours on the object too
            assert seg[r - 1, c] == seg[r + 1, c] == seg[r, c - 1] == seg[r, c + 1] == sid
        assert sample.meta["objects"][0] in sample.messages[0]["content"][1]["text"]
        checked += 1
    assert checked >= 20


def test_free_space_on_table_and_on_the_right_side(demo_episodes):
    builder = make_builder("robopoint", {"question_types": ["left", "right", "front", "behind", "between"]})
    seen = set()
    for ep, sample in samples_of(builder, demo_episodes):
        seg, pts = pixels(ep, sample)
        qtype = sample.meta["question_type"]
        seen.add(qtype)
        masks = [seg == ep.objects[n].segmentation_id for n in sample.meta["objects"]]
        rows, cols = np.nonzero(masks[0])
        for r, c in pts:
            assert seg[r, c] == TABLE_ID
            if qtype == "left":
                assert c < cols.min()
                assert rows.min() <= r <= rows.max()
            elif qtype == "right":
                assert c > cols.max()
                assert rows.min() <= r <= rows.max()
            elif qtype == "front":
                assert r > rows.max()
                assert cols.min() <= c <= cols.max()
            elif qtype == "behind":
                assert r < rows.min()
                assert cols.min() <= c <= cols.max()
            else:
                ca, cb = (np.argwhere(m).mean(axis=0) for m in masks)
                t = float((np.array([r, c]) - ca) @ (cb - ca) / ((cb - ca) @ (cb - ca)))
                assert 0.2 <= t <= 0.8
    assert seen == {"left", "right", "front", "behind", "between"}


def test_build_card_verify_and_determinism(demo_dir, built, tmp_path):
    shards = ShardSet(built, verify=True)
    card = shards.card
    assert card is not None
    assert card.build_config["name"] == "robopoint"
    samples = list(shards)
    assert len(samples) == card.num_samples > 20
    assert {s.images[0].size for s in samples} == {(224, 224)}
    assert card.skipped.get("on:no_container", 0) >= 1
    report = verify_corpus(built)
    assert report["errors"] == 0
    assert report["samples"] == len(samples)
    again = tmp_path / "again"
    args = ["build", "robopoint", "--source", "demo", "--input", str(demo_dir), "--out", str(again), "--seed", "3"]
    assert main(args) == 0
    names = sorted(p.name for p in built.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (built / name).read_bytes() == (again / name).read_bytes(), name


def test_verify_catches_tampering(demo_episodes):
    builder = make_builder("robopoint")
    caught = 0
    for _ep, sample in samples_of(builder, demo_episodes[:2], seeds=[0]):
        assert builder.verify(sample)
        region = rle_decode(sample.meta["region"])
        r, c = np.argwhere(~region)[0]
        h, w = region.shape
        bad = copy.deepcopy(sample)
        points = parse_points(bad.messages[1]["content"][0]["text"])
        points[0] = ((c + 0.5) / w, (r + 0.5) / h)
        bad.messages[1]["content"][0]["text"] = format_points(points)
        assert not builder.verify(bad)
        junk = copy.deepcopy(sample)
        junk.messages[1]["content"][0]["text"] = "somewhere on the left"
        assert not builder.verify(junk)
        caught += 1
    assert caught > 5


def test_episodes_without_geometry_are_skipped_and_counted(tmp_path, monkeypatch):
    builder = make_builder("robopoint", {"geometry": {"mode": "ground_truth"}})
    ctx = EpisodeContext(np.random.default_rng(0))
    plain = synthetic_episode()
    assert builder.build(replace(plain, depth={}), ctx).skipped == ["no_depth"]
    assert builder.build(replace(plain, objects={}), ctx).skipped == ["no_masks"]
    assert builder.build(replace(plain, frames={}), ctx).skipped == ["no_camera"]
    result = builder.build(plain, ctx)  # a 10x10 block on a zero (non-table) background
    assert [s.meta["question_type"] for s in result.samples] == ["object"]
    assert "left:no_support" not in result.skipped  # the background's flat layer is fitted as support
    assert all(builder.verify(s) for s in result.samples)
    boxes = builder.build(replace(plain, segmentation={}), ctx)  # masks from the block's pose and size instead
    assert all(s.meta["geometry"] == "ground_truth" for s in boxes.samples)
    assert all(builder.verify(s) for s in boxes.samples)

    class Stub:
        """A source (the `Source` contract: keys, then episodes by key) of episodes lacking geometry."""

        skip_bad = False

        def episode_keys(self):
            return ["s0", "s1", "s2", "o"]

        def load_episode(self, key):
            return (
                replace(plain, episode_id=key, objects={}) if key == "o" else replace(plain, episode_id=key, depth={})
            )

    monkeypatch.setattr(build_module, "open_source", lambda *a, **k: Stub())
    out = tmp_path / "c"
    options = {"geometry": {"mode": "ground_truth"}}
    with pytest.raises(DataError, match=r"every input was skipped \(no_depth: 3, no_masks: 1\)"):
        build_corpus(BuildConfig(name="robopoint", input=str(tmp_path), out=str(out), options=options))
    assert not out.exists()  # an empty corpus is refused, with the skip counts, and nothing is left behind


def test_parse_points_formats():
    assert parse_points("[(0.461, 0.527), (0.3, 0.4)]") == [(0.461, 0.527), (0.3, 0.4)]
    assert parse_points("[(0.461,0.527),(0.3,0.4)]") == [(0.461, 0.527), (0.3, 0.4)]
    assert parse_points("[[0.1, 0.2], [1, 0]]") == [(0.1, 0.2), (1.0, 0.0)]
    assert parse_points("The points are [(.5, .25)].") == [(0.5, 0.25)]
    assert parse_points("[]") == []
    assert parse_tuples("[(0.1, 0.2, 0.3, 0.4)]") == [(0.1, 0.2, 0.3, 0.4)]
    with pytest.raises(ValueError):
        parse_points("[(0.1, 0.2, 0.3, 0.4)]")
    text = format_points([(0.5, 0.25), (0.125, 1.0)])
    assert text == "[(0.500, 0.250), (0.125, 1.000)]"
    assert parse_points(text) == [(0.5, 0.25), (0.125, 1.0)]


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (17, 9)]:
        for _ in range(5):
            mask = rng.random(shape) > 0.5
            rle = rle_encode(mask)
            assert np.array_equal(rle_decode(json.loads(json.dumps(rle))), mask)
    assert rle_encode(np.ones((2, 2), bool))["counts"] == [0, 4]


def test_import_robopoint_json(tmp_path):
    from PIL import Image

    from datasets_build.corpora.importers.robopoint_json import import_robopoint_json

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "img" / "a.jpg")
    records = [
        {
            "id": "p/1",
            "image": "a.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nPoint to the cup."},
                {"from": "gpt", "value": "[(0.461, 0.527), (0.5, 0.5)]"},
            ],
        },
        {
            "id": "b2",
            "image": "a.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\nBox the cup."},
                {"from": "gpt", "value": "[(0.1, 0.2, 0.3, 0.4)]"},
            ],
        },
    ]
    src = tmp_path / "robopoint_1432k.json"
    src.write_text(json.dumps(records))
    out = tmp_path / "out"
    assert import_robopoint_json(src, tmp_path / "img", out, image_size=32)["samples"] == 2
    samples = list(ShardSet(out))
    assert [s.messages[0]["content"][1]["text"] for s in samples] == ["Point to the cup.", "Box the cup."]
    assert samples[1].messages[1]["content"][0]["text"] == "[(0.1, 0.2, 0.3, 0.4)]"
    assert [s.meta["answer_kind"] for s in samples] == ["points", "boxes"]
    assert samples[0].images[0].size == (32, 24)
    assert verify_corpus(out)["errors"] == 0
    assert import_robopoint_json(src, tmp_path / "img", tmp_path / "o2", max_samples=1)["samples"] == 1
    # the same through the CLI
    from datasets_build.cli import main

    args = ["import", "robopoint-json", str(src), "--out", str(tmp_path / "o3"), "--image-size", "32"]
    assert main(args) == 2  # --image-root missing: one-line error
    assert main([*args, "--image-root", str(tmp_path / "img")]) == 0
    assert len(list(ShardSet(tmp_path / "o3"))) == 2


def test_calvin_object_points_land_on_the_rendered_blocks(tmp_path):
    """CALVIN has no segmentation: masks come from block poses and sizes back-projected from depth."""
    from datasets_build.sources import open_source
    from tests.calvin_fixtures import BLOCK_COLOURS, write_calvin

    fixture = write_calvin(tmp_path / "task_ABC_D")
    episodes = list(open_source("calvin", fixture.root).episodes())
    options = {"question_types": ["object"], "per_type": 3, "frames": 3, "geometry": {"mode": "ground_truth"}}
    builder = make_builder("robopoint", options)
    checked, skipped = 0, []
    for ep in episodes:
        result = builder.build(ep, EpisodeContext(episode_rng(0, ep.episode_id, ep.source)))
        skipped += result.skipped
        for sample in result.samples:
            assert builder.verify(sample)
            frame = ep.frames["static"][sample.meta["frame"]]
            h, w = frame.shape[:2]
            colour = BLOCK_COLOURS[sample.meta["objects"][0]]
            for x, y in parse_points(sample.messages[1]["content"][0]["text"]):
                assert tuple(frame[point_pixel(x, y, h, w)]) == colour
            checked += 1
    assert checked >= 4
    assert "no_masks" in skipped  # episodes of another table scene have no block sizes: no masks, no guess
