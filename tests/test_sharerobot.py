"""The sharerobot corpus against the demo sim's ground truth, CALVIN step chains, verify, balance, and the importer."""

import copy
import itertools
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import datasets_build.corpora.sharerobot as sr  # importing it registers the corpus
from datasets_build.corpora import BuildConfig, EpisodeContext, build_corpus, episode_rng, make_builder, verify_corpus
from datasets_build.corpora.importers.sharerobot_json import import_sharerobot_json
from datasets_build.corpora.robopoint import format_points, parse_points, parse_tuples
from datasets_build.errors import ConfigError, DataError
from datasets_build.shards import ShardSet
from datasets_build.sim.scene import ROBOT_ID
from datasets_build.sources.calvin import CalvinSource
from tests.calvin_fixtures import write_calvin
from tests.helpers import synthetic_episode


def build(builder, episode, seed=0):
    return builder.build(episode, EpisodeContext(episode_rng(seed, episode.episode_id, episode.source)))


def samples_of(builder, episodes, seeds=range(3)):
    for seed in seeds:
        for ep in episodes:
            for sample in build(builder, ep, seed).samples:
                yield ep, sample


def answer(sample):
    return sample.messages[1]["content"][0]["text"]


def set_answer(sample, text):
    bad = copy.deepcopy(sample)
    bad.messages[1]["content"][0]["text"] = text
    return bad


def by_task(episodes, task):
    return next(ep for ep in episodes if ep.task == task)


def nearest_pixel(mask, x, y):
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return float(np.min(np.hypot(cols + 0.5 - x * w, rows + 0.5 - y * h)))


def test_trajectory_points_land_on_the_gripper(demo_episodes):
    builder = make_builder("sharerobot", {"question_types": ["trajectory"], "per_type": 6})
    distances, depth_gaps = [], []
    for ep, sample in samples_of(builder, demo_episodes):
        seg, depth = ep.segmentation["static"], ep.depth["static"]
        facts = sample.meta["facts"]
        steps = facts["steps"]
        points = parse_points(answer(sample))
        assert len(points) == 5 == len(steps)
        assert steps[0] == sample.meta["frame"]
        assert steps == sorted(steps)
        _, ee_depth = ep.camera["static"].project(np.asarray(facts["points_world"]))
        for k, (x, y) in enumerate(points):
            robot = seg[steps[k]] == ROBOT_ID
            distances.append(nearest_pixel(robot, x, y))
            # robot pixels near the point are mostly at the EE's depth: the fingers, not an arm link behind
            rows, cols = np.nonzero(robot)
            near = np.hypot(cols + 0.5 - x * 224, rows + 0.5 - y * 224) <= 10
            depth_gaps.append(np.min(np.abs(depth[steps[k]][rows[near], cols[near]] - ee_depth[k])))
    assert len(distances) > 100
    # the TCP sits between the finger pads: a few pixels from the nearest robot pixel of its own frame
    assert max(distances) <= 10.0
    assert np.median(distances) <= 7.0
    assert np.median(depth_gaps) < 0.01


def test_affordance_boxes_cover_the_grasped_object(demo_episodes):
    builder = make_builder("sharerobot", {"question_types": ["affordance"]})
    checked = 0
    for ep, sample in samples_of(builder, demo_episodes, seeds=[0]):
        facts = sample.meta["facts"]
        name = facts["object"]
        assert name in ep.instruction  # the grasped object is the one the task names
        assert sample.meta["frame"] < facts["grasp_frame"] < facts["lift_frame"]
        x1, y1, x2, y2 = parse_tuples(answer(sample))[0]
        assert 0 <= x1 < x2 <= 1
        assert 0 <= y1 < y2 <= 1
        oid = ep.objects[name].segmentation_id
        for frame in (sample.meta["frame"], facts["grasp_frame"]):
            rows, cols = np.nonzero(ep.segmentation["static"][frame] == oid)
            assert len(rows) > 20
            assert np.all((cols + 0.5 >= x1 * 224 - 1) & (cols + 0.5 <= x2 * 224 + 1))
            assert np.all((rows + 0.5 >= y1 * 224 - 1) & (rows + 0.5 <= y2 * 224 + 1))
        u, v = facts["grasp_pixel"]
        assert x1 * 224 <= u <= x2 * 224
        assert y1 * 224 <= v <= y2 * 224
        checked += 1
    assert checked == 4  # the four pick-and-place families grasp once each


