"""`robo2vlm`: Robo2VLM-style multiple-choice questions from any source's trajectories (one-letter answers).

Phases come from the gripper command (actions[:, 6], 1 = open) and end-effector motion (actions[:, :3]).
Question types: gripper_state, holding, direction, task, success, arrow, multiview. Options are
shuffled with the episode's seeded generator; yes/no questions draw a random polarity ("holding?" /
"empty?") so neither answer dominates. Labels are heuristics of the trajectory: "holding" means closed
after a close event and lifted by more than `lift_threshold` since; a closed gripper that has not yet
lifted is never asked about.

Drawn questions: `arrow` draws `arrows` coloured arrows from the end effector's projected pixel (world
position from the state, `datasets_build.geometry.ee_positions`, calibrated main camera), one along the
projected EE displacement over the next `arrow_horizon` steps, the others at least `arrow_separation`
degrees away; options are the colour names. `multiview` (opt-in) marks a visible object point "X" in the main
camera's image (back-projected from its depth), projects it into a second calibrated camera with depth
(the demo's wrist camera), keeps it when that camera's depth agrees within `depth_tolerance`, and draws
lettered candidates there (the true projection and distractors >= `marker_separation` of the image away);
the sample holds both images and the answer is the candidate's letter. Their meta holds the cameras and
points, so `verify` re-projects and re-derives the answer.

Directions: with a calibrated main camera (`direction_frame=auto|camera`) left/right and forward/backward
are image-relative (the camera's right and viewing axes projected on the horizontal plane; up/down is
world z). Without one (or `direction_frame=world`) options name world axes ("along +x"), as the source's
world frame has no agreed left or forward. All wordings live in `DIRECTION_WORDS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datasets_build.camera import CameraModel
from datasets_build.corpora.base import (
    LETTERS,
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    check_choices,
    format_options,
    frame_image,
    message_text,
    parse_options,
    register_corpus,
    sample_key,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.geometry.robot import ee_positions
from datasets_build.sample import Sample, assistant_turn, user_turn

QUESTION_TYPES = ("gripper_state", "holding", "direction", "task", "success", "arrow", "multiview")
# multiview is opt-in (question_types=[...,multiview]): two images per sample and depth checks cost about
# 2 ms a sample, which takes a default build below half the shard writer's rate (benchmarks/bench_corpora.py).
DEFAULT_QUESTION_TYPES = QUESTION_TYPES[:-1]

# Arrow colours: names as they appear in the options, RGB as drawn (distinct hues, saturated).
ARROW_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 170, 40),
    "blue": (30, 80, 235),
    "yellow": (245, 215, 0),
    "magenta": (220, 30, 220),
    "cyan": (0, 200, 215),
}
OUTLINE = (0, 0, 0)
MARKER_COLOUR = (255, 235, 0)

# The one mapping from (axis index, sign) to option words, per direction frame.
DIRECTION_WORDS: dict[str, dict[tuple[int, int], str]] = {
    "world": {
        (0, 1): "along +x",
        (0, -1): "along -x",
        (1, 1): "along +y",
        (1, -1): "along -y",
        (2, 1): "up (+z)",
        (2, -1): "down (-z)",
    },
    "camera": {
        (0, 1): "right",
        (0, -1): "left",
        (1, 1): "forward (away from the camera)",
        (1, -1): "backward (toward the camera)",
        (2, 1): "up",
        (2, -1): "down",
    },
}
DIRECTION_NOTE = {
    "world": "Directions are in the robot's world frame (+z is up).",
    "camera": "Left, right, forward and backward are as seen from this camera.",
}

TEMPLATES: dict[str, list[str]] = {
    "gripper_state": [
        "Is the robot's gripper open or closed in this image?",
        "Look at the robot. What is the state of its gripper?",
        "In this frame, is the gripper open or closed?",
        "What state is the robot's gripper in right now?",
    ],
    "holding": [
        "Is the robot holding an object?",
        "Does the gripper currently have an object grasped?",
        "Is there an object held in the robot's gripper?",
    ],
    "holding_empty": [
        "Is the robot's gripper empty?",
        "Is the robot holding nothing right now?",
        "Is the gripper free of any object?",
    ],
    "direction": [
        "Which direction will the end effector move next?",
        "In the next few steps, which way does the robot's gripper move?",
        "Where is the end effector heading next?",
    ],
    "task": [
        "Which task is the robot doing?",
        "What instruction is the robot following in this episode?",
        "Which of these tasks is being performed?",
    ],
    "success": [
        "Will this attempt succeed?",
        "Is the robot going to complete its task successfully?",
        "Will the robot accomplish the task in this episode?",
    ],
    "arrow": [
        "The coloured arrows start at the robot's gripper. Which arrow shows where the gripper moves next?",
        (
            "Several arrows are drawn from the end effector. Which one points in the direction it will move in "
            "the next few steps?"
        ),
        "Which coloured arrow, drawn from the gripper, matches the robot's next motion in the image?",
        "Look at the arrows starting at the robot's end effector. Which colour shows its upcoming movement?",
    ],
    "multiview": [
        (
            "The first image is from {first}, with a point marked X. The second image is from {second}, with "
            "lettered points. Which lettered point is the same spot in the scene as X?"
        ),
        (
            "Two views of the same moment: {first} (first image, point X) and {second} (second image, lettered "
            "points). Which letter marks the point X shows?"
        ),
        (
            "Point X in the first image ({first}) is seen again in the second image ({second}). Which of the "
            "lettered points there is it?"
        ),
    ],
    "success_fail": [
        "Will this attempt fail?",
        "Is the robot going to fail at its task?",
        "Will the robot fail to accomplish the task in this episode?",
    ],
}

FIXED_TASK_POOL = (
    "close the drawer",
    "fold the towel",
    "open the drawer",
    "pick up the blue cup",
    "push the red block to the left",
    "put the spoon in the bowl",
    "stack the green block on the yellow block",
    "turn on the light",
    "wipe the table with the sponge",
    "move the pot to the stove",
)


@dataclass
class Robo2VLMConfig:
    """Options of the robo2vlm corpus (key=value on the command line)."""

    question_types: list[str] = field(default_factory=lambda: list(DEFAULT_QUESTION_TYPES))
    per_type: int = 2  # questions per type per episode (at most; distinct frames)
    camera: str = ""  # main camera; "" = the episode's first camera
    min_length: int = 4  # shorter episodes are skipped as "too_short"
    horizon: int = 3  # direction: sum of the next `horizon` translation deltas
    min_motion: float = 0.01  # direction: metres along the dominant axis
    dominance: float = 0.6  # direction: second-largest component <= dominance * largest
    direction_frame: str = "auto"  # auto | world | camera
    lift_threshold: float = 0.01  # holding: metres of +z since the close event
    state_gripper_dim: int | None = None  # gripper_state from state[:, dim] (>= 0.5 open) instead of the last action
    distractors: int = 3  # options besides the answer for direction and task questions
    arrows: int = 4  # arrow: arrows drawn (the true one included), 2..6
    arrow_horizon: int = 3  # arrow: EE displacement over this many steps
    arrow_min_pixels: float = 6.0  # arrow: shorter projected displacements (drawn-image pixels) are not asked
    arrow_length: float = 0.2  # arrow: drawn length as a fraction of the image's longer side
    arrow_separation: float = 60.0  # arrow: degrees between any two arrows' directions
    second_camera: str = ""  # multiview: "" = the first other camera with calibration and depth
    markers: int = 4  # multiview: lettered candidates (the true one included), 2..6
    marker_separation: float = 0.1  # multiview: candidates at least this fraction of the image apart
    depth_tolerance: float = 0.015  # multiview: metres between the projected depth and the second depth map
    attempts: int = 24  # multiview: (frame, pixel) draws tried per question


def _segments(gripper: np.ndarray) -> list[list[Any]]:
    """Runs of equal gripper command: [[start, end, "open"|"closed"], ...] (end exclusive)."""
    out: list[list[Any]] = []
    start = 0
    for t in range(1, len(gripper) + 1):
        if t == len(gripper) or gripper[t] != gripper[start]:
            out.append([start, t, "open" if gripper[start] >= 0.5 else "closed"])
            start = t
    return out


def segment_phases(actions: np.ndarray, still: float = 0.002) -> list[dict[str, Any]]:
    """Phases: maximal runs of (gripper command, motion in {up, down, lateral, still}), end exclusive."""
    labels = []
    for a in actions:
        norm = float(np.linalg.norm(a[:3]))
        dz = float(a[2])
        motion = "still" if norm < still else "up" if dz > 0.5 * norm else "down" if dz < -0.5 * norm else "lateral"
        labels.append(("open" if a[6] >= 0.5 else "closed", motion))
    phases: list[dict[str, Any]] = []
    for t, (grip, motion) in enumerate(labels):
        if phases and phases[-1]["gripper"] == grip and phases[-1]["motion"] == motion:
            phases[-1]["end"] = t + 1
        else:
            phases.append({"start": t, "end": t + 1, "gripper": grip, "motion": motion})
    return phases


def close_events(gripper: np.ndarray) -> list[int]:
    """Steps whose command closes a gripper that the previous command left open."""
    return [t for t in range(1, len(gripper)) if gripper[t] < 0.5 <= gripper[t - 1]]


def holding_label(actions: np.ndarray, frame: int, lift_threshold: float) -> dict[str, Any] | None:
    """Facts of "is an object held at `frame`" (frame >= 1), or None when the trajectory cannot tell."""
    gripper = actions[:, 6]
    value = float(gripper[frame - 1])
    if value >= 0.5:
        return {"gripper_value": value, "close_step": None, "lift_since_close": 0.0, "holding": False}
    closes = [c for c in close_events(gripper) if c <= frame - 1]
    if not closes:
        return None
    c = closes[-1]
    lift = float(actions[c:frame, 2].sum())
    if lift <= lift_threshold:
        return None
    return {"gripper_value": value, "close_step": c, "lift_since_close": lift, "holding": True}


def holding_from_facts(facts: dict[str, Any]) -> bool:
    """Re-derive "holding" from recorded facts."""
    return (
        facts["gripper_value"] < 0.5
        and facts["close_step"] is not None
        and facts["lift_since_close"] > facts["lift_threshold"]
    )


def direction_components(delta: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The motion `delta` (world xyz) along the three basis rows."""
    return np.asarray(basis, dtype=np.float64) @ np.asarray(delta, dtype=np.float64)


