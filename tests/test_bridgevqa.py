"""The bridgevqa corpus: answers against the true object poses, verify and tampering, balance, units, skips, CLI."""

import copy
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

import datasets_build.corpora.bridgevqa  # noqa: F401  (registers the corpus until the package imports it)
from datasets_build.cli import main
from datasets_build.configs import parse_overrides
from datasets_build.corpora import BuildConfig, EpisodeContext, build_corpus, episode_rng, make_builder, verify_corpus
from datasets_build.corpora.bridgevqa import (
    COMPARATIVE,
    QUANTITATIVE,
    RELATIONS,
    RENDERING,
    UNIT_METRES,
    format_length,
    parse_length,
    parse_length_step,
    quantity,
)
from datasets_build.errors import ConfigError
from datasets_build.geometry.ground_truth import rotation_from_quaternion
from datasets_build.geometry.robot import ee_positions
from datasets_build.shards import ShardSet
from datasets_build.sources import open_source
from tests.calvin_fixtures import write_calvin

GT = {"geometry": {"mode": "ground_truth"}}
# Tolerances against the TRUE poses, measured on the demo episodes (6 seeds, blocks seen with >= 70 % of their
# usual pixels): the visible-surface centroid sits ~1 cm above and ~0.8 cm in front of the block centre, which
# mostly cancels in differences; centre distances were off by at most 0.86 cm, widths/heights (robust x/z
# extents of the visible faces vs the rotated box) by at most 1.8 / 2.2 cm. Occluded blocks (behind the gripper)
# reach 2.1 cm on distances and are left out of the pose checks.
DISTANCE_TOLERANCE = 0.015
EXTENT_TOLERANCE = 0.025
VISIBLE_FRACTION = 0.7


def texts(sample):
    """(question, answer) text pairs of a sample's turns."""
    parts = [" ".join(p["text"] for p in m["content"] if p.get("type") == "text") for m in sample.messages]
    return list(zip(parts[0::2], parts[1::2], strict=True))


def samples_of(builder, episodes, seeds=range(3)):
    for seed in seeds:
        for ep in episodes:
            for sample in builder.build(ep, EpisodeContext(episode_rng(seed, ep.episode_id, ep.source))).samples:
                yield ep, sample


def usual_pixels(ep, name):
    """Median pixel count of an object over the episode's static frames (how much of it is usually visible)."""
    seg = ep.segmentation["static"]
    return float(np.median((seg == ep.objects[name].segmentation_id).sum(axis=(1, 2))))


def true_centres(ep, sample, builder):
    """Canonical true centres of the sample's frame's unoccluded blocks and the gripper; the unoccluded objects."""
    geometry = builder.provider.frame(ep, "static", sample.meta["frame"])
    step = sample.meta["frame"]
    visible = {n for n, obj in geometry.objects.items() if obj.mask.sum() >= VISIBLE_FRACTION * usual_pixels(ep, n)}
    centres = {  # the pose of a container is its base, not its centre: blocks only
        n: geometry.to_canonical(ep.objects[n].position_at(step)[None])[0]
        for n in visible
        if ep.objects[n].category == "block"
    }
    ee = ee_positions(ep)
    if ee is not None:
        centres[builder.config.robot_name] = geometry.to_canonical(ee[step][None])[0]
    return geometry, centres, visible