def test_demo_plans_follow_the_gripper_phases(demo_episodes):
    cfg = make_builder("sharerobot").config
    expected = {
        "pick_block": ["move to the {t}", "grasp the {t}", "lift the {t}"],
        "place_in_container": [
            "move to the {t}",
            "grasp the {t}",
            "lift the {t}",
            "move the {t} to the {r}",
            "release the {t}",
        ],
        "stack_blocks": [
            "move to the {t}",
            "grasp the {t}",
            "lift the {t}",
            "move the {t} to the {r}",
            "release the {t}",
        ],
        "move_next_to": [
            "move to the {t}",
            "grasp the {t}",
            "lift the {t}",
            "move the {t} to the {r}",
            "release the {t}",
        ],
        "push_block": ["move to the {t}", "push the {t}"],
        "gripper_over_block": ["move above the {t}", "close the gripper"],
    }
    for ep in demo_episodes:
        steps, rule = sr.plan_steps(ep, cfg)
        assert rule == "gripper_phases"
        named = sorted((ep.instruction.find(n), n) for n in ep.objects if n in ep.instruction)
        target, reference = named[0][1], named[-1][1]
        assert [s["text"] for s in steps] == [t.format(t=target, r=reference) for t in expected[ep.task]], ep.task
        assert steps[0]["start"] == 0
        assert steps[-1]["end"] == len(ep)
        assert all(a["end"] == b["start"] for a, b in itertools.pairwise(steps))


def test_planning_answers_match_the_step_list(demo_episodes):
    builder = make_builder("sharerobot", {"question_types": ["next_step", "remaining_steps", "future"]})
    seen = Counter()
    for _ep, sample in samples_of(builder, demo_episodes):
        meta = sample.meta
        steps, k, frame = meta["steps"], meta["current_step"], meta["frame"]
        assert steps[k]["start"] <= frame < steps[k]["end"]
        assert k + 1 < len(steps)
        texts = [s["text"] for s in steps[k + 1 :]]
        if meta["question_type"] == "next_step":
            assert answer(sample) == texts[0]
        elif meta["question_type"] == "remaining_steps":
            assert answer(sample) == "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
        else:
            assert meta["options"][meta["correct_index"]] == texts[0]
            assert len(set(meta["options"])) == len(meta["options"]) == 4
        seen[meta["question_type"]] += 1
    assert min(seen.values()) >= 30


def test_verify_accepts_every_sample_and_rejects_tampered_ones(demo_episodes):
    builder = make_builder("sharerobot")
    types = Counter()
    for _ep, sample in samples_of(builder, demo_episodes, seeds=[0]):
        assert builder.verify(sample), sample.meta["question_type"]
        qtype = sample.meta["question_type"]
        types[qtype] += 1
        text = answer(sample)
        if qtype == "affordance":
            box = list(parse_tuples(text)[0])
            box[2] = min(1.0, box[2] + 0.05)
            bad = set_answer(sample, "[" + ", ".join(f"{v:.3f}" for v in box) + "]")
        elif qtype == "trajectory":
            bad = set_answer(sample, format_points(parse_points(text)[::-1]))
        elif qtype == "next_step":
            bad = set_answer(sample, sample.meta["steps"][sample.meta["current_step"]]["text"])
        elif qtype == "remaining_steps":
            bad = set_answer(sample, text + "\n9. wave goodbye")
        else:
            letter = "A" if text != "A" else "B"
            bad = set_answer(sample, letter)
        assert not builder.verify(bad), qtype
        assert not builder.verify(set_answer(sample, "no idea"))
        moved = copy.deepcopy(sample)  # facts edited after the fact no longer support the answer
        if "facts" in moved.meta and "camera_model" in moved.meta["facts"]:
            moved.meta["facts"]["camera_model"]["extrinsics"][0][3] += 0.05
            assert not builder.verify(moved)
        elif "steps" in moved.meta:
            moved.meta["steps"][moved.meta["current_step"] + 1]["text"] = "juggle"
            assert not builder.verify(moved)
    assert set(types) == set(sr.QUESTION_TYPES)