def direction_word(components: np.ndarray, frame: str) -> str:
    """Option word of the dominant component."""
    axis = int(np.argmax(np.abs(components)))
    return DIRECTION_WORDS[frame][(axis, 1 if components[axis] > 0 else -1)]


def camera_basis(episode: Episode, camera: str, step: int) -> np.ndarray | None:
    """Rows: image-right and away-from-camera on the horizontal plane, then world up; None if degenerate."""
    if camera not in episode.camera:
        return None
    rotation = episode.camera_at(camera, step).extrinsics[:3, :3]  # rows: camera right, down, forward (world)
    right = np.array([rotation[0, 0], rotation[0, 1], 0.0])
    away = np.array([rotation[2, 0], rotation[2, 1], 0.0])
    if np.linalg.norm(away) < 0.2:  # looking straight down: away = image up
        away = -np.array([rotation[1, 0], rotation[1, 1], 0.0])
    if np.linalg.norm(right) < 0.2 or np.linalg.norm(away) < 0.2:
        return None
    return np.stack([right / np.linalg.norm(right), away / np.linalg.norm(away), np.array([0.0, 0.0, 1.0])])


def _instruction_at(episode: Episode, frame: int) -> tuple[str, set[str]]:
    """The instruction at `frame` and every instruction that also holds there (never used as distractors)."""
    covering = [w.instruction for w in episode.language if w.start <= frame < w.end and w.instruction]
    main = covering[0] if covering else episode.instruction
    return main, {s.casefold() for s in [*covering, episode.instruction] if s}


