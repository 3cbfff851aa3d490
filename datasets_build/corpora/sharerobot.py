"""`sharerobot`: ShareRobot/RoboBrain-style affordance, trajectory, planning and outcome questions.

Answer formats follow RoboBrain 1.0's: an affordance is one box `[x1, y1, x2, y2]` and a trajectory a list of
points, both normalised to [0, 1] by the image width and height with 3 decimals (points use robopoint's
`format_points`, "[(x, y), ...]"). All geometry is ground truth: end-effector (EE) world positions from the
state (`datasets_build.geometry.ee_positions`), object poses and sizes, and the calibrated camera `camera`.

- `affordance`: "where should the gripper grasp the <object>". A grasp is a close event of the gripper command
  (actions[:, 6] goes from >= 0.5 to < 0.5 at step c) after which the EE rises by more than `lift_threshold`
  before the gripper opens again; the grasped object is the one whose box is nearest the EE at step c (at most
  `grasp_tolerance` away). The grasp region is that object's box clipped to a cube of side `grasp_extent`
  around the grasp point (the EE at c), in the object's frame. Its 8 corners (pose at c) are projected into
  the image of the last frame before the approach (the EE at least `approach_distance` from the grasp point,
  the object not yet moved); the answer is their pixel bounding box clipped to the image.
- `trajectory`: from frame t, the EE positions at `num_points` evenly spaced steps from t to the next gripper
  change (or the last step), projected into frame t's image. Points behind the camera or outside the image
  make the frame unusable: the question is skipped and the reason counted, never clipped.
- `next_step` / `remaining_steps`: a step list per episode (see `plan_steps`); at a frame inside step k the
  answer is step k + 1's text, or the numbered list of steps k + 1, k + 2, ... ("1. ...\\n2. ...").
- `success`: yes/no "will the robot succeed" from `episode.success`, with a random polarity ("succeed" /
  "fail") so that neither answer dominates.
- `future`: "what will the robot do next" as multiple choice among step texts (options shuffled).

Step lists (`plan_steps`): episodes with two or more language windows (CALVIN segments) use the window
instructions in order (a greedy chain of non-overlapping windows). Otherwise they are derived from the gripper
command, the EE and object poses: before a grasp "move to the O"; from the close to the lift "grasp the O";
while rising "lift the O"; then "move the O to the R" until the gripper opens (R = the object nearest the held
object at the release, within `reference_radius`, horizontally); then "release the O". A gripper change with
no object in the fingers gives "move above the X" / "close the gripper" (or "open the gripper"). Episodes
without gripper changes whose object moved (pushing) give "move to the O" until it starts moving, then
"push the O". `verify` checks answers against the step list recorded in `meta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from datasets_build.answers import format_box, format_points, parse_tuples
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
from datasets_build.episode import Episode, ObjectInfo
from datasets_build.errors import ConfigError
from datasets_build.geometry import ee_positions
from datasets_build.sample import Sample, assistant_turn, user_turn

QUESTION_TYPES = ("affordance", "trajectory", "next_step", "remaining_steps", "success", "future")

TEMPLATES: dict[str, list[str]] = {
    "affordance": [
        "Where should the gripper grasp the {object}?",
        "Which area of the image should the robot's gripper take hold of to pick up the {object}?",
        "You are a robot arm. Predict the affordance area for grasping the {object}.",
        "Mark the region where the end effector should grasp the {object}.",
    ],
    "trajectory": [
        "Predict the gripper's path as {n} points, from now until its next open/close command or the episode's end.",
        "Where will the end effector move next? Give {n} points of its path, up to the next gripper action.",
        "Trace the upcoming end-effector trajectory with {n} points, ending when the gripper next changes.",
    ],
    "next_step": [
        'The robot is currently doing: "{current}". What is the next step?',
        'After "{current}", what should the robot do next?',
        'The current step is "{current}". Which step comes next?',
    ],
    "remaining_steps": [
        'The robot is currently doing: "{current}". List the steps that remain after this one, in order.',
        'After finishing "{current}", which steps are left? Give them as a numbered list.',
        'The current step is "{current}". What are the remaining steps of the plan?',
    ],
    "success": [
        "Will this attempt succeed?",
        "Is the robot going to complete its task successfully?",
        "Will the robot accomplish the task in this episode?",
    ],
    "success_fail": [
        "Will this attempt fail?",
        "Is the robot going to fail at its task?",
        "Will the robot fail to accomplish the task in this episode?",
    ],
    "future": [
        "What will the robot do next?",
        "Which of these happens next?",
        "Looking at the scene, what is the robot's next step?",
    ],
}
BOX_NOTE = (
    "Answer with a box [x1, y1, x2, y2]: the left, top, right and bottom edges normalised to [0, 1] by the "
    "image width and height."
)
POINTS_NOTE = (
    "Answer with a list of points [(x1, y1), (x2, y2), ...], where x and y are the column and row of each point "
    "normalised to [0, 1] by the image width and height."
)
FIXED_STEP_POOL = (
    "open the drawer",
    "close the drawer",
    "turn on the light",
    "push the button",
    "rotate the knob",
    "wipe the table",
    "move the arm back to its start position",
    "pour into the cup",
)


@dataclass
class ShareRobotConfig:
    """Options of the sharerobot corpus (key=value on the command line)."""

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    per_type: int = 2  # questions per type per episode (at most; distinct frames or grasps)
    camera: str = "static"  # calibrated camera whose images are asked about
    num_points: int = 5  # trajectory points per answer (>= 3)
    min_path: float = 0.02  # trajectory: metres the EE must travel over the answered steps
    attempts: int = 8  # trajectory: frames tried per question before giving up
    lift_threshold: float = 0.01  # metres the EE rises after a close for it to count as a grasp
    grasp_tolerance: float = 0.03  # metres between the EE and the grasped object's box at the close
    grasp_extent: float = 0.08  # side (m) of the cube around the grasp point that bounds the grasp region
    approach_distance: float = 0.1  # affordance image: the EE at least this far from the grasp point
    moved_tolerance: float = 0.005  # metres an object may move and still count as "not moved"
    reference_radius: float = 0.15  # planning: horizontal metres within which an object names a destination
    distractors: int = 3  # future: options besides the answer


# -- geometry helpers ---------------------------------------------------------------------------------


def _rotation(obj: ObjectInfo, step: int) -> np.ndarray:
    """The object's rotation matrix (object -> world) at `step`; identity without orientations."""
    if obj.orientations is None:
        return np.eye(3)
    quat = obj.orientations[min(step, len(obj.orientations) - 1)].astype(np.float64)
    return np.asarray(Rotation.from_quat(quat).as_matrix())


