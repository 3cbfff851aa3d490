"""`bridgevqa`: VQASynth-style spatial question answering, several turns about one image.

Every answer is computed from the frame's `FrameGeometry` (ground truth or estimated, through
`GeometryProvider`), in its viewer- and gravity-aligned canonical frame (+x right, +y away from the
camera, +z up), from the objects' facts as `ObjectGeometry.facts()` records them (5-decimal centroid
and robust 2nd/98th-percentile `lower`/`upper` corners; extent = upper - lower):

- comparative types compare one key of two objects: `left_right` (-centroid x: left = smaller x),
  `above_below` (centroid z), `front_behind` (-centroid y: "in front" = closer to the camera),
  `bigger_smaller` (volume of the extents), `taller_shorter` (z extent), `wider_thinner` (x extent).
  Each is asked as a yes/no question ("Is the red block to the left of the blue block?") or as a
  choice between the two named objects ("Which is more to the left, the red block or the blue
  block?"). The wanted answer (yes/no, first/second slot) is the one used less so far in the episode
  for that type (ties drawn from the generator), then the object order is set to give it; the word
  (left or right) is drawn too. Pairs closer than `min_separation` metres (or, for volumes, a ratio
  below `min_volume_ratio`) are never asked: each such pair is counted as "<type>:ambiguous". Volumes
  of visible point clouds are rough: a cube turned 45 degrees doubles its axis-aligned box, and one seen
  face-on loses most of its depth extent, so equal blocks can differ by 2x; hence the default ratio of 3.
- quantitative types answer a sentence with a length in human units: `distance` (between centroids),
  `vertical_distance` (|dz|), `horizontal_distance` (in the xy plane), `width` (x extent), `height`
  (z extent). Metric: centimetres (1 decimal) below 1 m, metres (2 decimals) above; imperial: inches
  (1 decimal) below 3 ft, feet (2 decimals) above; `units=mixed` draws the system per turn.

When the episode's state names the end effector (`datasets_build.geometry.ee_positions`) and the
frame has a world frame, the gripper joins left_right / above_below / front_behind as one more object
(`robot_name`, its position = the end-effector point), provided it projects inside the image.

One sample per chosen frame: the image in the first user turn, then `turns_per_image` question/answer
turns of distinct types (types used least so far in the episode first). Frames whose geometry fails
are skipped with the provider's reason; frames with fewer than 2 visible objects as "too_few_objects".
A sample's `task` is "bridgevqa/<type>" when all its turns share one type (`turns_per_image=1`), else
"bridgevqa/mixed"; per-turn types are in `meta["turns"]`.
`meta["turns"]` records per turn the type, template, objects and value; `verify` recomputes every
answer from `meta["geometry"]` and the question text alone.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datasets_build.answers import UNITS as UNIT_TABLE
from datasets_build.answers import parse_quantity_step
from datasets_build.corpora.base import (
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    check_choices,
    frame_image,
    register_corpus,
    sample_key,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.geometry.provider import GeometryConfig, GeometryProvider
from datasets_build.geometry.robot import ee_positions
from datasets_build.geometry.scene import FrameGeometry
from datasets_build.sample import Sample, assistant_turn, user_turn

COMPARATIVE = ("left_right", "above_below", "front_behind", "bigger_smaller", "taller_shorter", "wider_thinner")
QUANTITATIVE = ("distance", "vertical_distance", "horizontal_distance", "width", "height")
QUESTION_TYPES = COMPARATIVE + QUANTITATIVE
SINGLE_OBJECT = ("width", "height")
ROBOT_TYPES = ("left_right", "above_below", "front_behind")  # the gripper is a point: no extents
UNITS = ("metric", "imperial", "mixed")

# Per comparative type: word -> (yes/no relation, choice phrase, whether the word holds when a's key > b's key).
RELATIONS: dict[str, dict[str, tuple[str, str, bool]]] = {
    "left_right": {
        "left": ("to the left of", "more to the left", True),
        "right": ("to the right of", "more to the right", False),
    },
    "above_below": {"above": ("above", "higher up", True), "below": ("below", "lower down", False)},
    "front_behind": {
        "front": ("in front of", "closer to the camera", True),
        "behind": ("behind", "farther from the camera", False),
    },
    "bigger_smaller": {"bigger": ("bigger than", "bigger", True), "smaller": ("smaller than", "smaller", False)},
    "taller_shorter": {"taller": ("taller than", "taller", True), "shorter": ("shorter than", "shorter", False)},
    "wider_thinner": {"wider": ("wider than", "wider", True), "thinner": ("thinner than", "thinner", False)},
}

TEMPLATES: dict[str, list[str]] = {
    "yesno": [
        "Is the {a} {rel} the {b}?",
        "Would you say the {a} is {rel} the {b}?",
        "Looking at the scene, is the {a} {rel} the {b}?",
        "Can you confirm whether the {a} is {rel} the {b}?",
    ],
    "choice": [
        "Which is {more}, the {a} or the {b}?",
        "Between the {a} and the {b}, which one is {more}?",
        "Of the {a} and the {b}, which is {more}?",
        "Which one is {more}: the {a} or the {b}?",
    ],
    "choice_position": ["Who is positioned {more}, the {a} or the {b}?"],  # positional types only
    "distance": [
        "How far apart are the {a} and the {b}?",
        "What is the distance between the {a} and the {b}?",
        "How far is the {a} from the {b}?",
        "Can you tell me the distance between the {a} and the {b}?",
    ],
    "vertical_distance": [
        "What is the vertical distance between the {a} and the {b}?",
        "How far apart are the {a} and the {b} vertically?",
        "How big is the height difference between the {a} and the {b}?",
    ],
    "horizontal_distance": [
        "What is the horizontal distance between the {a} and the {b}?",
        "How far apart are the {a} and the {b} horizontally?",
        "Ignoring height, how far is the {a} from the {b}?",
    ],
    "width": ["How wide is the {a}?", "What is the width of the {a}?", "Measure the width of the {a}."],
    "height": ["How tall is the {a}?", "What is the height of the {a}?", "How high is the {a}?"],
}
ANSWERS: dict[str, list[str]] = {
    "yes": ["Yes, the {a} is {rel} the {b}.", "Yes. The {a} is {rel} the {b}."],
    "no": ["No, the {a} is {rel} the {b}.", "No. The {a} is {rel} the {b}."],  # rel: the opposite word
    "choice": ["The {x} is {more}.", "The {x}."],
    "distance": ["The {a} is about {d} from the {b}.", "The {a} and the {b} are about {d} apart."],
    "vertical_distance": [
        "The vertical distance between the {a} and the {b} is about {d}.",
        "The {a} and the {b} are about {d} apart vertically.",
    ],
    "horizontal_distance": [
        "The horizontal distance between the {a} and the {b} is about {d}.",
        "The {a} and the {b} are about {d} apart horizontally.",
    ],
    "width": ["The {a} is about {d} wide.", "The width of the {a} is about {d}."],
    "height": ["The {a} is about {d} tall.", "The height of the {a} is about {d}."],
}

# Lengths: metres per unit word (from the one unit table, datasets_build.answers.UNITS) and the rendering
# rule per unit system.
UNIT_METRES: dict[str, float] = {w: factor for w, (dimension, factor) in UNIT_TABLE.items() if dimension == "length"}
RENDERING: dict[str, tuple[float, tuple[str, int], tuple[str, int]]] = {
    # system: (switch to the large unit at this many metres, (small unit, decimals), (large unit, decimals))
    "metric": (1.0, ("centimeters", 1), ("meters", 2)),
    "imperial": (0.9144, ("inches", 1), ("feet", 2)),
}


def format_length(metres: float, system: str) -> str:
    """A length as VQASynth renders it for people: "12.5 centimeters", "1.25 meters", "4.9 inches", "3.28 feet"."""
    switch, small, large = RENDERING[system]
    unit, decimals = large if metres >= switch else small
    value = metres / _RENDERED_METRES[unit]
    return f"{value:.{decimals}f} {unit}"


def _unit_key(word: str) -> str:
    word = word.lower()
    return word[:-1] if word.endswith("s") and word[:-1] in UNIT_METRES else word


# metres per rendered unit word ("centimeters" -> 0.01), looked up once
_RENDERED_METRES = {unit: UNIT_METRES[_unit_key(unit)] for _, *units in RENDERING.values() for unit, _ in units}


def parse_length_step(text: str) -> tuple[float, float]:
    """(metres, half the rounding step in metres) of the first length in `text`; ValueError if none."""
    found = parse_quantity_step(text)
    if found is None or found[1] != "length":
        raise ValueError(f"no length in {text[:80]!r}")
    return found[0], found[2]


def parse_length(text: str) -> float:
    """The first length of `text` ("about 12.5 cm", "3.28 feet") in metres; ValueError if there is none."""
    return parse_length_step(text)[0]


def _the(name: str) -> str:
    return rf"\bthe {re.escape(name)}(?![\w-])"


def named_order(text: str, names: list[str]) -> list[str]:
    """`names` that `text` mentions as "the <name>", ordered by their first mention."""
    found = []
    for name in names:
        match = re.search(_the(name), text, re.IGNORECASE)
        if match is not None:
            found.append((match.start(), name))
    return [name for _, name in sorted(found)]


def comparative_key(qtype: str, facts: dict[str, Any]) -> float:
    """The number a comparative type compares; its relation word with flag True holds when key(a) > key(b)."""
    centroid = facts["centroid"]
    if qtype == "left_right":
        return -float(centroid[0])
    if qtype == "front_behind":
        return -float(centroid[1])
    if qtype == "above_below":
        return float(centroid[2])
    extent = [float(u) - float(lo) for u, lo in zip(facts["upper"], facts["lower"], strict=True)]
    if qtype == "bigger_smaller":
        return extent[0] * extent[1] * extent[2]
    if qtype == "taller_shorter":
        return extent[2]
    if qtype == "wider_thinner":
        return extent[0]
    raise ValueError(f"not a comparative question type: {qtype}")


def quantity(qtype: str, facts: list[dict[str, Any]]) -> float:
    """The metres a quantitative type answers, from one or two objects' facts."""
    if qtype in SINGLE_OBJECT:
        axis = 0 if qtype == "width" else 2
        return float(facts[0]["upper"][axis]) - float(facts[0]["lower"][axis])
    # the differences in float64 as numpy's a - b makes them; the norm is np.linalg.norm's sqrt(d . d)
    a, b = (f["centroid"] for f in facts)
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    if qtype == "distance":
        vector = np.array(d, dtype=np.float64)
        return math.sqrt(float(vector.dot(vector)))
    if qtype == "vertical_distance":
        return abs(d[2])
    if qtype == "horizontal_distance":
        return float(np.hypot(d[0], d[1]))
    raise ValueError(f"not a quantitative question type: {qtype}")