def letters_instruction(n: int) -> str:
    """The answer instruction of questions whose options are letters drawn in the image."""
    letters = list(LETTERS[:n])
    return f"Answer with the letter ({', '.join(letters[:-1])} or {letters[-1]})."


def display_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(height, width) of a frame once `frame_image` has resized it (longer side = `image_size`)."""
    scale = image_size / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _painted(image: Image.Image, paint: Callable[[Image.Image], None]) -> Image.Image:
    """A copy of `image` with `paint` applied (the cached frame stays clean)."""
    out = image.copy()
    paint(out)
    return out


def _to_display(model: CameraModel, scale: list[float], points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points -> drawn-image pixels (x, y) and camera depth."""
    uv, z = model.project(np.asarray(points, dtype=np.float64).reshape(-1, 3))
    return uv * np.asarray(scale, dtype=np.float64), z


def _angle_gap(a: float, b: float) -> float:
    """Absolute difference of two angles in degrees, in [0, 180]."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _inside(point: np.ndarray, width: int, height: int, margin: float) -> bool:
    return bool(margin <= point[0] <= width - margin and margin <= point[1] <= height - margin)


def draw_arrow(
    draw: ImageDraw.ImageDraw,
    start: list[float],
    end: list[float],
    colour: tuple[int, int, int],
    width: int,
    layer: str,
) -> None:
    """One layer ("outline" or "fill") of an arrow: a shaft to the head's base and a triangular head at `end`."""
    sx, sy = start
    ex, ey = end
    length = math.hypot(ex - sx, ey - sy)
    ux, uy = (ex - sx) / length, (ey - sy) / length
    head = min(4.0 * width, 0.4 * length)
    bx, by = ex - head * ux, ey - head * uy
    half = 0.6 * head
    tri = [(ex, ey), (bx - half * uy, by + half * ux), (bx + half * uy, by - half * ux)]
    if layer == "outline":
        draw.line([(sx, sy), (bx, by)], fill=OUTLINE, width=width + 2)
        draw.polygon(tri, fill=OUTLINE, outline=OUTLINE, width=2)
    else:
        draw.line([(sx, sy), (bx, by)], fill=colour, width=width)
        draw.polygon(tri, fill=colour)