def test_answers_agree_with_true_poses(demo_episodes):
    builder = make_builder("bridgevqa", {**GT, "frames_per_episode": 3, "turns_per_image": 6})
    checked = Counter()
    for ep, sample in samples_of(builder, demo_episodes, seeds=range(5)):
        geometry, centres, visible = true_centres(ep, sample, builder)
        step = sample.meta["frame"]
        for (_question, answer), turn in zip(texts(sample), sample.meta["turns"], strict=True):
            qtype, names = turn["question_type"], turn["objects"]
            if qtype in ("left_right", "front_behind", "above_below") and all(n in centres for n in names):
                axis = {"left_right": 0, "front_behind": 1, "above_below": 2}[qtype]
                sign = -1.0 if qtype in ("left_right", "front_behind") else 1.0  # left = -x, front = -y
                a_high = sign * centres[names[0]][axis] > sign * centres[names[1]][axis]
                holder = names[0] if a_high == RELATIONS[qtype][turn["word"]][2] else names[1]
                if turn["form"] == "yesno":
                    assert answer.startswith("Yes" if holder == names[0] else "No"), (qtype, answer, centres)
                else:
                    assert answer.startswith(f"The {holder}"), (qtype, answer)
                checked[qtype] += 1
            elif qtype == "bigger_smaller" and visible.issuperset(
                names
            ):  # true volumes of the objects' boxes (blocks, tray, plate)
                volumes = [float(np.prod(ep.objects[n].size)) for n in names]
                holder = names[0] if (volumes[0] > volumes[1]) == (turn["word"] == "bigger") else names[1]
                expect = ("Yes" if holder == names[0] else "No") if turn["form"] == "yesno" else f"The {holder}"
                assert answer.startswith(expect), (answer, volumes)
                checked[qtype] += 1
            elif qtype in QUANTITATIVE and all(n in centres for n in names):
                got, half_step = parse_length_step(answer)
                if qtype in ("width", "height"):
                    info = ep.objects[names[0]]
                    rotation = geometry.world_to_canonical[:3, :3] @ rotation_from_quaternion(info.orientations[step])
                    true = float((np.abs(rotation) @ info.size)[0 if qtype == "width" else 2])
                    assert abs(got - true) <= EXTENT_TOLERANCE + half_step, (answer, true)
                else:
                    d = centres[names[0]] - centres[names[1]]
                    true = {
                        "distance": np.linalg.norm(d),
                        "vertical_distance": abs(d[2]),
                        "horizontal_distance": np.hypot(d[0], d[1]),
                    }[qtype]
                    assert abs(got - true) <= DISTANCE_TOLERANCE + half_step, (answer, true)
                checked[qtype] += 1
    assert all(checked[q] >= 10 for q in ["left_right", "front_behind", "above_below", *QUANTITATIVE]), checked
    assert checked["bigger_smaller"] >= 5, checked  # only the tray is 3x bigger than anything on the demo scenes


def test_sample_layout_and_robot(demo_episodes):
    builder = make_builder("bridgevqa", GT)
    robot_turns = 0
    for _ep, sample in samples_of(builder, demo_episodes, seeds=[0, 1]):
        assert len(sample.images) == 1
        assert sample.images[0].size == (224, 224)
        turns = sample.meta["turns"]
        assert 1 <= len(turns) <= 4
        assert len(sample.messages) == 2 * len(turns)
        assert [m["role"] for m in sample.messages] == ["user", "assistant"] * len(turns)
        images = [sum(p["type"] == "image" for p in m["content"]) for m in sample.messages]
        assert images == [1] + [0] * (2 * len(turns) - 1)
        types = [t["question_type"] for t in turns]
        assert len(set(types)) == len(types)
        assert sample.task == f"bridgevqa/{types[0] if len(types) == 1 else 'mixed'}"
        used = {n for t in turns for n in t["objects"]}
        assert set(sample.meta["geometry"]["objects"]) | {"robot gripper"} >= used
        for turn in turns:
            if "robot gripper" in turn["objects"]:
                assert turn["question_type"] in ("left_right", "front_behind", "above_below")
                assert sample.meta["robot"]["source"] == "end_effector"
                robot_turns += 1
    assert robot_turns >= 3
    single = make_builder("bridgevqa", {**GT, "turns_per_image": 1})
    tasks = Counter()
    for _ep, sample in samples_of(single, demo_episodes, seeds=[0]):
        assert len(sample.meta["turns"]) == 1
        assert sample.task == f"bridgevqa/{sample.meta['turns'][0]['question_type']}"
        tasks[sample.task] += 1
    assert len(tasks) >= 4


