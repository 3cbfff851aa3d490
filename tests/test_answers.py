"""Answer parsers and metrics: lenient parsing of model answers, strict forms, every metric on known cases."""

import numpy as np
import pytest

from datasets_build.answers import (
    answer_kind,
    box_iou,
    format_box,
    format_points,
    parse_boxes,
    parse_choice,
    parse_number,
    parse_points,
    parse_quantity,
    parse_yes_no,
    points_in_region,
    resample_polyline,
    score_answer,
    score_fast,
    trajectory_distance,
)
from datasets_build.masks import rle_encode


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D. the red block", "D"),
        ("The answer is A.", "A"),
        ("answer: E", "E"),
        ("none", None),
    ],
)
def test_parse_choice(text, letter):
    assert parse_choice(text) == letter


@pytest.mark.parametrize(
    ("text", "value"), [("Yes.", True), ("no, it is empty", False), ("True", True), ("unclear", None)]
)
def test_parse_yes_no(text, value):
    assert parse_yes_no(text) is value


@pytest.mark.parametrize(
    ("text", "metres"),
    [
        ("about 12.5 cm", 0.125),
        ("1.2 meters", 1.2),
        ("3 feet", 0.9144),
        ("4 inches apart", 0.1016),
        ("45mm", 0.045),
        ("0.5 m", 0.5),
    ],
)
def test_parse_quantity_lengths(text, metres):
    value, dimension = parse_quantity(text)
    assert dimension == "length"
    assert value == pytest.approx(metres)


def test_parse_quantity_areas_and_numbers():
    assert parse_quantity("roughly 0.75 m²") == (pytest.approx(0.75), "area")
    assert parse_quantity("2 square feet")[0] == pytest.approx(0.18580608)
    assert parse_quantity("three blocks") is None
    assert parse_number("There are 3 blocks.") == 3.0


def test_points_and_boxes_round_trip_and_strict_forms():
    pts = [(0.1234, 0.5), (0.9, 0.05)]
    assert parse_points(format_points(pts)) == [(0.123, 0.5), (0.9, 0.05)]
    assert parse_boxes(format_box([0.1, 0.2, 0.3, 0.4])) == [(0.1, 0.2, 0.3, 0.4)]
    with pytest.raises(ValueError, match="points"):
        parse_points("[0.1, 0.2, 0.3, 0.4]")
    with pytest.raises(ValueError, match="boxes"):
        parse_boxes("[(0.1, 0.2)]")


def test_metrics_on_known_cases():
    region = np.zeros((10, 10), dtype=bool)
    region[:5, :5] = True
    assert points_in_region([(0.1, 0.1), (0.9, 0.9)], region) == 0.5
    assert points_in_region([], region) == 0.0
    assert box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert box_iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    line = resample_polyline(np.array([[0.0, 0.0], [2.0, 0.0]]), 3)
    assert np.allclose(line, [[0, 0], [1, 0], [2, 0]])
    assert trajectory_distance([(0, 1), (2, 1)], [(0, 0), (1, 0), (2, 0)]) == pytest.approx(1.0)


def test_score_answer_dispatch():
    region = np.zeros((20, 20), dtype=bool)
    region[10:, :] = True
    meta = {"region": rle_encode(region)}
    assert score_answer("[(0.5, 0.9), (0.5, 0.1)]", "[(0.5, 0.8)]", meta)["point_accuracy"] == 0.5
    assert score_answer("The answer is B", "B", {})["accuracy"] == 1.0
    assert score_answer("Yes", "No", {})["accuracy"] == 0.0
    quantity = score_answer("It is 10 cm away.", "The red block is about 12.5 cm from the blue block.", {})
    assert quantity["relative_error"] == pytest.approx(0.2)
    assert quantity["within_25pct"] == 1.0
    assert score_answer("[0.1, 0.1, 0.5, 0.5]", "[0.1, 0.1, 0.5, 0.5]", {})["iou"] == pytest.approx(1.0)
    traj = score_answer(
        "[(0.1, 0.1), (0.2, 0.1)]", "[(0.1, 0.2), (0.2, 0.2)]", {"answer_kind": "trajectory", "image_size": [100, 100]}
    )
    assert traj["mean_pixel_distance"] == pytest.approx(10.0)
    assert score_answer("junk", "B", {})["parsed"] == 0.0
    assert answer_kind("<fast_1><fast_2>", {}) == "fast"
    assert answer_kind("a free-form plan", {}) == "text"


