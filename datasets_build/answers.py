"""Answer parsers and metrics: the one place that reads and scores every answer form the corpora produce.

Parsers are lenient about surrounding words (a model's answer "The answer is B." parses as "B") and strict
about form (a box where points are expected is a ValueError). Metrics compare a model's answer with the
reference sample (its answer text and `meta` facts): point accuracy inside the target region, letter and
yes/no exact match, relative error of quantities, box IoU, trajectory mean pixel distance, FAST decoded
action L1 with the invalid rate. Points without a recorded target region (published RoboPoint rows) are
counted as `unverifiable`: the answer's points are samples of a region the row does not carry. Corpora
import their parsers from here; the SFT evaluation calls `score_answer`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from datasets_build.errors import DataError
from datasets_build.fast.vocab import parse_answer
from datasets_build.masks import point_pixel, rle_decode

# -- numbers and tuples ------------------------------------------------------------------------------
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TUPLE = re.compile(r"[\(\[]\s*(" + NUMBER + r"(?:\s*,\s*" + NUMBER + r")*)\s*,?\s*[\)\]]")


def parse_tuples(text: str) -> list[tuple[float, ...]]:
    """Every innermost `(a, b, ...)` or `[a, b, ...]` group of numbers in `text`, in order."""
    return [tuple(float(v) for v in m.group(1).split(",")) for m in _TUPLE.finditer(text)]


def parse_points(text: str) -> list[tuple[float, float]]:
    """The (x, y) points of an answer such as "[(0.461, 0.527), (0.3, 0.4)]"; ValueError on boxes or junk."""
    groups = parse_tuples(text)
    if any(len(g) != 2 for g in groups):
        raise ValueError(f"not a list of (x, y) points: {text[:80]!r}")
    return [(g[0], g[1]) for g in groups]


def format_points(points: Sequence[tuple[float, float]]) -> str:
    """Points as the published RoboPoint text, 3 decimals: "[(0.461, 0.527), ...]"."""
    return "[" + ", ".join(f"({x:.3f}, {y:.3f})" for x, y in points) + "]"


def parse_boxes(text: str) -> list[tuple[float, float, float, float]]:
    """The (x1, y1, x2, y2) boxes of an answer; ValueError when a group does not have 4 numbers."""
    groups = parse_tuples(text)
    if any(len(g) != 4 for g in groups):
        raise ValueError(f"not a list of (x1, y1, x2, y2) boxes: {text[:80]!r}")
    return [(g[0], g[1], g[2], g[3]) for g in groups]


def format_box(box: Sequence[float]) -> str:
    """A box as "[x1, y1, x2, y2]" with 3 decimals."""
    return "[" + ", ".join(f"{v:.3f}" for v in box) + "]"


# -- choices -----------------------------------------------------------------------------------------
_LETTER = re.compile(r"(?:^|[^A-Za-z])\(?([A-H])\)?(?=$|[^A-Za-z])")
_ANSWER_IS = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?([A-H])\)?(?![A-Za-z])", re.IGNORECASE)


def parse_choice(text: str) -> str | None:
    """The option letter of a multiple-choice answer ("B", "(B)", "B. red", "The answer is B."), or None."""
    stripped = text.strip()
    m = _ANSWER_IS.search(stripped)
    if m:
        return m.group(1).upper()
    m = _LETTER.search(stripped)
    return m.group(1) if m else None


_YES = {"yes", "true", "correct", "yeah", "yep"}
_NO = {"no", "false", "incorrect", "nope"}


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no (first such word of the answer), None when neither appears."""
    for word in re.findall(r"[A-Za-z]+", text.lower()):
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None


