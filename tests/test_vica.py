"""The vica corpus: answers against the sim's true poses and sizes, verify, determinism, balance, skips, import."""

import copy
import json
import re
from collections import Counter, defaultdict
from dataclasses import replace

import av
import numpy as np
import pytest

import datasets_build.corpora.vica
from datasets_build.camera import CameraModel
from datasets_build.corpora import BuildConfig, EpisodeContext, build_corpus, episode_rng, make_builder, verify_corpus
from datasets_build.corpora.base import LETTERS, message_text
from datasets_build.corpora.vica import (
    answer_kind,
    clip_steps,
    parse_area,
    parse_count,
    parse_length,
    support_area,
    triangle_angles,
)
from datasets_build.errors import ConfigError, DataError
from datasets_build.geometry import GeometryProvider
from datasets_build.shards import ShardSet
from datasets_build.sim.scene import TABLE_ID
from tests.helpers import synthetic_episode

SEEDS = range(4)
MC_TYPES = ("rel_distance", "appearance_order", "triangular_position")


def samples_of(builder, episodes, seeds=SEEDS):
    for seed in seeds:
        for ep in episodes:
            for sample in builder.build(ep, EpisodeContext(episode_rng(seed, ep.episode_id, ep.source))).samples:
                yield ep, sample


@pytest.fixture(scope="module")
def many(demo_episodes):
    builder = make_builder("vica", {"per_type": 2})
    return builder, list(samples_of(builder, demo_episodes))