def swap_names(text, a, b):
    """`text` with every "the a" and "the b" exchanged."""
    marker = "\0"
    text = re.sub(rf"\b([Tt]he) {re.escape(a)}\b", rf"\1 {marker}", text)
    text = re.sub(rf"\b([Tt]he) {re.escape(b)}\b", rf"\1 {a}", text)
    return text.replace(marker, b)


def tampered(sample, turn_index, question=None, answer=None):
    bad = copy.deepcopy(sample)
    if question is not None:
        bad.messages[2 * turn_index]["content"][-1]["text"] = question
    if answer is not None:
        bad.messages[2 * turn_index + 1]["content"][0]["text"] = answer
    return bad


def test_verify_accepts_built_and_rejects_tampered(demo_episodes):
    builder = make_builder("bridgevqa", {**GT, "turns_per_image": 6})
    caught = Counter()
    for _ep, sample in samples_of(builder, demo_episodes, seeds=[0, 1]):
        assert builder.verify(sample)
        for i, ((question, answer), turn) in enumerate(zip(texts(sample), sample.meta["turns"], strict=True)):
            if turn["form"] == "yesno":
                flipped = ("No" + answer[3:]) if answer.startswith("Yes") else ("Yes" + answer[2:])
                assert not builder.verify(tampered(sample, i, answer=flipped))
                a, b = turn["objects"]
                assert not builder.verify(tampered(sample, i, question=swap_names(question, a, b)))
                caught["yesno"] += 1
            elif turn["form"] == "choice":
                a, b = turn["objects"]
                assert not builder.verify(tampered(sample, i, answer=swap_names(answer, a, b)))
                caught["choice"] += 1
            else:
                value = parse_length(answer)
                number = re.search(r"\d+\.\d+", answer)
                assert number is not None
                changed = float(number.group()) * 1.2 + 1.0
                bumped = answer.replace(number.group(), f"{changed:.1f}", 1)
                assert not builder.verify(tampered(sample, i, answer=bumped)), (answer, bumped, value)
                assert not builder.verify(tampered(sample, i, answer="It is quite far."))
                caught["value"] += 1
        other = copy.deepcopy(sample)
        other.meta["turns"][0]["question_type"] = "width" if other.meta["turns"][0]["form"] != "value" else "left_right"
        assert not builder.verify(other)
    assert min(caught.values()) >= 10, caught


def test_answers_are_balanced(demo_episodes):
    # every askable type on many images per episode: each episode alternates the answers of each type, so
    # the corpus-level share only drifts by the episodes' odd leftovers (a fair coin each)
    options = {**GT, "frames_per_episode": 6, "frame_attempts": 8, "turns_per_image": 11}
    builder = make_builder("bridgevqa", options)
    counts: dict[str, Counter] = {q: Counter() for q in COMPARATIVE}
    for _ep, sample in samples_of(builder, demo_episodes, seeds=range(12)):
        for turn in sample.meta["turns"]:
            if turn["form"] == "yesno":
                counts[turn["question_type"]][turn["answer"]] += 1
            elif turn["form"] == "choice":
                slot = "first" if turn["answer"] == turn["objects"][0] else "second"
                counts[turn["question_type"]][slot] += 1
    for qtype, count in counts.items():
        for labels in (("yes", "no"), ("first", "second")):
            total = count[labels[0]] + count[labels[1]]
            assert total >= 25, (qtype, count)
            for label in labels:
                assert count[label] <= 0.6 * total, (qtype, count)