# -- quantities --------------------------------------------------------------------------------------
# unit word -> (dimension, factor to SI: metres, square metres, or a plain count)
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 1e-3),
    "millimeter": ("length", 1e-3),
    "millimetre": ("length", 1e-3),
    "cm": ("length", 1e-2),
    "centimeter": ("length", 1e-2),
    "centimetre": ("length", 1e-2),
    "m": ("length", 1.0),
    "meter": ("length", 1.0),
    "metre": ("length", 1.0),
    "in": ("length", 0.0254),
    "inch": ("length", 0.0254),
    "inches": ("length", 0.0254),
    "ft": ("length", 0.3048),
    "foot": ("length", 0.3048),
    "feet": ("length", 0.3048),
    "m2": ("area", 1.0),
    "m^2": ("area", 1.0),
    "m²": ("area", 1.0),
    "square meter": ("area", 1.0),
    "square metre": ("area", 1.0),
    "cm2": ("area", 1e-4),
    "cm^2": ("area", 1e-4),
    "cm²": ("area", 1e-4),
    "square centimeter": ("area", 1e-4),
    "square centimetre": ("area", 1e-4),
    "mm2": ("area", 1e-6),
    "ft2": ("area", 0.09290304),
    "ft^2": ("area", 0.09290304),
    "ft²": ("area", 0.09290304),
    "square foot": ("area", 0.09290304),
    "square feet": ("area", 0.09290304),
}
UNITS["sq m"] = ("area", 1.0)
_UNIT_WORDS = sorted(UNITS, key=len, reverse=True)
_QUANTITY = re.compile(
    r"(?<![\w.])(\d+(?:\.(\d+))?|\.\d+)\s*("
    + "|".join(re.escape(u) + (r"s?" if len(u) > 2 and u[-1].isalpha() else "") for u in _UNIT_WORDS)
    + r")(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def unit_factor(word: str) -> tuple[str, float] | None:
    """(dimension, factor to SI) of a unit word ("centimeters" -> ("length", 0.01)), plural forms included."""
    unit = word.strip().lower()
    if unit in UNITS:
        return UNITS[unit]
    if unit.endswith("s") and unit[:-1] in UNITS:
        return UNITS[unit[:-1]]
    return None


def parse_quantity_step(text: str) -> tuple[float, str, float] | None:
    """The first number with a known unit: (value in SI, dimension, half its rounding step in SI), or None.

    The rounding step comes from the decimals written: "12.5 cm" -> (0.125, "length", 0.0005).
    """
    for m in _QUANTITY.finditer(text):
        found = unit_factor(m.group(3))
        if found is not None:
            dimension, factor = found
            decimals = len(m.group(2) or "")
            return float(m.group(1)) * factor, dimension, 0.5 * 10.0**-decimals * factor
    return None


def parse_quantity(text: str) -> tuple[float, str] | None:
    """The first number with a known unit, converted to SI: (value, dimension), e.g. "12 cm" -> (0.12, "length")."""
    found = parse_quantity_step(text)
    return None if found is None else (found[0], found[1])


def parse_number(text: str) -> float | None:
    """The first plain number in `text` (counts, unitless answers), or None."""
    m = re.search(NUMBER, text)
    return float(m.group(0)) if m else None


# -- metrics -----------------------------------------------------------------------------------------
def points_in_region(points: Sequence[tuple[float, float]], region: np.ndarray) -> float:
    """Share of normalised (x, y) points whose pixel lies in the boolean (H, W) region (0 for no points)."""
    if not points:
        return 0.0
    h, w = region.shape
    inside = sum(bool(region[point_pixel(x, y, h, w)]) for x, y in points if 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0)
    return inside / len(points)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def resample_polyline(points: np.ndarray, n: int) -> np.ndarray:
    """`n` points evenly spaced by arc length along a polyline (N, 2)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 1:
        return np.repeat(pts, n, axis=0)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    if arc[-1] == 0:
        return np.repeat(pts[:1], n, axis=0)
    targets = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(targets, arc, pts[:, i]) for i in range(2)], axis=1)


def trajectory_distance(predicted: Sequence[tuple[float, float]], reference: Sequence[tuple[float, float]]) -> float:
    """Mean distance between the two polylines resampled to the reference's length (units of the inputs)."""
    if not predicted or not reference:
        return float("inf")
    ref = np.asarray(reference, dtype=np.float64)
    pred = resample_polyline(np.asarray(predicted, dtype=np.float64), len(ref))
    return float(np.linalg.norm(pred - resample_polyline(ref, len(ref)), axis=1).mean())


def relative_error(predicted: float, reference: float) -> float:
    """|predicted - reference| / |reference| (absolute error when the reference is 0)."""
    return abs(predicted - reference) / abs(reference) if reference else abs(predicted)


# -- scoring a model's answer against a reference sample ----------------------------------------------
Scorer = Callable[[str, str, dict[str, Any]], dict[str, float]]


def _score_points(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    try:
        points = parse_points(prediction)
    except ValueError:
        return {"parsed": 0.0, "point_accuracy": 0.0}
    region = meta.get("region")
    if isinstance(region, dict):
        return {"parsed": 1.0, "point_accuracy": points_in_region(points, _region_mask(region))}
    # no target region (published RoboPoint rows): the reference points are a few samples of an unknown
    # region, so no distance to them says whether a point is right
    return {"parsed": float(bool(points)), "unverifiable": 1.0}


def _region_mask(region: dict[str, Any]) -> np.ndarray:
    """The reference sample's target region; DataError (field meta.region) when it is not a valid RLE mask."""
    try:
        mask = rle_decode(region)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"not a run-length mask ({exc})", field="meta.region") from exc
    if mask.size == 0:
        raise DataError(f"empty mask of size {mask.shape}", field="meta.region")
    return mask


def _image_scale(meta: dict[str, Any]) -> np.ndarray:
    """[width, height] of the sample's image (normalised -> pixels); DataError (field meta.image_size) if malformed."""
    size = meta.get("image_size") or [1, 1]
    try:
        scale = np.asarray([float(size[0]), float(size[1])])
    except (TypeError, ValueError, IndexError, KeyError, OverflowError) as exc:
        raise DataError(f"expected [width, height], got {str(size)[:60]}", field="meta.image_size") from exc
    return scale


def _score_choice(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    letter = parse_choice(prediction)
    scores = {
        "parsed": float(letter is not None),
        "accuracy": float(letter is not None and letter == parse_choice(reference)),
    }
    options = meta.get("options")
    if isinstance(options, list) and len(options) >= 2:  # the accuracy of a uniform guess among them
        scores["chance"] = 1.0 / len(options)
    return scores


def _score_yes_no(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    del meta
    answer = parse_yes_no(prediction)
    return {
        "parsed": float(answer is not None),
        "accuracy": float(answer is not None and answer == parse_yes_no(reference)),
        "chance": 0.5,
    }


def _score_quantity(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    del meta
    pred, ref = parse_quantity(prediction), parse_quantity(reference)
    if ref is None:
        pred_n, ref_n = parse_number(prediction), parse_number(reference)
        if pred_n is None or ref_n is None:
            return {"parsed": 0.0, "relative_error": 1.0, "within_25pct": 0.0}
        err = relative_error(pred_n, ref_n)
    elif pred is None or pred[1] != ref[1]:
        return {"parsed": 0.0, "relative_error": 1.0, "within_25pct": 0.0}
    else:
        err = relative_error(pred[0], ref[0])
    return {"parsed": 1.0, "relative_error": min(err, 1.0), "within_25pct": float(err <= 0.25)}


def _score_box(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    del meta
    try:
        pred, ref = parse_boxes(prediction), parse_boxes(reference)
    except ValueError:
        return {"parsed": 0.0, "iou": 0.0}
    if not pred or not ref:
        return {"parsed": float(bool(pred)), "iou": 0.0}
    return {"parsed": 1.0, "iou": box_iou(pred[0], ref[0])}


def _score_trajectory(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    try:
        pred, ref = parse_points(prediction), parse_points(reference)
    except ValueError:
        return {"parsed": 0.0}
    scale = _image_scale(meta)
    distance = (
        trajectory_distance([tuple(p * scale) for p in np.asarray(pred)], [tuple(p * scale) for p in np.asarray(ref)])
        if pred
        else float("inf")
    )
    return {"parsed": float(bool(pred)), "mean_pixel_distance": distance}


def _score_text(prediction: str, reference: str, meta: dict[str, Any]) -> dict[str, float]:
    del meta
    return {"exact_match": float(prediction.strip().lower() == reference.strip().lower())}


SCORERS: dict[str, Scorer] = {
    "points": _score_points,
    "choice": _score_choice,
    "yes_no": _score_yes_no,
    "quantity": _score_quantity,
    "box": _score_box,
    "trajectory": _score_trajectory,
    "text": _score_text,
}


# answer kinds importers and builders record, by the scorer that reads them
KIND_ALIASES = {"boxes": "box", "affordance": "box", "letter": "choice", "number": "quantity", "planning": "text"}
# question types whose answer form the text alone does not tell (points: a trajectory, not a region)
QUESTION_KINDS = {"trajectory": "trajectory", "affordance": "box"}


def answer_kind(reference: str, meta: dict[str, Any]) -> str:
    """The answer form of a reference sample: `meta["answer_kind"]` (or its question type) when recorded, else
    guessed from its text."""
    kind = meta.get("answer_kind")
    kind = KIND_ALIASES.get(kind, kind) if isinstance(kind, str) else None
    if kind in (*SCORERS, "fast"):
        return str(kind)
    question = meta.get("question_type")
    if isinstance(question, str) and question in QUESTION_KINDS:
        return QUESTION_KINDS[question]
    text = reference.strip()
    if "<fast_" in text:
        return "fast"
    if re.fullmatch(r"\(?[A-H]\)?\.?", text):
        return "choice"
    if parse_yes_no(text) is not None and len(text.split()) <= 3:
        return "yes_no"
    groups = parse_tuples(text)
    if groups and all(len(g) == 2 for g in groups):
        return "points"
    if groups and all(len(g) == 4 for g in groups):
        return "box"
    if parse_quantity(text) is not None:
        return "quantity"
    return "text"


def score_answer(
    prediction: str, reference: str, meta: dict[str, Any] | None = None, fast_tokenizer: Any | None = None
) -> dict[str, float]:
    """Metrics of a model's `prediction` against a reference answer and its sample `meta`.

    FAST-token answers are scored by `score_fast_answer` against `meta["actions"]` through `fast_tokenizer`
    (the `FastTokenizer` the answers were encoded with); without one, by exact match only. Multiple-choice and
    yes/no answers also carry `chance`, the accuracy of a uniform guess, so a per-task mean reads against it.
    """
    meta = meta or {}
    kind = answer_kind(reference, meta)
    if kind == "fast":
        scores = _score_text(prediction, reference, meta)
        if fast_tokenizer is not None and "actions" in meta:
            scores.update(score_fast_answer(prediction, meta["actions"], fast_tokenizer))
        return scores
    return SCORERS[kind](prediction, reference, meta)


def score_fast_answer(prediction: str, actions: Any, tokenizer: Any) -> dict[str, float]:
    """One FAST-token answer decoded through `tokenizer`: `fast_invalid` (1 when it does not decode to a chunk)
    and, when valid, `fast_l1`, the mean absolute error against the reference (T, D) `actions`."""
    decoded = tokenizer.decode(parse_answer(prediction))
    try:
        reference = np.asarray(actions, np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"not a numeric array ({exc})", field="meta.actions") from exc
    if reference.shape != decoded.actions.shape:
        raise DataError(f"shape {reference.shape}, the tokenizer decodes {decoded.actions.shape}", field="meta.actions")
    if not decoded.valid:
        return {"fast_invalid": 1.0}
    return {"fast_invalid": 0.0, "fast_l1": float(np.abs(decoded.actions - reference).mean())}


def score_fast(predictions: Sequence[str], references: Sequence[np.ndarray], tokenizer: Any) -> dict[str, float]:
    """Decoded-action L1 (valid answers only) and the invalid rate of FAST-token answers.

    `references` are the (T, D) action chunks (e.g. `meta["actions"]`); `tokenizer` a `FastTokenizer`.
    """
    scores = [score_fast_answer(text, ref, tokenizer) for text, ref in zip(predictions, references, strict=True)]
    errors = [s["fast_l1"] for s in scores if "fast_l1" in s]
    invalid = sum(int(s["fast_invalid"]) for s in scores)
    n = len(predictions)
    return {
        "fast_l1": float(np.mean(errors)) if errors else float("nan"),
        "fast_invalid_rate": invalid / n if n else 0.0,
        "count": float(n),
    }