@pytest.fixture(scope="module")
def built(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "vica"
    cfg = BuildConfig(name="vica", source="demo", input=str(demo_dir), out=str(out), seed=3, options={"per_type": 2})
    summary = build_corpus(cfg)
    return out, summary


def answer(sample):
    return message_text(sample, "assistant").strip()


def chosen_option(sample):
    return sample.meta["options"][LETTERS.index(answer(sample))]


def true_centre(ep, name, steps):
    return np.mean([ep.objects[name].position_at(s) for s in steps], axis=0)


def test_answers_match_the_true_scene(many):
    _builder, pairs = many
    checked = Counter()
    for ep, s in pairs:
        meta, facts, steps = s.meta, s.meta["facts"], s.meta["steps"]
        qtype = meta["question_type"]
        assert len(s.images) == len(steps)
        assert s.task == f"vica/{qtype}"
        assert s.messages[0]["content"][: len(steps)] == [{"type": "image"}] * len(steps)
        if qtype == "object_size":
            assert parse_length(answer(s)) == pytest.approx(
                round(100 * float(max(ep.objects[facts["object"]].size))) / 100
            )
            assert facts["size_source"] == "ground_truth_size"
        elif qtype == "abs_distance":
            a, b = facts["objects"]
            true = np.linalg.norm(true_centre(ep, a, steps) - true_centre(ep, b, steps))
            assert abs(parse_length(answer(s)) - true) <= 0.0051
            for name in (a, b):  # static over the clip
                moves = [
                    np.linalg.norm(ep.objects[name].position_at(t) - ep.objects[name].position_at(steps[0]))
                    for t in steps
                ]
                assert max(moves) <= 0.02
        elif qtype == "rel_distance":
            target = true_centre(ep, facts["target"], steps)
            dist = {n: np.linalg.norm(true_centre(ep, n, steps) - target) for n in meta["options"]}
            pick = max if facts["polarity"] == "farthest" else min
            assert chosen_option(s) == pick(dist, key=dist.get)
            assert meta["template"].startswith(f"rel_distance_{facts['polarity']}/")
        elif qtype == "triangular_position":
            names = meta["options"]
            angles = triangle_angles([true_centre(ep, n, steps).tolist() for n in names])
            assert chosen_option(s) == names[int(np.argmax(angles))]
            assert sorted(angles)[-1] - sorted(angles)[-2] >= 9.9
        elif qtype == "count":
            seg = ep.segmentation["static"]
            visible = [
                n
                for n, o in ep.objects.items()
                if o.category == facts["category"] and any((seg[t] == o.segmentation_id).sum() >= 12 for t in steps)
            ]
            assert parse_count(answer(s)) == len(visible) > 0
        elif qtype == "appearance_order":
            seg = ep.segmentation["wrist"]
            assert meta["camera"] == "wrist"
            assert len(steps) == 4
            first = {}
            for name in facts["objects"]:
                sid = ep.objects[name].segmentation_id
                first[name] = next(i for i, t in enumerate(steps) if (seg[t] == sid).sum() >= facts["min_pixels"])
            assert len(set(first.values())) == len(first) >= 3  # no ties
            assert max(first.values()) > 0  # something appears after the first frame
            assert chosen_option(s) == ", ".join(sorted(first, key=first.get))
        elif qtype == "table_area":
            g = GeometryProvider().frame(ep, "static", steps[0])
            table = ep.segmentation["static"][steps[0]] == TABLE_ID
            true = support_area(table, g.camera, g.support_height)
            assert parse_area(answer(s)) == pytest.approx(true, rel=0.1)
            assert 0.3 < parse_area(answer(s)) < 1.6  # pybullet's table top is 1.5 m x 1 m
        checked[qtype] += 1
    assert set(checked) == set(datasets_build.corpora.vica.QUESTION_TYPES)
    assert min(checked.values()) >= 8, checked


def test_point_cloud_fallback_is_close_to_the_truth(demo_episodes):
    builder = make_builder("vica", {"prefer_poses": False, "question_types": ["abs_distance", "object_size"]})
    seen = Counter()
    for ep, s in samples_of(builder, demo_episodes, seeds=[0]):
        assert builder.verify(s)
        facts = s.meta["facts"]
        assert facts["position_source"] == "point_cloud"
        if s.meta["question_type"] == "abs_distance":
            a, b = facts["objects"]
            true = np.linalg.norm(true_centre(ep, a, s.meta["steps"]) - true_centre(ep, b, s.meta["steps"]))
            assert abs(parse_length(answer(s)) - true) < 0.05  # centroids of the visible surface
        else:
            assert facts["size_source"] == "point_cloud_extent"
            assert 0.01 < parse_length(answer(s)) <= 1.2 * float(max(ep.objects[facts["object"]].size)) + 0.01
        seen[s.meta["question_type"]] += 1
    assert seen["abs_distance"] >= 4
    assert seen["object_size"] >= 4


def test_letters_balanced(many):
    _builder, pairs = many
    letters = defaultdict(Counter)
    for _ep, s in pairs:
        if s.meta["question_type"] in MC_TYPES:
            letters[s.meta["question_type"]][answer(s)] += 1
    assert set(letters) == set(MC_TYPES)
    for qtype, counts in letters.items():
        total = sum(counts.values())
        assert total >= 10, (qtype, counts)
        assert max(counts.values()) / total <= 0.6, (qtype, counts)


def test_verify_accepts_built_and_rejects_tampered(many):
    builder, pairs = many
    rejected = Counter()
    for _ep, s in pairs:
        assert builder.verify(s), s.meta
        bad = copy.deepcopy(s)
        text = answer(s)
        if "options" in s.meta:
            wrong = LETTERS[(LETTERS.index(text) + 1) % len(s.meta["options"])]
            bad.messages[1]["content"][0]["text"] = wrong
        else:
            m = re.match(r"(\d+(?:\.\d+)?)(.*)", text)
            step = 1 if "." not in m.group(1) else 0.01
            bad.messages[1]["content"][0]["text"] = f"{float(m.group(1)) + step:.{2 if step < 1 else 0}f}{m.group(2)}"
        assert not builder.verify(bad), (s.meta["question_type"], text, answer(bad))
        facts_bad = copy.deepcopy(s)  # facts changed under an unchanged answer
        facts = facts_bad.meta["facts"]
        qtype = s.meta["question_type"]
        if qtype == "object_size":
            facts["size_m"] = [v * 2 for v in facts["size_m"]]
        elif qtype == "abs_distance":
            facts["centres"][0] = [v + 1.0 for v in facts["centres"][0]]
        elif qtype == "count":
            facts["objects"] = facts["objects"][1:] if len(facts["objects"]) > 1 else []
            if not any(o["category"] == facts["category"] for o in facts["objects"]) and answer(s) == "0":
                continue
        elif qtype == "table_area":
            facts["support_height"] -= 0.2
        else:
            continue
        if qtype != "count" or parse_count(answer(s)) != sum(
            o["category"] == facts["category"] for o in facts["objects"]
        ):
            assert not builder.verify(facts_bad), qtype
        rejected[qtype] += 1
    unitless = copy.deepcopy(next(s for _e, s in pairs if s.meta["question_type"] == "abs_distance"))
    unitless.messages[1]["content"][0]["text"] = answer(unitless).split()[0]
    assert not builder.verify(unitless)
    in_cm = copy.deepcopy(unitless)
    metres = parse_length(unitless.meta["answer"])
    in_cm.messages[1]["content"][0]["text"] = f"{round(metres * 100)} cm"
    assert builder.verify(in_cm)  # same length in another unit
    assert len(rejected) == 4


def test_build_card_verify_and_determinism(demo_dir, built, tmp_path):
    out, summary = built
    card = ShardSet(out, verify=True).card
    assert card.build_config["name"] == "vica"
    assert summary["samples"] == card.num_samples > 40
    assert set(summary["per_task"]) == {f"vica/{q}" for q in datasets_build.corpora.vica.QUESTION_TYPES}
    assert card.skipped.get("appearance_order:no_change", 0) >= 1
    assert card.skipped.get("rel_distance:too_few_objects", 0) >= 1
    report = verify_corpus(out)
    assert report["errors"] == 0
    assert report["samples"] == card.num_samples
    again = tmp_path / "again"
    cfg = BuildConfig(name="vica", source="demo", input=str(demo_dir), out=str(again), seed=3, options={"per_type": 2})
    build_corpus(cfg)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_skips_are_counted_never_guessed():
    builder = make_builder("vica", {"geometry": {"mode": "ground_truth"}})  # no estimation models in tests
    ctx = EpisodeContext(np.random.default_rng(0))
    plain = synthetic_episode(length=8)
    assert builder.build(replace(plain, frames={"wrist": plain.frames["wrist"]}), ctx).skipped == ["no_camera"]
    no_objects = builder.build(replace(plain, objects={}), ctx)
    assert no_objects.samples == []
    assert sorted(no_objects.skipped) == sorted(f"{q}:no_masks" for q in datasets_build.corpora.vica.QUESTION_TYPES)
    no_wrist = replace(
        plain,
        frames={"static": plain.frames["static"]},
        depth={"static": plain.depth["static"]},
        segmentation={"static": plain.segmentation["static"]},
        camera={"static": plain.camera["static"]},
        camera_extrinsics={},
    )
    result = builder.build(no_wrist, ctx)
    assert "appearance_order:no_order_camera" in result.skipped
    assert "triangular_position:too_few_objects" in result.skipped  # one object
    assert "rel_distance:too_few_objects" in result.skipped
    assert all(builder.verify(s) for s in result.samples)
    assert {s.meta["question_type"] for s in result.samples} >= {"object_size", "count"}


def test_config_errors():
    for options in (
        {"question_types": ["nope"]},
        {"clip_types": ["count"]},  # appearance_order needs a clip
        {"num_frames": 1},
        {"min_options": 5, "max_options": 4},
        {"geometry": {"mode": "magic"}},
    ):
        with pytest.raises(ConfigError):
            make_builder("vica", options)


def test_parsers_and_geometry_rules():
    assert parse_length("0.23 m") == pytest.approx(0.23)
    assert parse_length("12 cm") == pytest.approx(0.12)
    assert parse_length("4 centimeters.") == pytest.approx(0.04)
    assert parse_length("2 ft") == pytest.approx(0.6096)
    assert parse_length("7", "cm") == pytest.approx(0.07)
    assert parse_length("7") == pytest.approx(7.0)  # bare numbers take the default unit
    with pytest.raises(ValueError):
        parse_length("7", "")
    with pytest.raises(ValueError):
        parse_length("far away")
    assert parse_area("0.72 m²") == pytest.approx(0.72)
    assert parse_area("1.5 square meters") == pytest.approx(1.5)
    assert parse_count("3") == 3
    assert parse_count("4 blocks") == 4
    with pytest.raises(ValueError):
        parse_count("2.5")
    assert [answer_kind(t) for t in ("B", "C.", "3", "1.5 m", "It is a chair.")] == [
        "letter",
        "letter",
        "number",
        "number",
        "text",
    ]
    assert clip_steps(36, 4) == [0, 12, 23, 35]
    assert clip_steps(3, 8) == [0, 1, 2]
    assert triangle_angles([[0, 0, 0], [1, 0, 0], [0, 1, 0]]) == pytest.approx([90, 45, 45])
    # looking straight down from 2 m: the whole image covers (W / fx * 2) x (H / fy * 2) square metres
    cam = CameraModel.from_look_at([0, 0, 2], [0, 0, 0], [0, 1, 0], 60, 40, 30)
    f = cam.intrinsics[0, 0]
    full = np.ones((30, 40), dtype=bool)
    assert support_area(full, cam, 0.0) == pytest.approx((40 / f * 2) * (30 / f * 2), rel=1e-6)
    half = full.copy()
    half[:, 20:] = False
    assert support_area(half, cam, 0.0) == pytest.approx(support_area(full, cam, 0.0) / 2, rel=1e-6)
    assert support_area(full, cam, 3.0) == 0.0  # plane above the camera: no ray meets it


def write_video(path, frames, fps=10):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_import_vica_json(tmp_path):
    from datasets_build.corpora.importers.vica_json import import_vica_json, read_video_frames

    videos = tmp_path / "videos" / "arkitscenes"
    videos.mkdir(parents=True)
    levels = [10 + 20 * i for i in range(12)]
    write_video(videos / "41069025.mp4", [np.full((48, 64, 3), v, dtype=np.uint8) for v in levels])
    frames, indices = read_video_frames(videos / "41069025.mp4", 4)
    assert indices == [0, 4, 7, 11]
    assert [round(float(f.mean())) for f in frames] == pytest.approx([levels[i] for i in indices], abs=4)
    base = tmp_path / "ann" / "arkitscenes" / "base"
    base.mkdir(parents=True)
    count = [
        {
            "id": "arkit_41069025_count_0",
            "video": "arkitscenes/41069025.mp4",
            "conversations": [
                {"from": "human", "value": "<image>\nHow many chair(s) are in this room?\nAnswer with a number."},
                {"from": "gpt", "value": "3"},
            ],
        }
    ]
    order = [
        {
            "id": "arkit_41069025_order_0",
            "video": "arkitscenes/41069025.mp4",
            "conversations": [
                {"from": "human", "value": "<image>\nWhich order?\nA. chair, lamp\nB. lamp, chair"},
                {"from": "gpt", "value": "B"},
                {"from": "human", "value": "And which comes last?"},
                {"from": "gpt", "value": "The chair comes last."},
            ],
        }
    ]
    (base / "object_count.json").write_text(json.dumps(count))
    (base / "obj_appearance_order.json").write_text(json.dumps(order))
    out = tmp_path / "out"
    summary = import_vica_json(tmp_path / "ann", tmp_path / "videos", out, num_frames=4, image_size=32)
    assert summary["samples"] == 2
    samples = sorted(ShardSet(out), key=lambda s: s.task)
    assert [s.task for s in samples] == ["vica/imported:obj_appearance_order", "vica/imported:object_count"]
    multi, single = samples
    assert single.messages[0]["content"][:4] == [{"type": "image"}] * 4
    assert message_text(single, "user") == "How many chair(s) are in this room?\nAnswer with a number."
    assert single.meta["answer_kind"] == "number"
    assert multi.meta["answer_kind"] == "letter"
    assert single.meta["source_file"] == "arkitscenes/base/object_count.json"
    assert single.meta["scene_source"] == "arkitscenes"
    assert single.meta["frame_indices"] == [0, 4, 7, 11]
    assert [m["role"] for m in multi.messages] == ["user", "assistant", "user", "assistant"]
    assert multi.messages[2]["content"] == [{"type": "text", "text": "And which comes last?"}]
    assert single.images[0].size == (32, 24)
    means = [float(np.asarray(im).mean()) for im in single.images]
    assert means == sorted(means)  # frames in time order
    assert verify_corpus(out)["errors"] == 0
    one = import_vica_json(base / "object_count.json", tmp_path / "videos", tmp_path / "o1", num_frames=2)
    assert one["samples"] == 1

    count.append({"id": "bad", "video": "arkitscenes/missing.mp4", "conversations": count[0]["conversations"]})
    count.append({"id": "bad2", "video": "arkitscenes/41069025.mp4", "conversations": [{"from": "gpt", "value": "3"}]})
    (base / "object_count.json").write_text(json.dumps(count))
    with pytest.raises(DataError, match=r"object_count\.json:record 1: video"):
        import_vica_json(base / "object_count.json", tmp_path / "videos", tmp_path / "o2")
    skipped = import_vica_json(base / "object_count.json", tmp_path / "videos", tmp_path / "o3", skip_bad=True)
    assert skipped["samples"] == 1
    assert skipped["skipped"] == {"bad_record:conversations[0].from": 1, "bad_record:video": 1}
    assert ShardSet(tmp_path / "o3").card.skipped == skipped["skipped"]


def test_verify_imported_forms():
    from datasets_build.sample import Sample, assistant_turn, user_turn

    builder = make_builder("vica")

    def imported(text, kind):
        meta = {"corpus": "vica", "question_type": "imported", "answer_kind": kind}
        return Sample(key="k", messages=[user_turn("q", 0), assistant_turn(text)], meta=meta)

    assert builder.verify(imported("B", "letter"))
    assert not builder.verify(imported("maybe", "letter"))
    assert builder.verify(imported("2.5 m", "number"))
    assert not builder.verify(imported("two", "number"))
    assert builder.verify(imported("A chair.", "text"))
    assert not builder.verify(imported("  ", "text"))