def test_builds_are_deterministic_and_verify(demo_dir, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        summary = build_corpus(BuildConfig(name="sharerobot", source="demo", input=str(demo_dir), out=str(out), seed=5))
        outs.append(out)
    assert summary["samples"] > 50
    assert summary["skipped"] == {"affordance:no_close_event": 1, "affordance:no_lift": 1}
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    report = verify_corpus(outs[0])
    assert report["errors"] == 0
    assert report["samples"] == summary["samples"]
    samples = list(ShardSet(outs[0]))
    assert {s.task for s in samples} == {f"sharerobot/{q}" for q in sr.QUESTION_TYPES}
    assert {s.images[0].size for s in samples} == {(224, 224)}


def test_letters_and_yes_no_are_balanced(demo_episodes):
    builder = make_builder("sharerobot", {"question_types": ["success", "future"]})
    counts: dict[str, Counter] = {}
    for _ep, sample in samples_of(builder, demo_episodes, seeds=range(25)):
        meta = sample.meta
        counts.setdefault(f"{meta['question_type']}/letter", Counter())[meta["answer"]] += 1
        if meta["question_type"] == "success":
            counts.setdefault("success/yes_no", Counter())[meta["options"][meta["correct_index"]]] += 1
    assert set(counts) == {"success/letter", "success/yes_no", "future/letter"}
    for key, table in counts.items():
        total = sum(table.values())
        assert total >= 100, (key, total)
        assert max(table.values()) / total <= 0.6, (key, table)


def test_skip_reasons_are_counted(demo_episodes):
    builder = make_builder("sharerobot")
    plain = synthetic_episode(length=12)
    assert build(builder, replace(plain, frames={"wrist": plain.frames["wrist"]})).skipped == ["no_camera"]
    result = build(builder, replace(plain, success=None))  # synthetic state names no EE position
    assert result.skipped == [
        "affordance:no_ee",
        "trajectory:no_ee",
        "next_step:no_steps",
        "remaining_steps:no_steps",
        "success:unknown_outcome",
        "future:no_steps",
    ]
    assert build(builder, replace(plain, camera={})).skipped[:2] == [
        "affordance:no_calibration",
        "trajectory:no_calibration",
    ]
    push = by_task(demo_episodes, "push_block")
    assert "affordance:no_close_event" in build(builder, push).skipped
    assert "affordance:no_lift" in build(builder, by_task(demo_episodes, "gripper_over_block")).skipped
    # a camera that sees the scene from behind its back: every point is behind it, nothing is clipped or guessed
    cam = push.camera["static"]
    flipped = replace(cam, extrinsics=np.diag([-1.0, 1.0, -1.0, 1.0]) @ cam.extrinsics)
    skipped = build(builder, replace(push, camera={**push.camera, "static": flipped})).skipped
    assert "trajectory:behind_camera" in skipped
    shifted = replace(cam, intrinsics=cam.intrinsics + np.array([[0, 0, 2000.0], [0, 0, 0], [0, 0, 0]]))
    assert (
        "trajectory:outside_image" in build(builder, replace(push, camera={**push.camera, "static": shifted})).skipped
    )
    short = make_builder("sharerobot", {"question_types": ["trajectory"], "num_points": 40})
    assert build(short, push).skipped == ["trajectory:too_short"]


def test_bad_options_are_config_errors():
    for options in (
        {"question_types": ["dance"]},
        {"num_points": 2},
        {"per_type": 0},
        {"distractors": 9},
        {"grasp_tolerance": 0.05, "grasp_extent": 0.08},
    ):
        with pytest.raises(ConfigError):
            make_builder("sharerobot", options)


def test_calvin_planning_from_segment_windows(tmp_path):
    annotations = [
        (0, 3, "push the red block to the left", "push_red_left"),
        (4, 7, "open the drawer", "open_drawer"),
        (5, 9, "turn on the led light", "turn_on_led"),  # overlaps the previous window: not in the chain
        (8, 11, "lift the blue block", "lift_blue_block_table"),
        (12, 18, "close the drawer", "close_drawer"),
    ]
    fx = write_calvin(tmp_path / "task_ABC_D", annotations=annotations)
    source = CalvinSource(fx.root, mode="segments")
    episodes = [source.load_episode(k) for k in source.episode_keys()]
    first = episodes[0]
    assert first.meta["state_names"][:3] == ["x", "y", "z"]
    steps, rule = sr.plan_steps(first, make_builder("sharerobot").config)
    assert rule == "language_windows"
    assert [(s["start"], s["end"], s["text"]) for s in steps] == [
        (0, 4, "push the red block to the left"),
        (4, 8, "open the drawer"),
        (8, 12, "lift the blue block"),
    ]
    builder = make_builder("sharerobot", {"question_types": ["next_step", "remaining_steps", "future"], "per_type": 3})
    found = Counter()
    for sample in build(builder, first).samples:
        assert builder.verify(sample)
        frame, qtype = sample.meta["frame"], sample.meta["question_type"]
        assert frame < 8
        later = [s["text"] for s in steps if s["start"] > frame]
        if qtype == "next_step":
            assert answer(sample) == later[0]
        elif qtype == "remaining_steps":
            assert answer(sample).splitlines() == [f"{i + 1}. {t}" for i, t in enumerate(later)]
        found[qtype] += 1
    assert found == {"next_step": 3, "remaining_steps": 3, "future": 3}
    assert sr.plan_from_windows(episodes[1]) is None  # one window only


# -- importer -------------------------------------------------------------------------------------------


def write_fixture(root):
    """A ShareRobot-like folder: planning, affordance and trajectory files in the published layouts."""
    images = root / "images"
    (images / "ep1").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 48), (40 * i, 100, 30)).save(images / "ep1" / f"frame_{i}.png")
    Image.new("RGB", (80, 60), (200, 10, 10)).save(images / "bridge_0.png")
    planning = [
        {
            "id": "/data/rtx_frames_success_42/62_robo_set#episode_1570",
            "task": "Future_Prediction_Task",
            "selected_step": 3,
            "conversations": [
                {
                    "from": "human",
                    "value": "<image 0-2> After <grasp the banana>, what's the most probable next event?",
                },
                {"from": "gpt", "value": "<place the banana into the mug>"},
            ],
            "image": [f"ep1/frame_{i}.png" for i in range(3)],
        }
    ]
    affordance = [
        {
            "id": "bridge_0.png",
            "meta_data": {"original_dataset": "bridge", "original_width": 640, "original_height": 480},
            "instruction": "place the red fork to the left of the left burner",
            "affordance": {"x": 352.0, "y": 186.0, "width": 19.2, "height": 14.4},
        }
    ]
    trajectory = [
        {
            "id": 456,
            "image": "bridge_0.png",
            "meta_data": {"original_dataset": "bridge", "original_width": 640, "original_height": 480},
            "instruction": "reach for the carrot",
            "points": [[265.5, 120.0], [275.2, 162.4], [280.0, 213.3], [280.0, 259.4]],
        }
    ]
    jsons = root / "jsons"
    jsons.mkdir()
    for name, records in (("planning", planning), ("affordance", affordance), ("trajectory", trajectory)):
        (jsons / f"{name}.json").write_text(json.dumps(records))
    return jsons, images