def box_distance(point: np.ndarray, obj: ObjectInfo, step: int) -> float:
    """Metres from a world point to the object's box at `step` (0 inside); its centre without a size."""
    local = _rotation(obj, step).T @ (np.asarray(point, dtype=np.float64) - obj.position_at(step))
    half = np.zeros(3) if obj.size is None else obj.size.astype(np.float64) / 2.0
    return float(np.linalg.norm(np.maximum(np.abs(local) - half, 0.0)))


def grasp_region_corners(obj: ObjectInfo, step: int, grasp_point: np.ndarray, extent: float) -> np.ndarray:
    """(8, 3) world corners of the object's box at `step` clipped to a cube of side `extent` around the point."""
    assert obj.size is not None
    rotation = _rotation(obj, step)
    centre = obj.position_at(step).astype(np.float64)
    local = rotation.T @ (np.asarray(grasp_point, dtype=np.float64) - centre)
    half = obj.size.astype(np.float64) / 2.0
    lo = np.maximum(-half, local - extent / 2.0)
    hi = np.minimum(half, local + extent / 2.0)
    hi = np.maximum(hi, lo)  # a point off the box degenerates to the nearest face, never an inverted box
    corners = np.array(
        [[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    )
    return corners @ rotation.T + centre


def project_box(camera: dict[str, Any], corners: list[list[float]], size: list[int]) -> list[float] | None:
    """Normalised [x1, y1, x2, y2] of projected world corners clipped to the image; None if behind or outside."""
    model = CameraModel.from_dict(camera)
    uv, depth = model.project(np.asarray(corners, dtype=np.float64))
    if not np.all(depth > 0):
        return None
    h, w = int(size[0]), int(size[1])
    x1, x2 = max(0.0, float(uv[:, 0].min())), min(float(w), float(uv[:, 0].max()))
    y1, y2 = max(0.0, float(uv[:, 1].min())), min(float(h), float(uv[:, 1].max()))
    if x1 >= x2 or y1 >= y2:
        return None
    return [x1 / w, y1 / h, x2 / w, y2 / h]


def project_points(camera: dict[str, Any], points: list[list[float]], size: list[int]) -> list[tuple[float, float]]:
    """Normalised (x, y) of world points; ValueError naming why when one is behind the camera or off the image."""
    model = CameraModel.from_dict(camera)
    uv, depth = model.project(np.asarray(points, dtype=np.float64))
    h, w = int(size[0]), int(size[1])
    if not np.all(depth > 0):
        raise ValueError("behind_camera")
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    if not np.all(inside):
        raise ValueError("outside_image")
    return [(float(u) / w, float(v) / h) for u, v in uv]


def rounded_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points rounded to the 3 decimals of the answer text, kept inside [0, 1]."""
    return [(min(1.0, max(0.0, round(x, 3))), min(1.0, max(0.0, round(y, 3)))) for x, y in points]


def format_steps(texts: list[str]) -> str:
    """A numbered step list: "1. first\\n2. second"."""
    return "\n".join(f"{i + 1}. {text}" for i, text in enumerate(texts))


# -- gripper events and plans -------------------------------------------------------------------------


def gripper_changes(gripper: np.ndarray) -> list[int]:
    """Steps whose command (open = >= 0.5) differs from the previous step's."""
    is_open = np.asarray(gripper) >= 0.5
    return [t for t in range(1, len(is_open)) if is_open[t] != is_open[t - 1]]


def nearest_object(
    episode: Episode, point: np.ndarray, step: int, tolerance: float, exclude: str = ""
) -> tuple[str, float] | None:
    """The object whose box is nearest a world point at `step` (within `tolerance`), with its distance."""
    found = sorted((box_distance(point, obj, step), name) for name, obj in episode.objects.items() if name != exclude)
    if not found or found[0][0] > tolerance:
        return None
    return found[0][1], found[0][0]


def nearest_horizontal(episode: Episode, point: np.ndarray, step: int, radius: float, exclude: str = "") -> str | None:
    """The object whose centre is horizontally nearest a world point at `step`, within `radius`."""
    found = sorted(
        (float(np.linalg.norm(obj.position_at(step)[:2] - np.asarray(point)[:2])), name)
        for name, obj in episode.objects.items()
        if name != exclude
    )
    return found[0][1] if found and found[0][0] <= radius else None


@dataclass(frozen=True)
class Grasp:
    """A close event that grasped and lifted an object."""

    close: int  # step whose command closed the gripper
    obj: str
    distance: float  # EE to the object's box at the close (m)
    lift: int  # first step whose EE is more than lift_threshold above the EE at the close
    release: int  # step whose command opens the gripper again (len(episode) if never)


def find_grasps(episode: Episode, ee: np.ndarray, cfg: ShareRobotConfig) -> tuple[list[Grasp], list[str]]:
    """Grasps of an episode and, for close events that are not grasps, why ("no_lift", "no_object_in_gripper")."""
    gripper = episode.actions[:, 6]
    changes = gripper_changes(gripper)
    grasps: list[Grasp] = []
    why: list[str] = []
    for c in changes:
        if gripper[c] >= 0.5:
            continue
        release = next((t for t in changes if t > c), len(episode))
        rise = ee[c:release, 2] - ee[c, 2]
        lifted = np.flatnonzero(rise > cfg.lift_threshold)
        if not len(lifted):
            why.append("no_lift")
            continue
        near = nearest_object(episode, ee[c], c, cfg.grasp_tolerance)
        if near is None:
            why.append("no_object_in_gripper")
            continue
        grasps.append(Grasp(c, near[0], near[1], c + int(lifted[0]), release))
    return grasps, why


def plan_from_windows(episode: Episode) -> list[dict[str, Any]] | None:
    """Steps from the language windows: a greedy chain of non-overlapping windows in start order (>= 2)."""
    chain: list[dict[str, Any]] = []
    for window in sorted(episode.language, key=lambda w: (w.start, w.end)):
        if not window.instruction or (chain and window.start < chain[-1]["end"]):
            continue
        chain.append({"start": window.start, "end": window.end, "text": window.instruction})
    return chain if len(chain) >= 2 else None


def _stop_rising(ee: np.ndarray, start: int, end: int, rate: float) -> int:
    """First step in [start, end) after which the EE rises by less than `rate` per step (else `end`)."""
    for t in range(start, end - 1):
        if ee[t + 1, 2] - ee[t, 2] < rate:
            return t + 1
    return end


def plan_from_gripper(episode: Episode, ee: np.ndarray, cfg: ShareRobotConfig) -> list[dict[str, Any]] | None:
    """Steps derived from gripper changes, EE and object poses (rules in the module docstring); None if unnamed."""
    length = len(episode)
    gripper = episode.actions[:, 6]
    changes = gripper_changes(gripper)
    steps: list[tuple[int, int, str]] = []
    if not changes:
        moved = _first_moving(episode, cfg)
        if moved is None:
            return None
        name, start = moved
        steps = [(0, start, f"move to the {name}"), (start, length, f"push the {name}")]
    cursor, held = 0, ""
    for i, c in enumerate(changes):
        seg_end = changes[i + 1] if i + 1 < len(changes) else length
        closing = gripper[c] < 0.5
        if closing:
            near = nearest_object(episode, ee[c], c, cfg.grasp_tolerance)
            rise = np.flatnonzero(ee[c:seg_end, 2] - ee[c, 2] > cfg.lift_threshold)
            if near is not None:
                name = near[0]
                steps.append((cursor, c, f"move to the {name}"))
                if not len(rise):
                    steps.append((c, seg_end, f"grasp the {name}"))
                    cursor = seg_end
                    continue
                lift = c + int(rise[0])
                steps.append((c, lift, f"grasp the {name}"))
                top = _stop_rising(ee, lift, seg_end, cfg.lift_threshold / 2) if seg_end < length else seg_end
                steps.append((lift, top, f"lift the {name}"))
                cursor, held = top, name
                continue
        if held and not closing:
            dest = nearest_horizontal(episode, episode.objects[held].position_at(c), c, cfg.reference_radius, held)
            steps.append((cursor, c, f"move the {held} to the {dest}" if dest else f"move the {held}"))
            steps.append((c, seg_end, f"release the {held}"))
            cursor, held = seg_end, ""
            continue
        above = nearest_horizontal(episode, ee[c], c, cfg.reference_radius)
        if above is None:
            return None
        steps.append((cursor, c, f"move above the {above}"))
        steps.append((c, seg_end, "close the gripper" if closing else "open the gripper"))
        cursor = seg_end
    merged: list[dict[str, Any]] = []
    for start, end, text in steps:
        if end <= start:
            continue
        if merged and merged[-1]["text"] == text and merged[-1]["end"] == start:
            merged[-1]["end"] = end
        else:
            merged.append({"start": int(start), "end": int(end), "text": text})
    return merged if len(merged) >= 2 else None


def _first_moving(episode: Episode, cfg: ShareRobotConfig) -> tuple[str, int] | None:
    """The object that moved farthest (more than 4 x moved_tolerance) and the first step it had moved."""
    best: tuple[float, str] | None = None
    for name, obj in sorted(episode.objects.items()):
        if len(obj.positions) < 2:
            continue
        shift = float(np.linalg.norm(obj.positions - obj.positions[0], axis=1).max())
        if shift > 4 * cfg.moved_tolerance and (best is None or shift > best[0]):
            best = (shift, name)
    if best is None:
        return None
    positions = episode.objects[best[1]].positions
    moving = np.flatnonzero(np.linalg.norm(positions - positions[0], axis=1) > cfg.moved_tolerance)
    start = int(moving[0])
    return (best[1], start) if start >= 1 else None


def plan_steps(episode: Episode, cfg: ShareRobotConfig) -> tuple[list[dict[str, Any]], str] | str:
    """The episode's step list ({"start", "end" (exclusive), "text"}) and its rule, or a skip reason."""
    windows = plan_from_windows(episode)
    if windows is not None:
        return windows, "language_windows"
    ee = ee_positions(episode)
    if ee is None:
        return "no_steps"
    derived = plan_from_gripper(episode, ee, cfg)
    return (derived, "gripper_phases") if derived is not None else "no_steps"


def step_at(steps: list[dict[str, Any]], frame: int) -> int | None:
    """Index of the step whose [start, end) holds `frame`."""
    return next((i for i, s in enumerate(steps) if s["start"] <= frame < s["end"]), None)


# -- the builder --------------------------------------------------------------------------------------


@register_corpus("sharerobot")
class ShareRobotBuilder(CorpusBuilder):
    """Affordance boxes, EE trajectories, next/remaining steps, success and what-happens-next questions."""

    config_cls = ShareRobotConfig

    def __init__(self, config: ShareRobotConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        check_choices(self.name, "question_types", config.question_types, QUESTION_TYPES)
        if config.per_type < 1 or config.attempts < 1:
            raise ConfigError("corpus sharerobot options: per_type and attempts must be >= 1")
        if config.num_points < 3:
            raise ConfigError(f"corpus sharerobot options: num_points must be >= 3, got {config.num_points}")
        if not 1 <= config.distractors <= len(LETTERS) - 1:
            raise ConfigError(f"corpus sharerobot options: distractors must be in [1, {len(LETTERS) - 1}]")
        if not 0 < config.grasp_tolerance < config.grasp_extent / 2:
            raise ConfigError("corpus sharerobot options: need 0 < grasp_tolerance < grasp_extent / 2")
        if min(config.lift_threshold, config.approach_distance, config.moved_tolerance, config.min_path) < 0:
            raise ConfigError("corpus sharerobot options: distances must be >= 0")

    # -- building -------------------------------------------------------------------------------
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Questions about one episode; skip reasons name the type and why ("affordance:no_lift")."""
        cfg = self.config
        result = EpisodeResult()
        if cfg.camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        rng = context.rng
        images: dict[int, Image.Image] = {}
        plan = plan_steps(episode, cfg)
        for qtype in cfg.question_types:
            questions = getattr(self, f"_{qtype}")(episode, rng, plan)
            if isinstance(questions, str):
                result.skipped.append(f"{qtype}:{questions}")
                continue
            for q in questions:
                frame = int(q["frame"])
                if frame not in images:
                    images[frame] = frame_image(episode.frames[cfg.camera][frame], self.image_size)
                result.samples.append(self._sample(episode, qtype, q, images[frame], rng, len(result.samples)))
        return result

    def _sample(
        self, episode: Episode, qtype: str, q: dict[str, Any], image: Image.Image, rng: np.random.Generator, index: int
    ) -> Sample:
        family = q.get("template_family", qtype)
        template = int(rng.integers(len(TEMPLATES[family])))
        question = TEMPLATES[family][template].format(**q.get("fields", {}))
        prefix = f'The robot was asked to "{episode.instruction}".' if episode.instruction else ""
        text = " ".join(p for p in (prefix, question, q.get("suffix", "")) if p)
        answer = q["answer"]
        meta: dict[str, Any] = {
            "corpus": self.name,
            "question_type": qtype,
            "template": f"{family}/{template}",
            "frame": int(q["frame"]),
            "camera": self.config.camera,
            "episode_id": episode.episode_id,
            "instruction": episode.instruction,
            "image_size": [image.size[0], image.size[1]],
            **q["meta"],
        }
        if "options" in q:
            options: list[str] = list(q["options"])
            order = rng.permutation(len(options))
            shuffled = [options[i] for i in order]
            correct = int(np.flatnonzero(order == 0)[0])  # options[0] is the answer before shuffling
            text += "\n" + format_options(shuffled) + "\nAnswer with the option's letter."
            answer = LETTERS[correct]
            meta.update(options=shuffled, correct_index=correct, answer=answer)
        return Sample(
            key=sample_key(self.name, episode, index),
            messages=[user_turn(text), assistant_turn(answer)],
            images=[image],
            task=f"{self.name}/{qtype}",
            source=episode.source,
            meta=meta,
        )

    def _calibration(self, episode: Episode) -> tuple[np.ndarray, list[int]] | str:
        """EE positions and the frame size [h, w], or why they cannot be used."""
        cfg = self.config
        if cfg.camera not in episode.camera:
            return "no_calibration"
        ee = ee_positions(episode)
        if ee is None:
            return "no_ee"
        h, w = episode.frames[cfg.camera].shape[1:3]
        model = episode.camera[cfg.camera]
        if (model.height, model.width) != (h, w):
            return "camera_size_mismatch"
        return ee, [int(h), int(w)]

    def _affordance(self, episode: Episode, rng: np.random.Generator, plan: Any) -> list[dict[str, Any]] | str:
        cfg = self.config
        calibration = self._calibration(episode)
        if isinstance(calibration, str):
            return calibration
        ee, size = calibration
        gripper = episode.actions[:, 6]
        if not any(gripper[c] < 0.5 for c in gripper_changes(gripper)):
            return "no_close_event"
        grasps, why = find_grasps(episode, ee, cfg)
        questions: list[dict[str, Any]] = []
        for g in grasps:
            obj = episode.objects[g.obj]
            if obj.size is None:
                why.append("no_object_size")
                continue
            far = [t for t in range(g.close) if np.linalg.norm(ee[t] - ee[g.close]) >= cfg.approach_distance]
            if not far:
                why.append("no_frame_before_approach")
                continue
            frame = far[-1]
            if np.linalg.norm(obj.position_at(frame) - obj.position_at(g.close)) > cfg.moved_tolerance:
                why.append("object_moved")
                continue
            camera = episode.camera_at(cfg.camera, frame).to_dict()
            corners = grasp_region_corners(obj, g.close, ee[g.close], cfg.grasp_extent)
            box = project_box(camera, corners.tolist(), size)
            uv, depth = CameraModel.from_dict(camera).project(ee[g.close])
            u, v = float(uv[0, 0]), float(uv[0, 1])
            if box is None or depth[0] <= 0 or not (0 <= u < size[1] and 0 <= v < size[0]):
                why.append("outside_image")
                continue
            facts = {
                "object": g.obj,
                "grasp_point": [float(x) for x in ee[g.close]],
                "grasp_pixel": [u, v],
                "grasp_frame": g.close,
                "lift_frame": g.lift,
                "release_frame": g.release,
                "ee_object_distance": g.distance,
                "grasp_extent": cfg.grasp_extent,
                "corners_world": corners.tolist(),
                "camera_model": camera,
                "frame_size": size,
                "box": box,
            }
            questions.append(
                {
                    "frame": frame,
                    "answer": format_box(box),
                    "fields": {"object": g.obj},
                    "suffix": BOX_NOTE,
                    "meta": {"facts": facts},
                }
            )
        if not questions:
            return why[0] if why else "no_grasp"
        picks = rng.permutation(len(questions))[: cfg.per_type]
        return [questions[i] for i in sorted(picks.tolist())]

    def _trajectory(self, episode: Episode, rng: np.random.Generator, plan: Any) -> list[dict[str, Any]] | str:
        cfg = self.config
        calibration = self._calibration(episode)
        if isinstance(calibration, str):
            return calibration
        ee, size = calibration
        changes = gripper_changes(episode.actions[:, 6])
        candidates: list[tuple[int, list[int]]] = []
        for t in range(len(episode)):
            end = next((c for c in changes if c > t), len(episode) - 1)
            if end - t < cfg.num_points - 1:
                continue
            steps = [int(s) for s in np.round(np.linspace(t, end, cfg.num_points))]
            if float(np.linalg.norm(np.diff(ee[steps], axis=0), axis=1).sum()) >= cfg.min_path:
                candidates.append((t, steps))
        if not candidates:
            return "too_short"
        order = rng.permutation(len(candidates))[: cfg.attempts]
        questions: list[dict[str, Any]] = []
        reason = ""
        for i in order.tolist():
            t, steps = candidates[i]
            camera = episode.camera_at(cfg.camera, t).to_dict()
            world = [[float(x) for x in ee[s]] for s in steps]
            try:
                points = rounded_points(project_points(camera, world, size))
            except ValueError as exc:
                reason = str(exc)
                continue
            facts = {"steps": steps, "points_world": world, "camera_model": camera, "frame_size": size}
            questions.append(
                {
                    "frame": t,
                    "answer": format_points(points),
                    "fields": {"n": cfg.num_points},
                    "suffix": POINTS_NOTE,
                    "meta": {"facts": facts, "points": [list(p) for p in points]},
                }
            )
            if len(questions) == cfg.per_type:
                break
        return questions or reason

    def _step_frames(self, plan: Any, need_next: bool) -> tuple[list[dict[str, Any]], str, list[int]] | str:
        if isinstance(plan, str):
            return plan
        steps, rule = plan
        last = len(steps) - 1 if need_next else len(steps)
        frames = [t for k, s in enumerate(steps) if k < last for t in range(s["start"], s["end"])]
        return (steps, rule, frames) if frames else "no_next_step"

    def _pick_frames(self, frames: list[int], rng: np.random.Generator) -> list[int]:
        return sorted(int(f) for f in rng.choice(frames, size=min(self.config.per_type, len(frames)), replace=False))

    def _plan_questions(
        self, episode: Episode, rng: np.random.Generator, plan: Any, remaining: bool
    ) -> list[dict[str, Any]] | str:
        found = self._step_frames(plan, need_next=True)
        if isinstance(found, str):
            return found
        steps, rule, frames = found
        questions = []
        for frame in self._pick_frames(frames, rng):
            k = step_at(steps, frame)
            assert k is not None
            texts = [s["text"] for s in steps[k + 1 :]]
            questions.append(
                {
                    "frame": frame,
                    "answer": format_steps(texts) if remaining else texts[0],
                    "fields": {"current": steps[k]["text"]},
                    "meta": {"steps": steps, "plan_rule": rule, "current_step": k},
                }
            )
        return questions

    def _next_step(self, episode: Episode, rng: np.random.Generator, plan: Any) -> list[dict[str, Any]] | str:
        return self._plan_questions(episode, rng, plan, remaining=False)

    def _remaining_steps(self, episode: Episode, rng: np.random.Generator, plan: Any) -> list[dict[str, Any]] | str:
        return self._plan_questions(episode, rng, plan, remaining=True)

    def _success(self, episode: Episode, rng: np.random.Generator, plan: Any) -> list[dict[str, Any]] | str:
        if episode.success is None:
            return "unknown_outcome"
        questions = []
        for frame in self._pick_frames(list(range(len(episode))), rng):
            fail = bool(rng.integers(2))
            yes = bool(episode.success) != fail
            questions.append(
                {
                    "frame": frame,
                    "answer": "",
                    "options": ["yes", "no"] if yes else ["no", "yes"],
                    "template_family": "success_fail" if fail else "success",
                    "meta": {"facts": {"success": bool(episode.success), "polarity": "fail" if fail else "succeed"}},
                }
            )
        return questions

    def _future(self, episode: Episode, rng: np.random.Generator, plan: Any) -> list[dict[str, Any]] | str:
        found = self._step_frames(plan, need_next=True)
        if isinstance(found, str):
            return found
        steps, rule, frames = found
        questions = []
        for frame in self._pick_frames(frames, rng):
            k = step_at(steps, frame)
            assert k is not None
            answer = steps[k + 1]["text"]
            options = [answer, *self._distractors(episode, steps, answer, rng)]
            questions.append(
                {
                    "frame": frame,
                    "answer": "",
                    "options": options,
                    "meta": {"steps": steps, "plan_rule": rule, "current_step": k},
                }
            )
        return questions

    def _distractors(
        self, episode: Episode, steps: list[dict[str, Any]], answer: str, rng: np.random.Generator
    ) -> list[str]:
        """Other step texts of this plan first, then steps about the scene's objects, then a fixed pool."""
        taken = {answer.casefold()}
        picks: list[str] = []
        own = sorted({s["text"] for s in steps})
        verbs = ("move to the {}", "grasp the {}", "lift the {}", "release the {}", "push the {}")
        scene = sorted({v.format(name) for name in episode.objects for v in verbs})
        for pool in (own, scene, sorted(FIXED_STEP_POOL)):
            for i in rng.permutation(len(pool)).tolist():
                if len(picks) == self.config.distractors:
                    return picks
                if pool[i].casefold() not in taken:
                    taken.add(pool[i].casefold())
                    picks.append(pool[i])
        return picks

    # -- checking -------------------------------------------------------------------------------
    def expected_answer(self, meta: dict[str, Any]) -> str:
        """The answer text (the correct option's text for multiple choice) re-derived from `meta`."""
        qtype = meta["question_type"]
        if qtype == "affordance":
            facts = meta["facts"]
            box = project_box(facts["camera_model"], facts["corners_world"], facts["frame_size"])
            if box is None:
                raise ValueError("box outside the image")
            return format_box(box)
        if qtype == "trajectory":
            facts = meta["facts"]
            points = project_points(facts["camera_model"], facts["points_world"], facts["frame_size"])
            return format_points(rounded_points(points))
        if qtype in ("next_step", "remaining_steps", "future"):
            steps = meta["steps"]
            k = step_at(steps, int(meta["frame"]))
            if k is None or k != meta["current_step"] or k + 1 >= len(steps):
                raise ValueError("frame not inside a step with a successor")
            texts = [str(s["text"]) for s in steps[k + 1 :]]
            return format_steps(texts) if qtype == "remaining_steps" else texts[0]
        if qtype == "success":
            facts = meta["facts"]
            return "yes" if bool(facts["success"]) != (facts["polarity"] == "fail") else "no"
        raise KeyError(qtype)

    def verify(self, sample: Sample) -> bool:
        """The answer text (or letter and options) agrees with the facts in `meta`; imported rows: form only."""
        try:
            meta = sample.meta
            answer = message_text(sample, "assistant").strip()
            question = message_text(sample, "user")
            qtype = meta["question_type"]
            if qtype == "imported":
                return _imported_form_ok(str(meta.get("answer_kind", "")), answer)
            if meta.get("instruction") and meta["instruction"] not in question:
                return False
            if "options" in meta:
                options = list(meta["options"])
                correct = int(meta["correct_index"])
                return (
                    parse_options(question) == options
                    and answer == LETTERS[correct]
                    and options[correct] == self.expected_answer(meta)
                    and options.count(options[correct]) == 1
                )
            if qtype == "affordance" and meta["facts"]["object"] not in question:
                return False
            current = meta["steps"][meta["current_step"]]["text"] if "current_step" in meta else ""
            if qtype in ("next_step", "remaining_steps") and current not in question:
                return False
            return answer == self.expected_answer(meta) and len(sample.images) == 1
        except (KeyError, IndexError, TypeError, ValueError):
            return False


def _imported_form_ok(kind: str, answer: str) -> bool:
    """Imported ShareRobot rows carry no facts: a box, >= 1 points in [0, 1], or a non-empty plan text."""
    if kind == "planning":
        return bool(answer)
    groups = parse_tuples(answer)
    size = 4 if kind == "affordance" else 2 if kind == "trajectory" else 0
    if not groups or any(len(g) != size or not all(0.0 <= v <= 1.0 for v in g) for g in groups):
        return False
    if kind == "affordance":
        x1, y1, x2, y2 = groups[0]
        return len(groups) == 1 and x1 <= x2 and y1 <= y2
    return True