def separated(qtype: str, a: dict[str, Any], b: dict[str, Any], min_separation: float, min_ratio: float) -> bool:
    """Whether two objects differ enough in `qtype`'s key to be compared without ambiguity."""
    return keys_separated(qtype, comparative_key(qtype, a), comparative_key(qtype, b), min_separation, min_ratio)


def keys_separated(qtype: str, ka: float, kb: float, min_separation: float, min_ratio: float) -> bool:
    """`separated` given the two objects' `comparative_key`s."""
    if qtype == "bigger_smaller":
        low, high = sorted((ka, kb))
        return 0 < low < high and high >= min_ratio * low
    return ka != kb and abs(ka - kb) >= min_separation


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")


@dataclass
class BridgeVQAConfig:
    """Options of the bridgevqa corpus (key=value on the command line; `geometry.mode=ground_truth`)."""

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    camera: str = "static"
    frames_per_episode: int = 2  # samples (images) per episode, at most
    frame_attempts: int = 6  # frames tried per episode before giving up
    turns_per_image: int = 4  # question/answer turns per sample (distinct types), at most
    units: str = "mixed"  # metric | imperial | mixed
    min_separation: float = 0.02  # metres: comparative keys closer than this are ambiguous
    min_volume_ratio: float = 3.0  # bigger_smaller: smaller ratios are ambiguous (see the module docstring)
    robot: bool = True  # add the gripper to left_right / above_below / front_behind when its position is known
    robot_name: str = "robot gripper"
    geometry: GeometryConfig = field(default_factory=GeometryConfig)