def test_choice_answers_carry_the_accuracy_of_a_uniform_guess():
    three = {"options": ["left", "right", "up"], "question_type": "direction"}
    assert score_answer("C", "A", three) == {"parsed": 1.0, "accuracy": 0.0, "chance": pytest.approx(1 / 3)}
    assert "chance" not in score_answer("B", "B", {})  # options unknown: no chance claimed
    assert score_answer("yes", "Yes", {})["chance"] == 0.5
    assert "chance" not in score_answer("It is 10 cm away.", "12 cm", {})


def test_score_fast_counts_invalid_answers():
    from datasets_build.fast import FastTokenizer, answer_text

    rng = np.random.default_rng(0)
    chunks = np.cumsum(rng.normal(0, 0.01, (400, 4, 7)), axis=1)
    flat = chunks.reshape(-1, 7)
    stats = {"q01": np.quantile(flat, 0.01, 0).tolist(), "q99": np.quantile(flat, 0.99, 0).tolist()}
    tok = FastTokenizer.fit(chunks, stats, vocab_size=256, scale=10)
    good = answer_text(tok.encode(chunks[0]))
    result = score_fast([good, "<fast_1>"], [chunks[0], chunks[1]], tok)
    assert result["fast_invalid_rate"] == 0.5
    assert result["fast_l1"] < 0.01


def test_points_without_a_target_region_are_unverifiable_not_a_polyline_distance():
    imported = {"corpus": "robopoint", "question_type": "imported", "answer_kind": "points"}
    scores = score_answer("[(0.1, 0.2)]", "[(0.461, 0.527), (0.3, 0.4)]", imported)
    assert scores == {"parsed": 1.0, "unverifiable": 1.0}
    assert score_answer("no points", "[(0.461, 0.527)]", imported) == {"parsed": 0.0, "unverifiable": 1.0}
    region = np.zeros((10, 10), dtype=bool)
    region[:5] = True  # a published target region, when an import carries one, is scored as built ones are
    carried = {**imported, "region": rle_encode(region)}
    assert score_answer("[(0.5, 0.2), (0.5, 0.8)]", "[(0.5, 0.1)]", carried)["point_accuracy"] == 0.5


def test_recorded_answer_kinds_and_question_types_pick_the_scorer():
    assert answer_kind("[(0.1, 0.2), (0.3, 0.4)]", {"question_type": "trajectory"}) == "trajectory"
    assert answer_kind("[0.1, 0.2, 0.3, 0.4]", {"question_type": "affordance"}) == "box"
    assert answer_kind("[0.1, 0.2, 0.3, 0.4]", {"answer_kind": "boxes"}) == "box"
    assert answer_kind("B", {"answer_kind": "letter"}) == "choice"
    assert answer_kind("3 m", {"answer_kind": "number"}) == "quantity"
    assert answer_kind("[(0.1, 0.2)]", {"answer_kind": "trajectory"}) == "trajectory"
    assert answer_kind("pick it up, then place it", {"answer_kind": "planning"}) == "text"
    trajectory = score_answer(
        "[(0.1, 0.1), (0.2, 0.1)]",
        "[(0.1, 0.2), (0.2, 0.2)]",
        {"question_type": "trajectory", "image_size": [100, 100]},
    )
    assert trajectory["mean_pixel_distance"] == pytest.approx(10.0)
