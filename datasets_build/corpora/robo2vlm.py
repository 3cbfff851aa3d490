"""`robo2vlm`: Robo2VLM-style multiple-choice questions from any source's trajectories (one-letter answers).

Phases come from the gripper command (actions[:, 6], 1 = open) and end-effector motion (actions[:, :3]).
Question types: gripper_state, holding, direction, task, success. Options are shuffled with the episode's
seeded generator; yes/no questions draw a random polarity ("holding?" / "empty?") so neither answer
dominates. Labels are heuristics of the trajectory: "holding" means closed after a close event and lifted
by more than `lift_threshold` since; a closed gripper that has not yet lifted is never asked about.

Directions: with a calibrated main camera (`direction_frame=auto|camera`) left/right and forward/backward
are image-relative (the camera's right and viewing axes projected on the horizontal plane; up/down is
world z). Without one (or `direction_frame=world`) options name world axes ("along +x"), as the source's
world frame has no agreed left or forward. All wordings live in `DIRECTION_WORDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.corpora.base import (
    LETTERS,
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    format_options,
    frame_image,
    message_text,
    parse_options,
    register_corpus,
    sample_key,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.sample import Sample, assistant_turn, user_turn

QUESTION_TYPES = ("gripper_state", "holding", "direction", "task", "success")

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

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
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


@register_corpus("robo2vlm")
class Robo2VLMBuilder(CorpusBuilder):
    """Multiple-choice trajectory questions (gripper state, holding, direction, task, success)."""

    config_cls = Robo2VLMConfig

    def __init__(self, config: Robo2VLMConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        unknown = [q for q in config.question_types if q not in QUESTION_TYPES]
        if unknown:
            raise ConfigError(f"corpus robo2vlm options: question_types: unknown {unknown}; known: {QUESTION_TYPES}")
        if config.direction_frame not in ("auto", "world", "camera"):
            raise ConfigError("corpus robo2vlm options: direction_frame: must be auto, world or camera")
        if config.per_type < 1 or config.horizon < 1 or config.min_length < 2:
            raise ConfigError("corpus robo2vlm options: per_type and horizon must be >= 1, min_length >= 2")
        if not 1 <= config.distractors <= 5:
            raise ConfigError("corpus robo2vlm options: distractors must be in [1, 5]")

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
        images: dict[int, Image.Image] = {}
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
                if frame not in images:
                    images[frame] = frame_image(episode.frames[camera][frame], self.image_size)
                result.samples.append(
                    self._sample(episode, qtype, question, camera, images[frame], rng, len(result.samples))
                )
        return result

    def _sample(
        self,
        episode: Episode,
        qtype: str,
        q: dict[str, Any],
        camera: str,
        image: Image.Image,
        rng: np.random.Generator,
        index: int,
    ) -> Sample:
        options: list[str] = list(q["options"])
        order = rng.permutation(len(options))
        shuffled = [options[i] for i in order]
        correct = int(np.flatnonzero(order == 0)[0])  # options[0] is always the answer before shuffling
        family = q.get("template_family", qtype)
        template = int(rng.integers(len(TEMPLATES[family])))
        parts = [q.get("prefix", ""), TEMPLATES[family][template], q.get("suffix", "")]
        text = " ".join(p for p in parts if p) + "\n" + format_options(shuffled) + "\nAnswer with the option's letter."
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
            messages=[user_turn(text), assistant_turn(LETTERS[correct])],
            images=[image],
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
        for t in range(len(episode) - cfg.horizon + 1):
            if t in used:
                continue
            basis = None if cfg.direction_frame == "world" else camera_basis(episode, camera, t)
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
        if qtype == "imported":  # Robo2VLM-1 rows carry no facts: only letter/options consistency is checked
            return str(meta["options"][meta["correct_index"]])
        raise KeyError(qtype)

    def verify(self, sample: Sample) -> bool:
        """Answer letter, options in the question text and the facts all agree."""
        try:
            meta = sample.meta
            options = list(meta["options"])
            correct = int(meta["correct_index"])
            return (
                parse_options(message_text(sample, "user")) == options
                and message_text(sample, "assistant").strip() == LETTERS[correct]
                and options[correct] == self.expected_answer(meta)
                and options.count(options[correct]) == 1
            )
        except (KeyError, IndexError, TypeError, ValueError):
            return False