@dataclass
class _Turn:
    question: str
    answer: str
    meta: dict[str, Any]


@register_corpus("bridgevqa")
class BridgeVQABuilder(CorpusBuilder):
    """Multi-turn spatial QA (relations, sizes, distances in human units) from per-frame geometry."""

    config_cls = BridgeVQAConfig

    def __init__(self, config: BridgeVQAConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        where = "corpus bridgevqa options"
        check_choices(self.name, "question_types", config.question_types, QUESTION_TYPES)
        if config.units not in UNITS:
            raise ConfigError(f"{where}: units {config.units!r} is not one of {', '.join(UNITS)}")
        if config.frames_per_episode < 1 or config.turns_per_image < 1 or config.frame_attempts < 1:
            raise ConfigError(f"{where}: frames_per_episode, frame_attempts and turns_per_image must be >= 1")
        if config.min_separation < 0 or config.min_volume_ratio < 1:
            raise ConfigError(f"{where}: need min_separation >= 0 and min_volume_ratio >= 1")
        if not config.robot_name.strip():
            raise ConfigError(f"{where}: robot_name must not be empty")
        self.provider = GeometryProvider(config.geometry)

    # -- building -------------------------------------------------------------------------------
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Up to `frames_per_episode` multi-turn samples; skip reasons for failed frames and ambiguous pairs."""
        cfg = self.config
        result = EpisodeResult()
        if cfg.camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        rng = context.rng
        ee = ee_positions(episode) if cfg.robot else None
        usage: Counter[str] = Counter()  # turns per type so far in this episode
        answers: dict[str, Counter[str]] = {q: Counter() for q in COMPARATIVE}  # yes/no and slot counts
        order = rng.permutation(len(episode))[: cfg.frame_attempts]
        for step in (int(s) for s in order):
            if len(result.samples) >= cfg.frames_per_episode:
                break
            geometry = self.provider.frame(episode, cfg.camera, step)
            if isinstance(geometry, str):
                result.skipped.append(geometry)
                if geometry in ("no_camera", "no_depth", "no_calibration", "no_masks", "no_object_names"):
                    break  # the same for every frame of the episode
                continue
            if len(geometry.objects) < 2:
                result.skipped.append("too_few_objects")
                continue
            facts = {name: obj.facts() for name, obj in sorted(geometry.objects.items())}
            robot = self._robot_facts(geometry, ee, step, facts)
            turns = self._turns(facts, robot, rng, usage, answers, result.skipped)
            if not turns:
                result.skipped.append("no_questions")
                continue
            result.samples.append(self._sample(episode, geometry, facts, robot, turns, len(result.samples)))
        return result

    def _robot_facts(
        self, geometry: FrameGeometry, ee: np.ndarray | None, step: int, facts: dict[str, dict[str, Any]]
    ) -> dict[str, Any] | None:
        """The gripper as a point object, when its world position is known and it projects inside the image."""
        cfg = self.config
        if ee is None or geometry.world_to_canonical is None or cfg.robot_name in facts:
            return None
        point = geometry.to_canonical(ee[min(step, len(ee) - 1)][None])
        uv, depth = geometry.project(point)
        u, v = float(uv[0, 0]), float(uv[0, 1])
        if not (float(depth[0]) > 0 and 0 <= u < geometry.width and 0 <= v < geometry.height):
            return None
        return {
            "name": cfg.robot_name,
            "centroid": [round(float(x), 5) for x in point[0]],
            "source": "end_effector",
        }

    def _turns(
        self,
        facts: dict[str, dict[str, Any]],
        robot: dict[str, Any] | None,
        rng: np.random.Generator,
        usage: Counter[str],
        answers: dict[str, Counter[str]],
        skipped: list[str],
    ) -> list[_Turn]:
        """Questions of distinct types about one frame, least-used types first (ties drawn)."""
        cfg = self.config
        types = list(cfg.question_types)
        ties = rng.random(len(types))
        types = [t for _, _, t in sorted(zip([usage[t] for t in types], ties.tolist(), types, strict=True))]
        turns: list[_Turn] = []
        for qtype in types:
            if len(turns) >= cfg.turns_per_image:
                break
            if qtype in COMPARATIVE:
                pool = dict(facts)
                if robot is not None and qtype in ROBOT_TYPES:
                    pool[robot["name"]] = robot
                turn = self._comparative(qtype, pool, rng, answers[qtype], skipped)
            else:
                turn = self._quantitative(qtype, facts, rng)
            if turn is not None:
                usage[qtype] += 1
                turns.append(turn)
        return turns

    def _comparative(
        self,
        qtype: str,
        pool: dict[str, dict[str, Any]],
        rng: np.random.Generator,
        counts: Counter[str],
        skipped: list[str],
    ) -> _Turn | None:
        cfg = self.config
        names = sorted(pool)
        keys = {name: comparative_key(qtype, pool[name]) for name in names}  # each object's once
        pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        clear = [
            p for p in pairs if keys_separated(qtype, keys[p[0]], keys[p[1]], cfg.min_separation, cfg.min_volume_ratio)
        ]
        skipped.extend([f"{qtype}:ambiguous"] * (len(pairs) - len(clear)))
        if not clear:
            return None
        first, second = clear[int(rng.integers(len(clear)))]
        words = list(RELATIONS[qtype])
        word = words[int(rng.integers(len(words)))]
        rel, more, high_holds = RELATIONS[qtype][word]
        # the object for which `word` holds against the other one
        first_high = keys[first] > keys[second]
        holder, other = (first, second) if first_high == high_holds else (second, first)
        form = "yesno" if rng.integers(2) == 0 else "choice"
        labels = ("yes", "no") if form == "yesno" else ("first", "second")
        want = _least_used(labels, counts, rng)
        counts[want] += 1
        a, b = (holder, other) if want in ("yes", "first") else (other, holder)
        key = "choice_position" if form == "choice" and qtype in ROBOT_TYPES and rng.integers(4) == 0 else form
        template = int(rng.integers(len(TEMPLATES[key])))
        question = TEMPLATES[key][template].format(a=a, b=b, rel=rel, more=more)
        if form == "yesno":
            opposite = next(r for w, (r, _, _) in RELATIONS[qtype].items() if w != word)
            reply = int(rng.integers(len(ANSWERS[want])))
            answer = ANSWERS[want][reply].format(a=a, b=b, rel=rel if want == "yes" else opposite)
        else:
            reply = int(rng.integers(len(ANSWERS["choice"])))
            answer = ANSWERS["choice"][reply].format(x=holder, more=more)
        meta = {
            "question_type": qtype,
            "form": form,
            "template": f"{qtype}/{key}/{template}",
            "answer_template": f"{want if form == 'yesno' else 'choice'}/{reply}",
            "objects": [a, b],
            "word": word,
            "answer": want if form == "yesno" else holder,
            "value": round(keys[a] - keys[b], 6),
        }
        return _Turn(question, answer, meta)

    def _quantitative(self, qtype: str, facts: dict[str, dict[str, Any]], rng: np.random.Generator) -> _Turn:
        names = sorted(facts)
        if qtype in SINGLE_OBJECT:
            objects = [names[int(rng.integers(len(names)))]]
        else:
            objects = [names[int(i)] for i in rng.permutation(len(names))[:2]]
        value = quantity(qtype, [facts[n] for n in objects])
        system = self.config.units
        if system == "mixed":
            system = ("metric", "imperial")[int(rng.integers(2))]
        rendered = format_length(value, system)
        template = int(rng.integers(len(TEMPLATES[qtype])))
        reply = int(rng.integers(len(ANSWERS[qtype])))
        a, b = objects[0], objects[-1]
        meta = {
            "question_type": qtype,
            "form": "value",
            "template": f"{qtype}/{template}",
            "answer_template": f"{qtype}/{reply}",
            "objects": objects,
            "value": round(value, 6),
            "system": system,
            "rendered": rendered,
        }
        return _Turn(
            TEMPLATES[qtype][template].format(a=a, b=b), ANSWERS[qtype][reply].format(a=a, b=b, d=rendered), meta
        )

    def _sample(
        self,
        episode: Episode,
        geometry: FrameGeometry,
        facts: dict[str, dict[str, Any]],
        robot: dict[str, Any] | None,
        turns: list[_Turn],
        index: int,
    ) -> Sample:
        image = frame_image(geometry.image, self.image_size)
        messages: list[dict[str, Any]] = []
        for i, turn in enumerate(turns):
            messages += [user_turn(turn.question, n_images=1 if i == 0 else 0), assistant_turn(turn.answer)]
        used = sorted({n for t in turns for n in t.meta["objects"]})
        frame_facts = geometry.facts(objects={n: facts[n] for n in used if n in facts})
        types = [t.meta["question_type"] for t in turns]
        meta: dict[str, Any] = {
            "corpus": self.name,
            "episode_id": episode.episode_id,
            "camera": self.config.camera,
            "frame": int(geometry.step),
            "units": self.config.units,
            "image_size": [image.size[0], image.size[1]],
            "geometry": frame_facts,
            "robot": robot if robot is not None and robot["name"] in used else None,
            "min_separation": self.config.min_separation,
            "min_volume_ratio": self.config.min_volume_ratio,
            "turns": [t.meta for t in turns],
        }
        return Sample(
            key=sample_key(self.name, episode, index),
            messages=messages,
            images=[image],
            task=f"{self.name}/{types[0] if len(set(types)) == 1 else 'mixed'}",
            source=episode.source,
            meta=meta,
        )

    # -- checking -------------------------------------------------------------------------------
    def verify(self, sample: Sample) -> bool:
        """Every turn's answer agrees with the answer recomputed from `meta["geometry"]` and its question text."""
        try:
            meta = sample.meta
            turns = meta["turns"]
            messages = sample.messages
            if not turns or len(messages) != 2 * len(turns) or len(sample.images) != 1:
                return False
            objects = dict(meta["geometry"]["objects"])
            if meta.get("robot"):
                objects[meta["robot"]["name"]] = meta["robot"]
            for i, turn in enumerate(turns):
                user, assistant = messages[2 * i], messages[2 * i + 1]
                images = sum(1 for p in user.get("content", []) if isinstance(p, dict) and p.get("type") == "image")
                if user.get("role") != "user" or assistant.get("role") != "assistant" or images != (i == 0):
                    return False
                if not _check_turn(turn, _message_text(user), _message_text(assistant), objects, meta):
                    return False
            return True
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return False


def _least_used(labels: tuple[str, str], counts: Counter[str], rng: np.random.Generator) -> str:
    """The label used less so far, a draw between them when tied."""
    if counts[labels[0]] != counts[labels[1]]:
        return labels[0] if counts[labels[0]] < counts[labels[1]] else labels[1]
    return labels[int(rng.integers(2))]


def _check_turn(
    turn: dict[str, Any], question: str, answer: str, objects: dict[str, dict[str, Any]], meta: dict[str, Any]
) -> bool:
    """One turn: objects named in the question (in order) and the answer recomputed from their facts."""
    qtype = turn["question_type"]
    names = list(turn["objects"])
    if named_order(question, sorted(set(names))) != list(dict.fromkeys(names)):
        return False
    if qtype in QUANTITATIVE:
        value = quantity(qtype, [objects[n] for n in names])
        parsed, half_step = parse_length_step(answer)
        return abs(parsed - value) <= half_step * (1 + 1e-6) + 1e-9
    a, b = names
    if not separated(qtype, objects[a], objects[b], float(meta["min_separation"]), float(meta["min_volume_ratio"])):
        return False
    word = turn["word"]
    rel, more, high_holds = RELATIONS[qtype][word]
    if rel not in question and more not in question:
        return False
    a_high = comparative_key(qtype, objects[a]) > comparative_key(qtype, objects[b])
    holder = a if a_high == high_holds else b
    if turn["form"] == "yesno":
        reply = re.match(r"\s*(yes|no)\b", answer, re.IGNORECASE)
        return reply is not None and (reply.group(1).lower() == "yes") == (holder == a)
    named = named_order(answer, [a, b])
    return bool(named) and named[0] == holder