@lru_cache(maxsize=8)
def _label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `size` px, loaded once per size (loading costs more than drawing)."""
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=64)
def _label_sprite(label: str, font_size: int) -> Image.Image:
    """`label` in the marker colour with a dark stroke, as an RGBA sprite rendered once and pasted after."""
    font = _label_font(font_size)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.textbbox((0, 0), label, font=font, stroke_width=2)
    sprite = Image.new("RGBA", (math.ceil(right - left), math.ceil(bottom - top)), (0, 0, 0, 0))
    ImageDraw.Draw(sprite).text(
        (-left, -top), label, fill=(*MARKER_COLOUR, 255), font=font, stroke_width=2, stroke_fill=(*OUTLINE, 255)
    )
    return sprite


def draw_marker(image: Image.Image, centre: list[float], label: str, radius: int) -> None:
    """A ring around `centre` with its label beside it (right, or left near the image's edge)."""
    x, y = centre
    box = [x - radius, y - radius, x + radius, y + radius]
    draw = ImageDraw.Draw(image)
    draw.ellipse(box, outline=OUTLINE, width=max(3, radius // 2 + 2))
    draw.ellipse(box, outline=MARKER_COLOUR, width=max(1, radius // 2))
    sprite = _label_sprite(label, max(8, round(max(image.size) / 16)))
    w, h = sprite.size
    tx = x + radius + 1 if x + radius + 1 + w < image.size[0] else x - radius - 1 - w
    ty = min(max(0.0, y - radius - h), image.size[1] - h - 1)
    image.paste(sprite, (round(tx), round(ty)), sprite)


def draw_markers(image: Image.Image, markers: list[tuple[list[float], str]], radius: int) -> None:
    """Every (centre, label) marker of one image."""
    for centre, label in markers:
        draw_marker(image, centre, label, radius)


def arrow_answer(facts: dict[str, Any]) -> str:
    """Colour of the drawn arrow whose direction agrees with the recorded EE displacement (projected)."""
    model = CameraModel.from_dict(facts["camera_model"])
    uv, _ = _to_display(model, facts["scale"], np.array([facts["ee_start"], facts["ee_end"]]))
    true = uv[1] - uv[0]
    if float(np.hypot(*true)) < facts["min_pixels"]:
        raise ValueError("recorded motion too short")
    best, best_cos = "", -2.0
    for arrow in facts["arrows"]:
        d = np.asarray(arrow["end"]) - np.asarray(arrow["start"])
        if float(np.hypot(*(np.asarray(arrow["start"]) - uv[0]))) > 1.5:
            raise ValueError("arrow does not start at the end effector")
        cos = float(d @ true) / (float(np.hypot(*d)) * float(np.hypot(*true)))
        if cos > best_cos:
            best, best_cos = arrow["colour"], cos
    if best_cos < math.cos(math.radians(15.0)):
        raise ValueError("no arrow along the recorded motion")
    return best


def multiview_answer(facts: dict[str, Any]) -> str:
    """Letter of the candidate at the recorded 3D point's projection into the second view (X checked too)."""
    point = np.asarray(facts["point"], dtype=np.float64)
    first = CameraModel.from_dict(facts["cameras"][0])
    second = CameraModel.from_dict(facts["cameras"][1])
    uv1, z1 = _to_display(first, facts["scales"][0], point)
    uv2, z2 = _to_display(second, facts["scales"][1], point)
    if z1[0] <= 0 or z2[0] <= 0 or float(np.hypot(*(uv1[0] - np.asarray(facts["marker"])))) > 1.5:
        raise ValueError("X is not at the point's projection")
    dist = [float(np.hypot(*(uv2[0] - np.asarray(c["pixel"])))) for c in facts["candidates"]]
    nearest = int(np.argmin(dist))
    if dist[nearest] > 1.5:
        raise ValueError("no candidate at the point's projection")
    return str(facts["candidates"][nearest]["letter"])


@register_corpus("robo2vlm")
class Robo2VLMBuilder(CorpusBuilder):
    """Multiple-choice trajectory questions (gripper state, holding, direction, task, success)."""

    config_cls = Robo2VLMConfig

    def __init__(self, config: Robo2VLMConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        check_choices(self.name, "question_types", config.question_types, QUESTION_TYPES)
        if config.direction_frame not in ("auto", "world", "camera"):
            raise ConfigError("corpus robo2vlm options: direction_frame: must be auto, world or camera")
        if config.per_type < 1 or config.horizon < 1 or config.min_length < 2:
            raise ConfigError("corpus robo2vlm options: per_type and horizon must be >= 1, min_length >= 2")
        if not 1 <= config.distractors <= 5:
            raise ConfigError("corpus robo2vlm options: distractors must be in [1, 5]")
        if not (2 <= config.arrows <= len(ARROW_COLOURS) and 2 <= config.markers <= 6):
            raise ConfigError(
                f"corpus robo2vlm options: arrows must be in [2, {len(ARROW_COLOURS)}], markers in [2, 6]"
            )
        if config.arrows * config.arrow_separation > 360.0 or config.arrow_separation <= 0:
            raise ConfigError("corpus robo2vlm options: arrows * arrow_separation must be in (0, 360] degrees")
        if config.arrow_horizon < 1 or config.attempts < 1 or not 0 < config.arrow_length < 0.5:
            raise ConfigError("corpus robo2vlm options: arrow_horizon, attempts >= 1 and arrow_length in (0, 0.5)")

    # -- building -------------------------------------------------------------------------------
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Questions about one episode; skip reasons name the type and why ("holding:no_gripper_change")."""
        cfg = self.config
        result = EpisodeResult()
        if len(episode) < cfg.min_length:
            result.skipped.append("too_short")
            return result
        camera = cfg.camera or (episode.cameras[0] if episode.cameras else "")
        if camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        rng = context.rng
        images: dict[tuple[str, int], Image.Image] = {}

        def image_of(name: str, frame: int) -> Image.Image:
            if (name, frame) not in images:
                images[name, frame] = frame_image(episode.frames[name][frame], self.image_size)
            return images[name, frame]

        for qtype in cfg.question_types:
            used: set[int] = set()
            for _ in range(cfg.per_type):
                question = getattr(self, f"_{qtype}")(episode, rng, context, used)
                if isinstance(question, str):
                    if not used:
                        result.skipped.append(f"{qtype}:{question}")
                    break
                if question is None:
                    break
                frame = int(question["frame"])
                used.add(frame)
                drawn = [_painted(image_of(name, frame), paint) for name, paint in question.get("paint", [])]
                result.samples.append(
                    self._sample(
                        episode, qtype, question, camera, drawn or [image_of(camera, frame)], rng, len(result.samples)
                    )
                )
        return result

    def _sample(
        self,
        episode: Episode,
        qtype: str,
        q: dict[str, Any],
        camera: str,
        images: list[Image.Image],
        rng: np.random.Generator,
        index: int,
    ) -> Sample:
        options: list[str] = list(q["options"])
        if "correct_index" in q:  # options already in their final order (letters drawn in the image)
            shuffled, correct = options, int(q["correct_index"])
        else:
            order = rng.permutation(len(options))
            shuffled = [options[i] for i in order]
            correct = int(np.flatnonzero(order == 0)[0])  # options[0] is always the answer before shuffling
        family = q.get("template_family", qtype)
        template = int(rng.integers(len(TEMPLATES[family])))
        wording = TEMPLATES[family][template].format(**q.get("fill", {}))
        parts = [q.get("prefix", ""), wording, q.get("suffix", "")]
        if "correct_index" in q:
            text = " ".join(p for p in parts if p) + "\n" + letters_instruction(len(options))
        else:
            text = (
                " ".join(p for p in parts if p) + "\n" + format_options(shuffled) + "\nAnswer with the option's letter."
            )
        meta = {
            "corpus": self.name,
            "question_type": qtype,
            "template": f"{family}/{template}",
            "options": shuffled,
            "correct_index": correct,
            "answer": LETTERS[correct],
            "frame": int(q["frame"]),
            "camera": camera,
            "episode_id": episode.episode_id,
            "facts": q["facts"],
        }
        return Sample(
            key=sample_key(self.name, episode, index),
            messages=[user_turn(text, n_images=len(images)), assistant_turn(LETTERS[correct])],
            images=images,
            task=f"{self.name}/{qtype}",
            source=episode.source,
            meta=meta,
        )

    def _gripper_value(self, episode: Episode, frame: int) -> tuple[float, str, int]:
        dim = self.config.state_gripper_dim
        if dim is not None and episode.state is not None:
            return float(episode.state[frame, dim]), "state", frame
        return float(episode.actions[frame - 1, 6]), "previous_action", frame - 1

    @staticmethod
    def _pick_balanced(
        classes: dict[Any, list[int]], rng: np.random.Generator, used: set[int]
    ) -> tuple[Any, int] | None:
        """A class uniformly among those with unused frames, then a frame of it."""
        live = {k: [f for f in v if f not in used] for k, v in classes.items()}
        keys = [k for k in classes if live[k]]
        if not keys:
            return None
        key = keys[int(rng.integers(len(keys)))]
        return key, int(rng.choice(live[key]))

    def _gripper_state(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        start = 0 if self.config.state_gripper_dim is not None and episode.state is not None else 1
        classes: dict[str, list[int]] = {"open": [], "closed": []}
        for t in range(start, len(episode)):
            classes["open" if self._gripper_value(episode, t)[0] >= 0.5 else "closed"].append(t)
        picked = self._pick_balanced(classes, rng, used)
        if picked is None:
            return "no_frames" if not used else None
        word, frame = picked
        value, basis, step = self._gripper_value(episode, frame)
        facts = {
            "gripper_value": value,
            "basis": basis,
            "value_step": step,
            "segments": _segments(episode.actions[:, 6]),
        }
        return {"frame": frame, "options": [word, "closed" if word == "open" else "open"], "facts": facts}

    def _holding(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        actions = episode.actions
        if len(np.unique(actions[:, 6])) == 1:
            return "no_gripper_change"
        classes: dict[bool, list[int]] = {True: [], False: []}
        labels: dict[int, dict[str, Any]] = {}
        for t in range(1, len(episode)):
            label = holding_label(actions, t, self.config.lift_threshold)
            if label is not None:
                labels[t] = label
                classes[label["holding"]].append(t)
        picked = self._pick_balanced(classes, rng, used)
        if picked is None:
            return "ambiguous" if not used else None
        holding, frame = picked
        empty = bool(rng.integers(2))
        yes = holding != empty
        facts = dict(labels[frame])
        facts.update(
            lift_threshold=self.config.lift_threshold,
            polarity="empty" if empty else "holding",
            phases=segment_phases(actions),
        )
        return {
            "frame": frame,
            "options": ["yes", "no"] if yes else ["no", "yes"],
            "facts": facts,
            "template_family": "holding_empty" if empty else "holding",
        }

    def _direction(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        cfg = self.config
        camera = cfg.camera or (episode.cameras[0] if episode.cameras else "")
        candidates: list[tuple[int, str, np.ndarray, np.ndarray]] = []
        moving = camera in episode.camera_extrinsics
        fixed = None if cfg.direction_frame == "world" or moving else camera_basis(episode, camera, 0)
        for t in range(len(episode) - cfg.horizon + 1):
            if t in used:
                continue
            basis = camera_basis(episode, camera, t) if moving and cfg.direction_frame != "world" else fixed
            if basis is None and cfg.direction_frame == "camera":
                return "no_camera" if not used else None
            frame_kind = "world" if basis is None else "camera"
            basis = np.eye(3) if basis is None else basis
            delta = episode.actions[t : t + cfg.horizon, :3].astype(np.float64).sum(axis=0)
            comps = np.abs(direction_components(delta, basis))
            order = np.sort(comps)
            if order[-1] >= cfg.min_motion and order[-2] <= cfg.dominance * order[-1]:
                candidates.append((t, frame_kind, delta, basis))
        if not candidates:
            return "no_clear_motion" if not used else None
        frame, kind, delta, basis = candidates[int(rng.integers(len(candidates)))]
        comps = direction_components(delta, basis)
        answer = direction_word(comps, kind)
        axis = int(np.argmax(np.abs(comps)))
        opposite = DIRECTION_WORDS[kind][(axis, -1 if comps[axis] > 0 else 1)]
        others = sorted(w for w in DIRECTION_WORDS[kind].values() if w not in (answer, opposite))
        picks = [others[i] for i in rng.permutation(len(others))[: cfg.distractors - 1]]
        facts = {
            "delta": [float(v) for v in delta],
            "horizon": cfg.horizon,
            "direction_frame": kind,
            "basis": [[float(v) for v in row] for row in basis],
            "components": [float(v) for v in comps],
            "phases": segment_phases(episode.actions),
        }
        return {
            "frame": frame,
            "options": [answer, opposite, *picks][: cfg.distractors + 1],
            "facts": facts,
            "suffix": DIRECTION_NOTE[kind],
        }

    def _task(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        frames = [t for t in range(len(episode)) if t not in used and _instruction_at(episode, t)[0]]
        if not frames:
            return "no_instruction" if not used else None
        frame = int(rng.choice(frames))
        answer, excluded = _instruction_at(episode, frame)
        n = self.config.distractors
        seen = sorted({s for s in context.seen_instructions if s.casefold() not in excluded})
        picks = [seen[i] for i in rng.permutation(len(seen))[:n]]
        if len(picks) < n:
            pool = sorted(s for s in FIXED_TASK_POOL if s.casefold() not in excluded | {p.casefold() for p in picks})
            picks += [pool[i] for i in rng.permutation(len(pool))[: n - len(picks)]]
        facts = {"instruction": answer, "distractors_from_stream": sum(p in seen for p in picks)}
        return {"frame": frame, "options": [answer, *picks], "facts": facts}

    def _success(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        if episode.success is None:
            return "unknown_outcome"
        frames = [t for t in range(len(episode)) if t not in used]
        if not frames:
            return None
        frame = int(rng.choice(frames))
        fail = bool(rng.integers(2))
        yes = bool(episode.success) != fail
        instruction = _instruction_at(episode, frame)[0]
        return {
            "frame": frame,
            "options": ["yes", "no"] if yes else ["no", "yes"],
            "facts": {"success": bool(episode.success), "polarity": "fail" if fail else "succeed"},
            "template_family": "success_fail" if fail else "success",
            "prefix": f'The robot was asked to "{instruction}".' if instruction else "",
        }

    def _arrow(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        cfg = self.config
        camera = cfg.camera or episode.cameras[0]
        ee = ee_positions(episode)
        if ee is None:
            return "no_ee" if not used else None
        if camera not in episode.camera:
            return "no_camera" if not used else None
        h, w = episode.frames[camera].shape[1:3]
        dh, dw = display_size(h, w, self.image_size)
        scale = [dw / w, dh / h]
        length = cfg.arrow_length * max(dw, dh)
        margin = 2.0
        k = cfg.arrow_horizon
        steps = np.array([t for t in range(len(episode) - k) if t not in used], dtype=np.int64)
        if not len(steps):
            return None if used else "motion_too_short"
        if camera in episode.camera_extrinsics:  # a moving camera: each frame's own pose
            pairs = [_to_display(episode.camera_at(camera, int(t)), scale, ee[[t, t + k]]) for t in steps]
            uv = np.stack([p[0] for p in pairs], axis=1)  # (2, n, 2): start and end pixels per step
            z = np.stack([p[1] for p in pairs], axis=1)
        else:  # a static camera: every position in one projection
            uv_all, z_all = _to_display(episode.camera[camera], scale, ee)
            uv, z = np.stack([uv_all[steps], uv_all[steps + k]]), np.stack([z_all[steps], z_all[steps + k]])
        visible = (z[0] > 0) & np.all((uv[0] >= margin) & (uv[0] <= np.array([dw, dh]) - margin), axis=1)
        motion = uv[1] - uv[0]
        moving = (z[1] > 0) & (np.hypot(motion[:, 0], motion[:, 1]) >= cfg.arrow_min_pixels)
        keep = np.flatnonzero(visible & moving)
        if not len(keep):
            outside, short = int(np.count_nonzero(~visible)), int(np.count_nonzero(visible & ~moving))
            return None if used else ("ee_outside_image" if outside > short else "motion_too_short")
        angles_deg = np.degrees(np.arctan2(motion[keep, 1], motion[keep, 0]))
        candidates = [(int(steps[i]), uv[0, i], float(a)) for i, a in zip(keep, angles_deg, strict=True)]
        for i in rng.permutation(len(candidates)).tolist():
            t, start, angle = candidates[i]
            angles = self._arrow_angles(start, angle, length, dw, dh, rng)
            if angles is not None:
                break
        else:
            return "no_room_for_arrows" if not used else None
        colours = [list(ARROW_COLOURS)[j] for j in rng.permutation(len(ARROW_COLOURS))[: cfg.arrows]]
        arrows = [
            {
                "colour": colour,
                "start": [round(float(start[0]), 2), round(float(start[1]), 2)],
                "end": [
                    round(float(start[0]) + length * math.cos(math.radians(a)), 2),
                    round(float(start[1]) + length * math.sin(math.radians(a)), 2),
                ],
                "true": k == 0,
            }
            for k, (colour, a) in enumerate(zip(colours, angles, strict=True))
        ]
        drawing_order = [arrows[j] for j in rng.permutation(len(arrows))]  # the true arrow is not always on top
        width = max(2, round(max(dw, dh) / 75))

        def paint(image: Image.Image) -> None:
            draw = ImageDraw.Draw(image)
            for layer in ("outline", "fill"):
                for arrow in drawing_order:
                    draw_arrow(draw, arrow["start"], arrow["end"], ARROW_COLOURS[arrow["colour"]], width, layer)

        facts = {
            "ee_start": [float(v) for v in ee[t]],
            "ee_end": [float(v) for v in ee[t + cfg.arrow_horizon]],
            "horizon": cfg.arrow_horizon,
            "camera_model": episode.camera_at(camera, t).to_dict(),
            "scale": scale,
            "min_pixels": cfg.arrow_min_pixels,
            "arrows": arrows,
            "true_angle_deg": round(angles[0], 3),
            "line_width": width,
        }
        return {"frame": t, "options": colours, "facts": facts, "paint": [(camera, paint)]}

    def _arrow_angles(
        self, start: np.ndarray, true_angle: float, length: float, width: int, height: int, rng: np.random.Generator
    ) -> list[float] | None:
        """The true angle then distractor angles (degrees, image axes) whose arrows fit, or None."""
        cfg = self.config
        head_room = 3.0

        def fits(angle: float) -> bool:
            end = start + length * np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))])
            return _inside(end, width, height, head_room)

        if not fits(true_angle):
            return None
        chosen = [true_angle]
        for step in rng.permutation(36).tolist():  # 10-degree grid around the true direction
            angle = true_angle + 10.0 * step
            if all(_angle_gap(angle, a) >= cfg.arrow_separation for a in chosen) and fits(angle):
                chosen.append((angle + 180.0) % 360.0 - 180.0)
                if len(chosen) == cfg.arrows:
                    return chosen
        return None

    def _second_camera(self, episode: Episode, first: str) -> str | None:
        """The multiview partner of `first`: the configured one, else the first other calibrated camera."""
        if self.config.second_camera:
            return self.config.second_camera if self.config.second_camera in episode.camera else None
        others = [c for c in episode.cameras if c != first and c in episode.camera]
        with_depth = [c for c in others if c in episode.depth]
        pool = with_depth or others
        return pool[0] if pool else None

    def _multiview(
        self, episode: Episode, rng: np.random.Generator, context: EpisodeContext, used: set[int]
    ) -> dict[str, Any] | str | None:
        cfg = self.config
        first = cfg.camera or episode.cameras[0]
        second = self._second_camera(episode, first)
        if first not in episode.camera or second is None:
            return "single_camera" if not used else None
        if first not in episode.depth or second not in episode.depth:
            return "no_depth" if not used else None
        frames = [t for t in range(len(episode)) if t not in used]
        if not frames:
            return None
        (h1, w1), (h2, w2) = episode.depth[first].shape[1:], episode.depth[second].shape[1:]
        d1, d2 = display_size(h1, w1, self.image_size), display_size(h2, w2, self.image_size)
        scales = [[d1[1] / w1, d1[0] / h1], [d2[1] / w2, d2[0] / h2]]
        radius = max(3, round(self.image_size / 40))
        seg = episode.segmentation.get(first)
        ids = [o.segmentation_id for o in episode.objects.values() if o.segmentation_id is not None]
        on_object = None  # lookup table: segmentation value + 1 -> is an object's (index 0: negative values)
        if seg is not None and ids and seg.shape[1:] == (h1, w1) and min(ids) >= 0:
            on_object = np.zeros(max(ids) + 3, dtype=bool)  # the last entry stands for values above every id
            on_object[np.asarray(ids) + 1] = True
        for _ in range(cfg.attempts):
            t = frames[int(rng.integers(len(frames)))]
            depth1 = episode.depth[first][t]
            surface = np.isfinite(depth1) & (depth1 > 0)
            if on_object is not None and seg is not None:
                surface &= on_object[np.clip(seg[t], -1, len(on_object) - 2) + 1]
            pixels = np.flatnonzero(surface)
            if not len(pixels):
                continue
            v, u = divmod(int(pixels[int(rng.integers(len(pixels)))]), w1)
            cam1, cam2 = episode.camera_at(first, t), episode.camera_at(second, t)
            point = cam1.unproject(depth1, np.array([[u + 0.5, v + 0.5]]))[0]
            uv1, _ = _to_display(cam1, scales[0], point)
            uv2, z2 = _to_display(cam2, scales[1], point)
            if z2[0] <= 0 or not _inside(uv2[0], d2[1], d2[0], radius + 1) or not _inside(uv1[0], d1[1], d1[0], 1):
                continue
            raw = uv2[0] / np.asarray(scales[1])
            seen = float(episode.depth[second][t][int(raw[1]), int(raw[0])])
            if not abs(seen - float(z2[0])) <= cfg.depth_tolerance:
                continue
            spots = self._distractor_spots(uv2[0], d2, radius, rng)
            if spots is None:
                continue
            order = rng.permutation(cfg.markers)  # candidate k gets letter order[k]; candidate 0 is the true one
            spots_px = [[round(float(x), 2) for x in spot] for spot in [uv2[0], *spots]]
            labelled = sorted(((spots_px[k], LETTERS[int(order[k])]) for k in range(cfg.markers)), key=lambda i: i[1])
            candidates = [{"letter": letter, "pixel": px, "true": px == spots_px[0]} for px, letter in labelled]
            marker = [round(float(x), 2) for x in uv1[0]]
            facts = {
                "point": [float(x) for x in point],
                "cameras": [cam1.to_dict(), cam2.to_dict()],
                "camera_names": [first, second],
                "scales": scales,
                "pixel_first": [float(u + 0.5), float(v + 0.5)],
                "pixel_second": [float(x) for x in raw],
                "depth_first": float(depth1[v, u]),
                "depth_second_projected": float(z2[0]),
                "depth_second_map": seen,
                "marker": marker,
                "candidates": candidates,
            }
            return {
                "frame": t,
                "options": [letter for _, letter in labelled],
                "correct_index": int(order[0]),
                "facts": facts,
                "fill": {"first": f"the {first} camera", "second": f"the {second} camera"},
                "paint": [
                    (first, partial(draw_markers, markers=[(marker, "X")], radius=radius)),
                    (second, partial(draw_markers, markers=labelled, radius=radius)),
                ],
            }
        return "not_visible_in_second_view" if not used else None

    def _distractor_spots(
        self, true: np.ndarray, size: tuple[int, int], radius: int, rng: np.random.Generator
    ) -> list[np.ndarray] | None:
        """Pixels for the wrong candidates, inside the image and `marker_separation` apart from all others."""
        cfg = self.config
        height, width = size
        gap = cfg.marker_separation * max(width, height)
        spots: list[np.ndarray] = []
        low, high = radius + 1.0, np.array([width - radius - 1.0, height - radius - 1.0])
        for _ in range(64):
            spot = low + rng.random(2) * (high - low)
            if all(float(np.hypot(*(spot - other))) >= gap for other in [true, *spots]):
                spots.append(spot)
                if len(spots) == cfg.markers - 1:
                    return spots
        return None

    # -- checking -------------------------------------------------------------------------------
    def expected_answer(self, meta: dict[str, Any]) -> str:
        """The correct option's text, re-derived from `meta["facts"]`."""
        qtype = meta["question_type"]
        facts = meta.get("facts", {})
        if qtype == "gripper_state":
            return "open" if facts["gripper_value"] >= 0.5 else "closed"
        if qtype == "holding":
            holding = holding_from_facts(facts)
            return "yes" if holding != (facts["polarity"] == "empty") else "no"
        if qtype == "direction":
            comps = direction_components(np.asarray(facts["delta"]), np.asarray(facts["basis"]))
            return direction_word(comps, facts["direction_frame"])
        if qtype == "task":
            return str(facts["instruction"])
        if qtype == "success":
            return "yes" if bool(facts["success"]) != (facts["polarity"] == "fail") else "no"
        if qtype == "arrow":
            return arrow_answer(facts)
        if qtype == "multiview":
            return multiview_answer(facts)
        if qtype == "imported":  # Robo2VLM-1 rows carry no facts: only letter/options consistency is checked
            return str(meta["options"][meta["correct_index"]])
        raise KeyError(qtype)

    def verify(self, sample: Sample) -> bool:
        """Answer letter, options in the question text and the facts all agree."""
        try:
            meta = sample.meta
            options = list(meta["options"])
            correct = int(meta["correct_index"])
            question = message_text(sample, "user")
            listed = (
                letters_instruction(len(options)) in question and options == list(LETTERS[: len(options)])
                if meta["question_type"] == "multiview"
                else parse_options(question) == options
            )
            return (
                listed
                and message_text(sample, "assistant").strip() == LETTERS[correct]
                and options[correct] == self.expected_answer(meta)
                and options.count(options[correct]) == 1
            )
        except (KeyError, IndexError, TypeError, ValueError):
            return False