def test_import_sharerobot_json(tmp_path):
    jsons, images = write_fixture(tmp_path)
    summary = import_sharerobot_json(jsons, images, tmp_path / "out", image_size=32)
    assert summary["samples"] == 3
    assert summary["per_kind"] == {"affordance": 1, "planning": 1, "trajectory": 1}
    samples = {s.meta["answer_kind"]: s for s in ShardSet(tmp_path / "out")}
    builder = make_builder("sharerobot")
    assert all(builder.verify(s) and s.task == "sharerobot/imported" for s in samples.values())
    plan = samples["planning"]
    assert len(plan.images) == 3
    assert plan.images[0].size == (32, 24)
    assert plan.messages[0]["content"][-1]["text"] == "After <grasp the banana>, what's the most probable next event?"
    assert answer(plan) == "<place the banana into the mug>"
    assert answer(samples["affordance"]) == "[0.550, 0.388, 0.580, 0.418]"  # (x, y, x + w, y + h) / (640, 480)
    assert "place the red fork" in samples["affordance"].messages[0]["content"][-1]["text"]
    assert parse_points(answer(samples["trajectory"])) == [(0.415, 0.25), (0.43, 0.338), (0.438, 0.444), (0.438, 0.540)]
    assert not builder.verify(set_answer(samples["affordance"], "[0.6, 0.4, 0.5, 0.5]"))
    assert not builder.verify(set_answer(samples["trajectory"], "[(1.5, 0.2)]"))
    only = import_sharerobot_json(jsons / "trajectory.json", images, tmp_path / "one", kind="trajectory")
    assert only["samples"] == 1
    assert import_sharerobot_json(jsons, images, tmp_path / "two", max_samples=2)["samples"] == 2


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"instruction": "x", "affordance": {"x": 1, "y": 2, "width": "w", "height": 3}}, "affordance.width"),
        ({"instruction": "x", "affordance": {"x": 700, "y": 2, "width": 5, "height": 3}}, "affordance"),
        ({"instruction": "", "points": [[1, 2]]}, "instruction"),
        ({"instruction": "x", "points": [[1, 2, 3]]}, "points[0]"),
        ({"instruction": "x", "affordance": {"x": 1, "y": 2, "width": 5, "height": 3}, "image": "gone.png"}, "image"),
        ({"conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "?"}]}, "conversations[0]"),
        ({"task": "nothing"}, None),
    ],
)
def test_bad_records_name_file_record_and_field(tmp_path, record, field):
    jsons, images = write_fixture(tmp_path)
    base = {"id": "bridge_0.png", "meta_data": {"original_width": 640, "original_height": 480}}
    path = jsons / "affordance.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps([*good, {**base, **record}]))
    with pytest.raises(DataError) as caught:
        import_sharerobot_json(jsons, images, tmp_path / "out")
    message = str(caught.value)
    assert "affordance.json:record 1" in message
    if field:
        assert caught.value.field == field
    assert not list((tmp_path / "out").glob("*.tar"))  # nothing half-written
    summary = import_sharerobot_json(jsons, images, tmp_path / "skip", skip_bad=True)
    assert summary["samples"] == 3
    assert sum(summary["skipped"].values()) == 1


def test_importer_kind_filter_and_errors(tmp_path):
    jsons, images = write_fixture(tmp_path)
    with pytest.raises(DataError, match="not a ShareRobot affordance record"):
        import_sharerobot_json(jsons / "trajectory.json", images, tmp_path / "o", kind="affordance")
    with pytest.raises(ConfigError):
        import_sharerobot_json(jsons, images, tmp_path / "o2", kind="everything")
    with pytest.raises(DataError, match=r"no \.json files"):
        import_sharerobot_json(images, images, tmp_path / "o3")