def test_build_card_verify_determinism_via_cli(demo_dir, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        args = ["build", "bridgevqa", "--source", "demo", "--input", str(demo_dir), "--out", str(out), "--seed", "5"]
        assert main([*args, "geometry.mode=ground_truth", "units=metric"]) == 0
    card = ShardSet(outs[0]).card
    assert card is not None
    assert card.build_config["options"]["geometry"]["mode"] == "ground_truth"
    assert card.num_samples == 12  # 2 frames per episode, 6 episodes
    assert any(k.endswith(":ambiguous") and v > 0 for k, v in card.skipped.items())
    report = verify_corpus(outs[0])
    assert report["errors"] == 0
    assert report["samples"] == 12
    answers = [a for s in ShardSet(outs[0]) for _, a in texts(s)]
    assert not any(unit in a for a in answers for unit in ("inches", "feet"))
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_units_render_and_parse():
    for metres in [0.004, 0.0371, 0.125, 0.5, 0.9, 0.99, 1.0, 1.234, 2.5, 7.77]:
        for system in ("metric", "imperial"):
            text = format_length(metres, system)
            value, half_step = parse_length_step(f"The cup is about {text} away.")
            assert abs(value - metres) <= half_step * (1 + 1e-9), (text, metres)
    assert format_length(0.125, "metric") == "12.5 centimeters"
    assert format_length(1.234, "metric") == "1.23 meters"
    assert format_length(0.125, "imperial") == "4.9 inches"
    assert format_length(1.0, "imperial") == "3.28 feet"
    assert format_length(0.9, "imperial") == "35.4 inches"  # below 3 ft
    assert parse_length("12.5 cm") == pytest.approx(0.125)
    assert parse_length("about 3 ft") == pytest.approx(0.9144)
    assert parse_length("2 feet 3 inches") == pytest.approx(0.6096)  # the first length only
    assert parse_length("1 foot") == pytest.approx(0.3048)
    assert parse_length("4 inches") == parse_length("4 in") == pytest.approx(0.1016)
    assert parse_length("1.25 metres") == parse_length("1.25 m") == pytest.approx(1.25)
    assert parse_length("15 millimeters") == pytest.approx(0.015)
    assert parse_length_step("12.5 cm")[1] == pytest.approx(0.0005)
    assert parse_length_step("3 m")[1] == pytest.approx(0.5)
    for junk in ["far away", "the red block is in the bowl", "12.5", "5 miles"]:
        with pytest.raises(ValueError):
            parse_length(junk)


def test_unit_systems_and_options(demo_episodes):
    for units, allowed in (("metric", {"centimeters", "meters"}), ("imperial", {"inches", "feet"})):
        builder = make_builder("bridgevqa", {**GT, "units": units, "question_types": list(QUANTITATIVE)})
        seen = set()
        for _ep, sample in samples_of(builder, demo_episodes[:3], seeds=[0]):
            for (_q, answer), turn in zip(texts(sample), sample.meta["turns"], strict=True):
                assert turn["system"] == units
                seen.add(re.search(r"\d (\w+)", answer).group(1))
            assert builder.verify(sample)
        assert seen
        assert seen <= allowed
    mixed = make_builder("bridgevqa", {**GT, "question_types": list(QUANTITATIVE)})
    systems = Counter(t["system"] for _ep, s in samples_of(mixed, demo_episodes, seeds=[0]) for t in s.meta["turns"])
    assert systems["metric"] > 5
    assert systems["imperial"] > 5
    overrides = parse_overrides(["geometry.mode=ground_truth", "units=imperial", "turns_per_image=3"])
    cfg = make_builder("bridgevqa", overrides).config
    assert (cfg.geometry.mode, cfg.units, cfg.turns_per_image) == ("ground_truth", "imperial", 3)
    for bad in [
        {"question_types": ["colour"]},
        {"units": "furlongs"},
        {"turns_per_image": 0},
        {"min_volume_ratio": 0.5},
        {"geometry": {"mode": "guess"}},
    ]:
        with pytest.raises(ConfigError):
            make_builder("bridgevqa", bad)


def test_quantities_and_lengths_are_the_plain_computations():
    """The answers' numbers and words as first written (numpy arrays for the centroid differences, the unit's
    metres looked up by its singular name), value for value."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        centroids = np.round(rng.normal(size=(2, 3)) * rng.uniform(0.01, 3), 5).tolist()
        facts = [{"centroid": c} for c in centroids]
        d = np.asarray(centroids[0], dtype=np.float64) - np.asarray(centroids[1], dtype=np.float64)
        plain = {
            "distance": float(np.linalg.norm(d)),
            "vertical_distance": abs(float(d[2])),
            "horizontal_distance": float(np.hypot(d[0], d[1])),
        }
        for qtype, value in plain.items():
            assert repr(quantity(qtype, facts)) == repr(value)
            for system, (switch, small, large) in RENDERING.items():
                unit, decimals = large if value >= switch else small
                metres = UNIT_METRES[unit[:-1] if unit.endswith("s") and unit[:-1] in UNIT_METRES else unit]
                assert format_length(value, system) == f"{value / metres:.{decimals}f} {unit}"
    with pytest.raises(ValueError):
        quantity("distance", [{"centroid": [0.0, 0.0, 0.0]}] * 3)  # two objects or none


def test_skips_are_counted(demo_episodes):
    builder = make_builder("bridgevqa", GT)
    ep = demo_episodes[0]
    ctx = EpisodeContext(np.random.default_rng(0))
    assert builder.build(replace(ep, depth={}), ctx).skipped == ["no_depth"]
    assert make_builder("bridgevqa", {**GT, "camera": "top"}).build(ep, ctx).skipped == ["no_camera"]
    one = dict(list(ep.objects.items())[:1])
    result = builder.build(replace(ep, objects=one), ctx)
    assert not result.samples
    assert set(result.skipped) == {"too_few_objects"}
    # the gripper is left out when the state does not name the end effector
    no_ee = replace(ep, meta={**ep.meta, "state_names": ["a", "b", "c"]})
    for sample in builder.build(no_ee, EpisodeContext(np.random.default_rng(1))).samples:
        assert sample.meta["robot"] is None
        assert all("robot gripper" not in t["objects"] for t in sample.meta["turns"])


def test_calvin_blocks(tmp_path):
    fixture = write_calvin(tmp_path / "task_ABC_D")
    out = tmp_path / "corpus"
    options = {**GT, "frames_per_episode": 3, "question_types": ["left_right", "front_behind", "distance"]}
    summary = build_corpus(
        BuildConfig(name="bridgevqa", source="calvin", input=str(fixture.root), out=str(out), options=options)
    )
    # only scene A matches the config's table, so only its episodes have block sizes (box masks)
    assert summary["skipped"].get("no_masks") == 2
    assert summary["samples"] == 6
    assert verify_corpus(out)["errors"] == 0
    episodes = {ep.episode_id: ep for ep in open_source("calvin", fixture.root).episodes()}
    builder = make_builder("bridgevqa", options)
    checked = 0
    for sample in ShardSet(out):
        ep = episodes[sample.meta["episode_id"]]
        geometry = builder.provider.frame(ep, "static", sample.meta["frame"])
        step = sample.meta["frame"]
        centres = {n: geometry.to_canonical(ep.objects[n].position_at(step)[None])[0] for n in geometry.objects}
        centres["robot gripper"] = geometry.to_canonical(ee_positions(ep)[step][None])[0]
        for (_q, answer), turn in zip(texts(sample), sample.meta["turns"], strict=True):
            names = turn["objects"]
            if turn["question_type"] == "distance":
                true = float(np.linalg.norm(centres[names[0]] - centres[names[1]]))
                got, half_step = parse_length_step(answer)
                assert abs(got - true) <= 0.005 + half_step
            else:
                axis = 0 if turn["question_type"] == "left_right" else 1
                a_high = -centres[names[0]][axis] > -centres[names[1]][axis]
                holder = names[0] if a_high == RELATIONS[turn["question_type"]][turn["word"]][2] else names[1]
                expect = ("Yes" if holder == names[0] else "No") if turn["form"] == "yesno" else f"The {holder}"
                assert answer.startswith(expect)
            checked += 1
    assert checked >= 12
