"""Corpus builds: the robo2vlm answers against ground truth, balance, determinism, verify, and the CLI."""

import copy
import hashlib
import io
import json
import tarfile
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from datasets_build.cli import main
from datasets_build.corpora import EpisodeContext, available_corpora, episode_rng, make_builder
from datasets_build.corpora.robo2vlm import (
    ARROW_COLOURS,
    DIRECTION_WORDS,
    QUESTION_TYPES,
    close_events,
    segment_phases,
)
from datasets_build.geometry import ee_positions
from datasets_build.shards import ShardSet
from datasets_build.sources import open_source
from tests.helpers import synthetic_episode

LETTERS = "ABCD"


@pytest.fixture(scope="module")
def built(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "robo2vlm"
    args = ["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--out", str(out), "--seed", "7"]
    assert main(args) == 0
    return out


def random_episode(seed: int, length: int = 24):
    """A synthetic episode with a random grasp: open, close at c, lift some steps, maybe reopen."""
    rng = np.random.default_rng(seed)
    base = synthetic_episode(length=length, size=16, seed=seed, episode_id=f"rand{seed}")
    actions = np.zeros((length, 7), dtype=np.float32)
    actions[:, :3] = rng.normal(scale=0.01, size=(length, 3))
    close = int(rng.integers(2, length - 6))
    reopen = int(rng.integers(close + 3, length + 3))
    actions[:, 6] = 1.0
    actions[close:reopen, 6] = 0.0
    lift = int(rng.integers(0, 4))
    actions[close + 1 : close + 1 + lift, 2] = 0.02
    return replace(base, actions=actions, success=bool(rng.integers(2)), instruction=f"task number {seed % 5}")


def questions(builder, episodes, seeds, seen=("stack the cups", "open the oven", "wipe the plate")):
    for seed in seeds:
        for ep in episodes:
            yield ep, builder.build(ep, EpisodeContext(episode_rng(seed, ep.episode_id, ep.source), seen))


def answer_text(sample):
    return sample.meta["options"][LETTERS.index(sample.messages[1]["content"][0]["text"])]


def test_answers_match_ground_truth():
    classic = ["gripper_state", "holding", "direction", "task", "success"]
    options = {"direction_frame": "world", "per_type": 3, "question_types": classic}
    builder = make_builder("robo2vlm", options, image_size=16)
    seen_types = Counter()
    for ep, result in questions(builder, [random_episode(s) for s in range(40)], range(3)):
        a = ep.actions
        for sample in result.samples:
            meta, facts, t = sample.meta, sample.meta["facts"], sample.meta["frame"]
            qtype = meta["question_type"]
            seen_types[qtype] += 1
            answer = answer_text(sample)
            assert builder.verify(sample)
            assert sample.images[0].size == (16, 16)
            if qtype == "gripper_state":
                assert facts["basis"] == "previous_action"
                assert facts["gripper_value"] == a[t - 1, 6]
                assert answer == ("open" if a[t - 1, 6] == 1 else "closed")
            elif qtype == "holding":
                closed = a[t - 1, 6] == 0
                start = t - 1
                while start > 0 and a[start - 1, 6] == 0:
                    start -= 1
                truth = bool(closed and start > 0 and a[start:t, 2].sum() > 0.01)
                assert closed == truth or not closed  # ambiguous frames are never asked
                yes = truth if facts["polarity"] == "holding" else not truth
                assert answer == ("yes" if yes else "no")
            elif qtype == "direction":
                delta = a[t : t + 3, :3].sum(axis=0)
                axis = int(np.argmax(np.abs(delta)))
                assert np.allclose(facts["delta"], delta, atol=1e-6)
                assert answer == DIRECTION_WORDS["world"][(axis, 1 if delta[axis] > 0 else -1)]
                assert len(set(meta["options"])) == 4
            elif qtype == "task":
                assert answer == ep.instruction
                assert len(set(meta["options"])) == 4
            elif qtype == "success":
                yes = ep.success if facts["polarity"] == "succeed" else not ep.success
                assert answer == ("yes" if yes else "no")
    assert set(seen_types) == {"gripper_state", "holding", "direction", "task", "success"}


def test_camera_relative_right_is_image_right(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": ["direction"], "per_type": 5})
    checked = 0
    for ep, result in questions(builder, demo_episodes, range(3)):
        for sample in result.samples:
            facts = sample.meta["facts"]
            assert facts["direction_frame"] == "camera"
            basis = np.asarray(facts["basis"])
            cam = ep.camera_at(sample.meta["camera"], sample.meta["frame"])
            start = ep.objects[next(iter(ep.objects))].positions[0].astype(np.float64)
            uv, _ = cam.project(np.stack([start, start + 0.05 * basis[0], start + 0.05 * basis[1]]))
            assert uv[1, 0] > uv[0, 0]  # "right" moves right in the image
            assert uv[2, 1] < uv[0, 1]  # "forward" (away from the camera) moves up in the image
            assert np.allclose(basis[2], [0, 0, 1])
            checked += 1
    assert checked > 10


def test_letters_and_yes_no_are_balanced(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": list(QUESTION_TYPES)})
    letters: dict[str, Counter] = {}
    yes_no: dict[str, Counter] = {}
    episodes = demo_episodes + [random_episode(s) for s in range(10)]
    for _, result in questions(builder, episodes, range(25)):
        for sample in result.samples:
            qtype = sample.meta["question_type"]
            letters.setdefault(qtype, Counter())[sample.meta["answer"]] += 1
            if qtype in ("holding", "success"):
                yes_no.setdefault(qtype, Counter())[answer_text(sample)] += 1
    assert {"arrow", "multiview"} <= set(letters)  # the drawn questions are balanced too
    for table in (letters, yes_no):
        for qtype, counts in table.items():
            total = sum(counts.values())
            assert total >= 100, (qtype, total)
            assert max(counts.values()) / total <= 0.6, (qtype, counts)


def test_arrow_answers_follow_the_end_effector(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": ["arrow"], "per_type": 3})
    checked = 0
    for ep, result in questions(builder, demo_episodes, range(4)):
        ee = ee_positions(ep)
        for sample in result.samples:
            facts, t = sample.meta["facts"], sample.meta["frame"]
            assert builder.verify(sample)
            cam = ep.camera_at(sample.meta["camera"], t)
            uv, _ = cam.project(ee[[t, t + facts["horizon"]]])
            uv = uv * np.asarray(facts["scale"])
            true = uv[1] - uv[0]
            arrows = {a["colour"]: a for a in facts["arrows"]}
            assert answer_text(sample) in arrows
            assert len(arrows) == 4
            for colour, arrow in arrows.items():
                d = np.subtract(arrow["end"], arrow["start"])
                cos = float(d @ true / (np.linalg.norm(d) * np.linalg.norm(true)))
                assert np.allclose(arrow["start"], uv[0], atol=0.01)
                if colour == answer_text(sample):
                    assert cos > 0.999
                else:
                    assert cos <= np.cos(np.radians(59.5))  # >= 60 degrees apart, up to the 0.01 px rounding
            checked += 1
    assert checked >= 40


def test_drawn_true_arrow_has_its_colour_along_the_shaft(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": ["arrow"], "per_type": 2})
    checked = 0
    for _, result in questions(builder, demo_episodes, range(2)):
        for sample in result.samples:
            image = np.asarray(sample.images[0])
            true = next(a for a in sample.meta["facts"]["arrows"] if a["true"])
            start, end = np.asarray(true["start"]), np.asarray(true["end"])
            assert true["colour"] == answer_text(sample)
            for f in np.linspace(0.35, 0.7, 8):
                x, y = start + f * (end - start)
                assert tuple(image[int(y), int(x)]) == ARROW_COLOURS[true["colour"]], (f, x, y)
            checked += 1
    assert checked >= 10


def test_multiview_point_reprojects_into_both_views(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": ["multiview"], "per_type": 3})
    checked = 0
    for ep, result in questions(builder, demo_episodes, range(4)):
        for sample in result.samples:
            facts, t = sample.meta["facts"], sample.meta["frame"]
            first, second = facts["camera_names"]
            assert (first, second) == ("static", "wrist")
            assert builder.verify(sample)
            assert len(sample.images) == 2
            assert sum(p.get("type") == "image" for p in sample.messages[0]["content"]) == 2
            point = np.asarray(facts["point"])
            u, v = facts["pixel_first"]  # the marked pixel's depth gives the 3D point back
            back = ep.camera_at(first, t).unproject(ep.depth[first][t], np.array([[u, v]]))[0]
            assert np.allclose(back, point, atol=1e-6)
            assert ep.objects  # X lies on an object's segmentation pixel
            ids = {o.segmentation_id for o in ep.objects.values()}
            assert ep.segmentation[first][t][int(v), int(u)] in ids
            uv2, z2 = ep.camera_at(second, t).project(point[None])
            col, row = int(uv2[0, 0]), int(uv2[0, 1])
            assert abs(ep.depth[second][t][row, col] - z2[0]) <= 0.015  # visible in the wrist view
            scale2 = np.asarray(facts["scales"][1])
            true = next(c for c in facts["candidates"] if c["true"])
            assert true["letter"] == sample.messages[1]["content"][0]["text"]
            assert np.allclose(true["pixel"], uv2[0] * scale2, atol=0.01)
            uv1, _ = ep.camera_at(first, t).project(point[None])
            assert np.allclose(facts["marker"], uv1[0] * np.asarray(facts["scales"][0]), atol=0.01)
            pixels = [np.asarray(c["pixel"]) for c in facts["candidates"]]
            gaps = [np.linalg.norm(a - b) for i, a in enumerate(pixels) for b in pixels[i + 1 :]]
            assert min(gaps) >= 0.1 * max(sample.images[1].size)
            checked += 1
    assert checked >= 40


def test_drawn_questions_skip_without_what_they_need():
    builder = make_builder("robo2vlm", {"question_types": ["arrow", "multiview"]}, image_size=32)
    ep = synthetic_episode(length=12, size=32)  # state without named EE coordinates
    ctx = EpisodeContext(np.random.default_rng(0))
    assert "arrow:no_ee" in builder.build(ep, ctx).skipped
    single = replace(ep, frames={"static": ep.frames["static"]}, camera={"static": ep.camera["static"]})
    assert "multiview:single_camera" in builder.build(single, ctx).skipped
    assert "multiview:no_depth" in builder.build(replace(ep, depth={}), ctx).skipped
    named = replace(ep, meta={"state_names": ["x", "y", "z"]}, state=np.zeros((12, 3), np.float32))
    assert "arrow:motion_too_short" in builder.build(named, ctx).skipped  # the EE never moves


def test_drawn_answers_tampered_fail_verify(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": ["arrow", "multiview"]})
    checked = 0
    for _, result in questions(builder, demo_episodes[:3], [0]):
        for sample in result.samples:
            assert builder.verify(sample)
            bad = copy.deepcopy(sample)
            letter = sample.messages[1]["content"][0]["text"]
            bad.messages[1]["content"][0]["text"] = "B" if letter == "A" else "A"
            assert not builder.verify(bad)
            moved = copy.deepcopy(sample)
            facts = moved.meta["facts"]
            if sample.meta["question_type"] == "arrow":
                facts["ee_end"] = list(2 * np.asarray(facts["ee_start"]) - np.asarray(facts["ee_end"]))
            else:
                facts["point"] = [c + 0.05 for c in facts["point"]]
            assert not builder.verify(moved)
            checked += 1
    assert checked >= 6


def test_phases_and_close_events():
    gripper = np.array([1, 1, 0, 0, 1, 0], dtype=np.float32)
    assert close_events(gripper) == [2, 5]
    actions = np.zeros((4, 7), dtype=np.float32)
    actions[:, 6] = [1, 1, 0, 0]
    actions[:, 2] = [-0.02, -0.02, 0.02, 0.0]
    phases = segment_phases(actions)
    assert [(p["start"], p["end"], p["gripper"], p["motion"]) for p in phases] == [
        (0, 2, "open", "down"),
        (2, 3, "closed", "up"),
        (3, 4, "closed", "still"),
    ]


def test_card_counts_and_shards_load(built):
    shards = ShardSet(built, verify=True)
    card = shards.card
    assert card is not None
    assert card.build_config["name"] == "robo2vlm"
    assert card.inputs[0]["fingerprint"]
    assert card.skipped.get("holding:no_gripper_change", 0) >= 1  # the push episode never opens its gripper
    samples = list(shards)
    assert len(samples) == card.num_samples == len(shards) > 30
    assert {s.images[0].size for s in samples} == {(224, 224)}
    assert sum(card.counts_per_task.values()) == len(samples)


def test_too_short_is_counted(demo_dir, tmp_path):
    out = tmp_path / "c"
    args = ["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--out", str(out), "min_length=30"]
    assert main(args) == 0
    card = ShardSet(out).card
    lengths = [len(ep) for ep in open_source("demo", demo_dir).episodes()]
    assert card.skipped["too_short"] == sum(n < 30 for n in lengths) > 0


def test_builds_are_deterministic_and_worker_independent(demo_dir, built, tmp_path):
    common = ["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--seed", "7"]
    assert main([*common, "--out", str(tmp_path / "again")]) == 0
    assert main([*common, "--out", str(tmp_path / "workers"), "--workers", "2"]) == 0
    for other in ("again", "workers"):
        names = sorted(p.name for p in built.iterdir())
        assert names == sorted(p.name for p in (tmp_path / other).iterdir())
        for name in names:
            assert (built / name).read_bytes() == (tmp_path / other / name).read_bytes(), (other, name)
    assert main([*common[:-1], "8", "--out", str(tmp_path / "seed8")]) == 0
    tar = next(built.glob("*.tar")).name
    assert (built / tar).read_bytes() != (tmp_path / "seed8" / tar).read_bytes()


def test_max_samples(demo_dir, tmp_path):
    out = tmp_path / "c"
    args = ["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--out", str(out), "--max-samples", "5"]
    assert main(args) == 0
    assert ShardSet(out).card.num_samples == 5


def test_verify_passes_then_catches_a_tampered_answer(built, tmp_path, capsys):
    assert main(["verify", str(built)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 0
    assert report["samples"] > 30
    assert all(v["error_rate"] == 0.0 for v in report["per_task"].values())

    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in built.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    tar_path = next(copy.glob("*.tar"))
    with tarfile.open(tar_path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    tampered_key = None
    with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, original in members:
            data = original
            if tampered_key is None and member.name.endswith(".json"):
                payload = json.loads(data)
                letter = payload["messages"][1]["content"][0]["text"]
                payload["messages"][1]["content"][0]["text"] = "B" if letter == "A" else "A"
                new = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
                assert len(new) == len(data)
                data, tampered_key = new, member.name.split(".")[0]
            tar.addfile(member, io.BytesIO(data))
    assert main(["verify", str(copy)]) == 2  # the shard no longer matches its card's sha256: refused first
    assert "sha256" in capsys.readouterr().err
    card = json.loads((copy / "dataset_card.json").read_text())  # a card that vouches for the tampered bytes:
    for entry in card["shards"]:  # now only the answer check can catch it
        if entry["name"] == tar_path.name:
            entry["sha256"] = hashlib.sha256(tar_path.read_bytes()).hexdigest()
    (copy / "dataset_card.json").write_text(json.dumps(card))
    assert main(["verify", str(copy)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == 1
    assert report["failed_keys"] == [tampered_key]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["robo2vlmz"], "unknown corpus 'robo2vlmz'"),
        (["robo2vlm", "per_typ=3"], "per_typ: unknown key"),
        (["robo2vlm", "question_types=[juggle]"], "juggle"),
    ],
)
def test_bad_name_and_options_are_one_line(demo_dir, tmp_path, capsys, args, needle):
    name, *options = args
    cmd = ["build", name, "--source", "demo", "--input", str(demo_dir), "--out", str(tmp_path / "x"), *options]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert "\n" not in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_existing_output_is_refused(demo_dir, built, capsys):
    assert main(["build", "robo2vlm", "--source", "demo", "--input", str(demo_dir), "--out", str(built)]) == 2
    err = capsys.readouterr().err.strip()
    assert "overwrite" in err
    assert "\n" not in err


def test_registry_and_recipe_stage():
    from recipes.runner import STAGE_KINDS

    assert "robo2vlm" in available_corpora()
    kind = STAGE_KINDS["build"]
    assert kind.config_class().__name__ == "BuildConfig"
    assert kind.run_function().__name__ == "build_corpus"


def test_robo2vlm_parquet_import_verifies(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from datasets_build.corpora.importers.robo2vlm_parquet import import_robo2vlm_parquet

    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(buf, format="PNG")
    rows = {
        "id": ["q/0", "q1"],
        "question": ["Is the gripper open?", "Which way next?"],
        "choices": ['["yes", "no"]', "['up', 'down', 'left']"],
        "correct_answer": [1, 2],
        "image": [{"bytes": buf.getvalue(), "path": "a.png"}] * 2,
    }
    pq.write_table(pa.table(rows), tmp_path / "train-0.parquet")
    out = tmp_path / "imported"
    summary = import_robo2vlm_parquet(tmp_path / "train-0.parquet", out, image_size=32)
    assert summary["samples"] == 2
    samples = list(ShardSet(out))
    assert [s.messages[1]["content"][0]["text"] for s in samples] == ["B", "C"]
    assert samples[1].meta["options"] == ["up", "down", "left"]
    assert samples[0].images[0].size == (32, 16)
    assert main(["verify", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["per_task"]["robo2vlm/imported"]["errors"] == 0


def test_drawn_questions_are_byte_identical_per_seed(demo_episodes):
    builder = make_builder("robo2vlm", {"question_types": ["arrow", "multiview"]})

    def records(seed):
        return [s.encode() for _, result in questions(builder, demo_episodes[:3], [seed]) for s in result.samples]

    first = records(5)
    assert first
    assert first == records(5)
    assert first != records(6)
