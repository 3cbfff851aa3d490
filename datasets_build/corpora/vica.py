"""`vica`: ViCA-322K / VSI-Bench style spatial questions over short clips of robot episodes.

ViCA-322K's base tasks (object count, absolute and relative distance, object size, room size, object
appearance order, triangular positional relationship) are asked about robot workspaces. A sample's
user turn holds one image part per frame, in time order, then the question. Clip questions
(`clip_types`) show `num_frames` frames evenly spaced over the episode; the others show one frame.

Geometry comes from `datasets_build.geometry.GeometryProvider` (`geometry.mode=auto|ground_truth|
estimated`), so estimated geometry works the same way. An object is *visible* in a frame when the
provider returns it. With `prefer_poses` (default) and ground-truth poses and sizes in `Episode.objects`,
centres are world positions and sizes the objects' extents; otherwise point-cloud centroids and robust
extents from the frames are used (`meta["facts"]["position_source"]`/`"size_source"` says which).
Numeric answers carry units and `verify` parses them back: the number must equal the value re-derived
from the recorded facts, rounded as rendered.

- `object_size`: the longest dimension of a named object, whole centimetres ("4 cm").
- `abs_distance`: metres between two objects' centres, 2 decimals ("0.23 m"). Over a clip only objects
  that move less than `static_tolerance` are asked about (their distance holds for every frame).
- `rel_distance`: which of 3-4 objects is closest to / farthest from an object X (polarity drawn at
  random); the winner must beat the runner-up by `distance_margin`. Letter answer.
- `count`: how many objects of a category (e.g. blocks) are visible anywhere in the clip. Number answer.
- `appearance_order`: on the moving `order_camera` (the wrist camera), the order in which objects first
  appear (>= `order_min_pixels` pixels) in the clip. The clip is frames evenly spaced over steps
  [start, T - 1] with a start drawn among those whose first appearances differ; one object is taken per
  first-appearance frame, so orders have no ties. Clips where every object is already visible in the
  first frame are skipped ("appearance_order:no_change"). Letter answer among orderings.
- `triangular_position`: ViCA's triangular task asks about the triangle of three objects. Its exact
  wording could not be confirmed, so this rule is ours: seen from above (the horizontal plane), the
  centres of three objects form a triangle; the answer is the object at the vertex with the LARGEST
  angle (the one lying most nearly between the other two). Asked only when that angle beats the second
  largest by `angle_margin_deg` and every side is at least `min_side` metres. Letter answer.
- `table_area`: the area in square metres of the VISIBLE support surface (the table top without what
  objects and the robot hide) in one frame: the provider's support mask, each pixel's footprint being the
  quadrilateral where the rays through its corners meet the horizontal support plane (canonical z =
  `support_height`). `meta` keeps the mask (run-length encoded), camera and plane height for `verify`.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.answers import parse_number, parse_quantity_step, unit_factor
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
from datasets_build.geometry import FrameGeometry, GeometryConfig, GeometryProvider
from datasets_build.masks import rle_decode, rle_encode
from datasets_build.sample import Sample, assistant_turn, user_turn

QUESTION_TYPES = (
    "object_size",
    "abs_distance",
    "rel_distance",
    "count",
    "appearance_order",
    "triangular_position",
    "table_area",
)
NUMERIC_TYPES = ("object_size", "abs_distance", "count", "table_area")

TEMPLATES: dict[str, list[str]] = {
    "object_size": [
        "What is the length of the longest dimension (length, width or height) of the {a}, in centimeters?",
        "How long is the longest side of the {a}? Give the answer in centimeters.",
        "Estimate the largest dimension of the {a} in centimeters.",
    ],
    "abs_distance": [
        "What is the distance between the centers of the {a} and the {b}, in meters?",
        "How far apart are the {a} and the {b} (center to center), in meters?",
        "Measuring between their centers, how many meters separate the {a} from the {b}?",
    ],
    "rel_distance_closest": [
        "Measuring between centers, which of these objects is closest to the {a}?",
        "Which object is nearest to the {a}?",
        "Of the following objects, which one is the shortest distance from the {a}?",
    ],
    "rel_distance_farthest": [
        "Measuring between centers, which of these objects is farthest from the {a}?",
        "Which object is the farthest away from the {a}?",
        "Of the following objects, which one is the greatest distance from the {a}?",
    ],
    "count": [
        "How many {cat} are there in the scene?",
        "Count the {cat} that can be seen in this video. How many are there?",
        "How many {cat} does the robot's workspace contain?",
    ],
    "appearance_order": [
        "In which order do the following objects first appear in the video: {names}?",
        "Which is the order of first appearance of these objects in the video: {names}?",
        "As the camera moves, in what order do these objects come into view for the first time: {names}?",
    ],
    "triangular_position": [
        (
            "Seen from above, the centers of the {names} form a triangle. At which object is the triangle's "
            "angle the largest?"
        ),
        (
            "Consider the triangle whose corners are the centers of the {names} (viewed from above). Which "
            "object sits at its widest angle?"
        ),
        (
            "Looking down on the table, which of the {names} lies at the largest angle of the triangle the "
            "three objects form?"
        ),
    ],
    "table_area": [
        "What is the area of the visible part of the table surface, in square meters?",
        "How many square meters of the table top can be seen in this image?",
        "Estimate the area of the table surface visible here, in square meters.",
    ],
}
CLIP_NOTE = "These are {n} frames of a video, in time order."
NUMBER_NOTE = "Answer with a number and its unit."
COUNT_NOTE = "Answer with a single number."
LETTER_NOTE = "Answer with the option's letter."
PLURALS = {"box": "boxes", "glass": "glasses", "dish": "dishes"}


# -- numbers and units (the unit table and parsers live in datasets_build.answers) ---------------------
def parse_length(text: str, default_unit: str = "m") -> float:
    """A length answer ("12 cm", "0.4 meters", "3 ft") in metres; a bare number takes `default_unit`."""
    found = parse_quantity_step(text)
    if found is not None:
        if found[1] != "length":
            raise ValueError(f"not a length: {text[:80]!r}")
        return found[0]
    value = parse_number(text)
    unit = unit_factor(default_unit) if default_unit else None
    if value is None or unit is None or unit[0] != "length":
        raise ValueError(f"no length with a unit in {text[:80]!r}")
    return value * unit[1]


def parse_area(text: str) -> float:
    """An area answer ("0.72 m²", "0.72 square meters") in square metres."""
    found = parse_quantity_step(text)
    if found is None or found[1] != "area":
        raise ValueError(f"no area with a unit in {text[:80]!r}")
    return found[0]


def parse_count(text: str) -> int:
    """A whole-number answer ("3", "3 blocks"); ValueError on fractions or junk."""
    value = parse_number(text)
    if value is None or value != int(value) or value < 0:
        raise ValueError(f"not a count: {text[:80]!r}")
    return int(value)


def plural(category: str) -> str:
    """English plural of a category noun ("block" -> "blocks")."""
    if category in PLURALS:
        return PLURALS[category]
    return category if category.endswith("s") else category + "s"


# -- geometry rules (shared by build and verify) -------------------------------------------------
def _round(values: Any, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in np.asarray(values, dtype=np.float64).ravel()]


def size_cm(size_m: list[float]) -> int:
    """Longest dimension in whole centimetres."""
    return round(100.0 * max(size_m))


def centre_distance(a: list[float], b: list[float]) -> float:
    """Centre-to-centre distance in metres, rounded to 2 decimals as rendered."""
    return round(float(np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))), 2)


def triangle_angles(points: list[list[float]]) -> list[float]:
    """Interior angles (degrees) at each of three points, in the horizontal (x, y) plane."""
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    angles = []
    for i in range(3):
        u, v = xy[(i + 1) % 3] - xy[i], xy[(i + 2) % 3] - xy[i]
        cos = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
        angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cos)))))
    return angles


def first_appearances(pixels: dict[str, list[int]], min_pixels: int) -> dict[str, int]:
    """Index of the first clip frame where each object has >= `min_pixels` pixels (objects never seen left out)."""
    out = {}
    for name, counts in pixels.items():
        seen = [i for i, c in enumerate(counts) if c >= min_pixels]
        if seen:
            out[name] = seen[0]
    return out


def support_area(mask: np.ndarray, camera: CameraModel, height: float) -> float:
    """Area (m²) on the plane z = `height` (canonical) covered by the pixels of `mask` seen by `camera`.

    `camera` maps canonical points to pixels. Each pixel's footprint is the quadrilateral where the rays
    through its four corners meet the plane; pixels whose corners miss the plane (at or above the
    horizon) are left out. The corner rays come from a table made once per camera (`_corner_rays`); the
    rest is computed over the mask's bounding rows and columns only, in buffers reused step by step.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):
        return 0.0
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    h, w = mask.shape
    rays_x, rays_y, rays_z, centre = _corner_rays(camera.intrinsics.tobytes(), camera.extrinsics.tobytes(), w, h)
    window = (slice(r0, r1 + 1), slice(c0, c1 + 1))  # the corners of the pixels [r0, r1) x [c0, c1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.divide(height - centre[2], rays_z[window])
    hit = np.isfinite(t)
    hit &= t > 0
    np.copyto(t, 0.0, where=~hit)
    x = np.multiply(t, rays_x[window])  # where each corner ray meets the plane
    x += centre[0]
    y = np.multiply(t, rays_y[window], out=t)
    y += centre[1]
    d1x, d1y = x[1:, 1:] - x[:-1, :-1], y[1:, 1:] - y[:-1, :-1]  # the quad's diagonals
    d2x, d2y = x[1:, :-1] - x[:-1, 1:], y[1:, :-1] - y[:-1, 1:]
    quad = np.multiply(d1x, d2y, out=d1x)
    quad -= np.multiply(d1y, d2x, out=d1y)
    np.abs(quad, out=quad)
    quad *= 0.5
    ok = hit[:-1, :-1] & hit[:-1, 1:]
    ok &= hit[1:, :-1]
    ok &= hit[1:, 1:]
    ok &= mask[r0:r1, c0:c1]
    return float(quad[ok].sum())


@functools.lru_cache(maxsize=16)
def _corner_rays(
    intrinsics: bytes, extrinsics: bytes, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical directions (x, y, z parts, each (height + 1, width + 1)) of the rays through every pixel
    corner of a camera, and its centre: what `support_area` computes per mask, made once per camera."""
    k = np.frombuffer(intrinsics, dtype=np.float64).reshape(3, 3)
    e = np.frombuffer(extrinsics, dtype=np.float64).reshape(4, 4)
    rays = np.empty((height + 1, width + 1, 3))  # the corner rays (x, y, 1), row by row, column by column
    rays[..., 0] = (np.arange(0, width + 1, dtype=np.float64) - k[0, 2]) / k[0, 0]
    rays[..., 1] = ((np.arange(0, height + 1, dtype=np.float64) - k[1, 2]) / k[1, 1])[:, None]
    rays[..., 2] = 1.0
    rotation, translation = e[:3, :3], e[:3, 3]
    rays = rays @ rotation  # camera -> canonical directions (R^T d, row-wise)
    out = (*(np.ascontiguousarray(rays[..., i]) for i in range(3)), -rotation.T @ translation)
    for array in out:
        array.flags.writeable = False
    return out  # type: ignore[return-value]


def clip_steps(length: int, num_frames: int, start: int = 0) -> list[int]:
    """`num_frames` steps evenly spaced over [start, length - 1] (fewer when the range is shorter)."""
    return list(_clip_steps(length, num_frames, start))


@functools.lru_cache(maxsize=4096)
def _clip_steps(length: int, num_frames: int, start: int) -> tuple[int, ...]:
    steps = np.linspace(start, length - 1, num_frames).round().astype(int)
    return tuple(sorted({int(s) for s in steps}))


@dataclass
class VicaConfig:
    """Options of the vica corpus (key=value on the command line)."""

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    clip_types: list[str] = field(default_factory=lambda: ["appearance_order", "count", "object_size", "abs_distance"])
    per_type: int = 1  # questions per type per episode (at most, distinct content)
    num_frames: int = 4  # frames of a clip
    camera: str = "static"  # camera of every type but appearance_order
    order_camera: str = "wrist"  # moving camera of appearance_order
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    prefer_poses: bool = True  # centres and sizes from Episode.objects when present
    static_tolerance: float = 0.01  # metres an object may move over a clip and still be asked about
    distance_margin: float = 0.03  # rel_distance: metres the answer beats the runner-up by
    min_options: int = 3  # rel_distance: fewest candidate objects
    max_options: int = 4  # rel_distance: most candidate objects
    angle_margin_deg: float = 10.0  # triangular_position: largest angle minus the second largest
    min_side: float = 0.03  # triangular_position: shortest side of the triangle (metres)
    order_min_pixels: int = 20  # appearance_order: pixels that make an object "appear"
    order_min_objects: int = 3  # appearance_order: fewest objects to order
    order_max_objects: int = 4  # appearance_order: most objects to order
    order_options: int = 4  # appearance_order: options (orderings) offered, answer included
    min_support_pixels: int = 200  # table_area: smallest support mask asked about
    attempts: int = 8  # draws tried per question before giving up


@dataclass
class _Object:
    """What one clip shows of one object."""

    name: str
    category: str
    visible_steps: list[int]
    centre: list[float]
    motion: float
    size: list[float]
    size_source: str


@register_corpus("vica")
class VicaBuilder(CorpusBuilder):
    """ViCA-style spatial questions (size, distances, count, appearance order, triangle, table area)."""

    config_cls = VicaConfig

    def __init__(self, config: VicaConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        where = "corpus vica options"
        check_choices(self.name, "question_types", config.question_types, QUESTION_TYPES)
        check_choices(self.name, "clip_types", config.clip_types, QUESTION_TYPES, allow_empty=True)
        if "appearance_order" in config.question_types and "appearance_order" not in config.clip_types:
            raise ConfigError(f"{where}: appearance_order needs a clip: keep it in clip_types")
        if config.num_frames < 2 or config.per_type < 1 or config.attempts < 1:
            raise ConfigError(f"{where}: need num_frames >= 2, per_type >= 1 and attempts >= 1")
        if not 2 <= config.min_options <= config.max_options <= len(LETTERS):
            raise ConfigError(f"{where}: need 2 <= min_options <= max_options <= {len(LETTERS)}")
        if not 2 <= config.order_min_objects <= config.order_max_objects or config.order_options < 2:
            raise ConfigError(f"{where}: need 2 <= order_min_objects <= order_max_objects and order_options >= 2")
        if min(config.static_tolerance, config.distance_margin, config.angle_margin_deg, config.min_side) < 0:
            raise ConfigError(f"{where}: tolerances and margins must be >= 0")
        self.provider = GeometryProvider(config.geometry)
        self._episode_pixels: dict[str, dict[int, dict[str, int] | str]] = {}  # per-episode visibility (see build)
        self._episode_objects: dict[tuple[int, ...], tuple[dict[str, _Object], dict[str, Any]] | str] = {}

    # -- building -------------------------------------------------------------------------------
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Questions about one episode; skip reasons name the type and why ("rel_distance:ambiguous")."""
        cfg = self.config
        result = EpisodeResult()
        if cfg.camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        rng = context.rng
        cache: dict[tuple[str, int], FrameGeometry | str] = {}
        images: dict[tuple[str, int], Image.Image] = {}  # a clip's frames recur across its questions
        self._episode_pixels = {}  # camera -> step -> {object: mask pixels} or skip reason, for this episode
        self._episode_objects = {}  # clip steps -> the objects seen in that clip, for this episode
        for qtype in cfg.question_types:
            used: set[str] = set()
            for asked in range(cfg.per_type):
                question = getattr(self, f"_{qtype}")(episode, rng, cache, used)
                if isinstance(question, str):
                    if not asked:
                        result.skipped.append(f"{qtype}:{question}")
                    break
                used.add(question["signature"])
                result.samples.append(self._sample(episode, qtype, question, rng, len(result.samples), images))
        return result

    def _geometry(
        self,
        episode: Episode,
        camera: str,
        step: int,
        cache: dict[tuple[str, int], FrameGeometry | str],
        points: bool = True,
    ) -> FrameGeometry | str:
        """Cached frame geometry; with `points=False` a cached full geometry is reused, else masks only."""
        key = (camera, step) if points else (camera, -1 - step)
        if key not in cache:
            if not points and (camera, step) in cache:
                return cache[(camera, step)]
            cache[key] = self.provider.frame(episode, camera, step, points=points)
        return cache[key]

    def _pixel_counts(self, episode: Episode, camera: str, steps: Iterable[int]) -> dict[int, dict[str, int] | str]:
        """{step: {object: mask pixels} or the frame's skip reason} for `steps`, each frame counted once per episode
        (appearance order asks for every frame of the moving camera, once per question)."""
        known = self._episode_pixels.setdefault(camera, {})
        for step in steps:
            if step not in known:
                known[step] = self.provider.pixel_counts(episode, camera, step)
        return {step: known[step] for step in steps}

    def _steps(self, episode: Episode, qtype: str, rng: np.random.Generator) -> list[int]:
        if qtype in self.config.clip_types:
            return clip_steps(len(episode), self.config.num_frames)
        return [int(rng.integers(len(episode)))]

    def _clip_objects(
        self, episode: Episode, qtype: str, rng: np.random.Generator, cache: dict[tuple[str, int], FrameGeometry | str]
    ) -> tuple[list[int], dict[str, _Object], dict[str, Any]] | str:
        """The steps a `qtype` question looks at, with the objects visible there (or a skip reason)."""
        steps = self._steps(episode, qtype, rng)
        found = self._objects(episode, steps, cache)
        return found if isinstance(found, str) else (steps, *found)

    def _objects(
        self, episode: Episode, steps: list[int], cache: dict[tuple[str, int], FrameGeometry | str]
    ) -> tuple[dict[str, _Object], dict[str, Any]] | str:
        """The objects visible in the clip `steps` of the main camera with their centres and sizes (worked out once
        per clip of the episode; the callers get their own dicts to add facts to)."""
        key = tuple(steps)
        if key not in self._episode_objects:
            self._episode_objects[key] = self._find_objects(episode, steps, cache)
        found = self._episode_objects[key]
        return found if isinstance(found, str) else (dict(found[0]), dict(found[1]))

    def _find_objects(
        self, episode: Episode, steps: list[int], cache: dict[tuple[str, int], FrameGeometry | str]
    ) -> tuple[dict[str, _Object], dict[str, Any]] | str:
        cfg = self.config
        # with object poses and sizes from ground truth the clip needs only visibility (masks), not clouds
        need_points = not (cfg.prefer_poses and all(o.size is not None for o in episode.objects.values()))
        need_points = need_points or not episode.objects
        good: dict[int, FrameGeometry] = {}
        if not need_points and self.provider.uses_ground_truth(episode, cfg.camera):
            # poses, sizes and categories from ground truth: only which objects each frame shows is needed, and
            # the masks' pixel counts say it (as the masks-only geometry would, object for object)
            counts = self._pixel_counts(episode, cfg.camera, steps)
            shown = {s: list(c) for s, c in counts.items() if not isinstance(c, str)}
            if not shown:
                return str(next(iter(counts.values())))
            origin = "ground_truth"
        else:
            frames = {s: self._geometry(episode, cfg.camera, s, cache, points=need_points) for s in steps}
            good = {s: g for s, g in frames.items() if not isinstance(g, str)}
            if not good:
                return str(next(iter(frames.values())))
            shown = {s: list(g.objects) for s, g in good.items()}
            origin = next(iter(good.values())).origin
        visible: dict[str, list[int]] = {}
        for s, names in shown.items():
            for name in names:
                visible.setdefault(name, []).append(s)
        if not visible:
            return "no_objects"
        infos = episode.objects
        poses = cfg.prefer_poses and all(n in infos for n in visible)
        out: dict[str, _Object] = {}
        for name, seen in sorted(visible.items()):
            if poses:
                centres = np.stack([infos[name].position_at(s) for s in steps]).astype(np.float64)
            else:
                centres = np.stack([good[s].objects[name].centroid for s in seen]).astype(np.float64)
            centre = centres.mean(axis=0)
            info = infos.get(name)
            if cfg.prefer_poses and info is not None and info.size is not None:
                size, size_source = info.size, "ground_truth_size"
            else:
                best = max(seen, key=lambda s: int(good[s].objects[name].mask.sum()))
                size, size_source = good[best].objects[name].extent, "point_cloud_extent"
            seen_category = good[seen[0]].objects[name].category if good else ""  # ground truth: the info's
            category = seen_category or (info.category if info is not None else "")
            out[name] = _Object(
                name=name,
                category=category,
                visible_steps=seen,
                centre=_round(centre),
                motion=round(float(np.linalg.norm(centres - centre, axis=1).max()), 5),
                size=_round(size),
                size_source=size_source,
            )
        facts = {
            "position_source": "pose" if poses else "point_cloud",
            "position_frame": "world" if poses else "canonical",
            "geometry_origin": origin,
        }
        return out, facts

    def _static(self, objects: dict[str, _Object]) -> list[str]:
        return [n for n, o in objects.items() if o.motion <= self.config.static_tolerance]

    def _object_size(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        found = self._clip_objects(episode, "object_size", rng, cache)
        if isinstance(found, str):
            return found
        steps, objects, facts = found
        names = [n for n in objects if f"size:{n}" not in used]
        if not names:
            return "no_objects"
        name = names[int(rng.integers(len(names)))]
        obj = objects[name]
        facts.update(object=name, size_m=obj.size, size_source=obj.size_source)
        return {
            "steps": steps,
            "signature": f"size:{name}",
            "fill": {"a": name},
            "facts": facts,
            "answer": f"{size_cm(obj.size)} cm",
        }

    def _abs_distance(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        found = self._clip_objects(episode, "abs_distance", rng, cache)
        if isinstance(found, str):
            return found
        steps, objects, facts = found
        static = self._static(objects)
        pairs = [p for p in itertools.combinations(static, 2) if f"dist:{p[0]}|{p[1]}" not in used]
        if not pairs:
            return "too_few_static_objects"
        a, b = pairs[int(rng.integers(len(pairs)))]
        if rng.integers(2):
            a, b = b, a
        facts.update(
            objects=[a, b],
            centres=[objects[a].centre, objects[b].centre],
            motion=[objects[a].motion, objects[b].motion],
        )
        return {
            "steps": steps,
            "signature": f"dist:{min(a, b)}|{max(a, b)}",
            "fill": {"a": a, "b": b},
            "facts": facts,
            "answer": f"{centre_distance(objects[a].centre, objects[b].centre):.2f} m",
        }

    def _rel_distance(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        cfg = self.config
        reason = "too_few_objects"
        for _ in range(cfg.attempts):
            found = self._clip_objects(episode, "rel_distance", rng, cache)
            if isinstance(found, str):
                reason = found
                continue
            steps, objects, facts = found
            static = self._static(objects)
            if len(static) < cfg.min_options + 1:
                continue
            target = static[int(rng.integers(len(static)))]
            others = [n for n in static if n != target]
            k = int(rng.integers(cfg.min_options, min(cfg.max_options, len(others)) + 1))
            picks = [others[i] for i in sorted(rng.permutation(len(others))[:k].tolist())]
            farthest = bool(rng.integers(2))
            dists = [centre_distance(objects[target].centre, objects[n].centre) for n in picks]
            ranked = sorted(dists, reverse=farthest)
            if abs(ranked[0] - ranked[1]) < cfg.distance_margin:
                reason = "ambiguous"
                continue
            answer = picks[dists.index(ranked[0])]
            signature = f"rel:{target}|{'far' if farthest else 'near'}|{','.join(picks)}"
            if signature in used:
                continue
            facts.update(
                target=target,
                polarity="farthest" if farthest else "closest",
                target_centre=objects[target].centre,
                candidates={n: objects[n].centre for n in picks},
            )
            return {
                "steps": steps,
                "signature": signature,
                "family": f"rel_distance_{'farthest' if farthest else 'closest'}",
                "fill": {"a": target},
                "facts": facts,
                "options": [answer, *[n for n in picks if n != answer]],
            }
        return reason

    def _count(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        found = self._clip_objects(episode, "count", rng, cache)
        if isinstance(found, str):
            return found
        steps, objects, facts = found
        categories = sorted({o.category for o in objects.values() if o.category} - {s.split(":", 1)[1] for s in used})
        if not categories:
            return "no_category"
        category = categories[int(rng.integers(len(categories)))]
        facts.update(
            category=category,
            objects=[
                {"name": o.name, "category": o.category, "visible_steps": o.visible_steps} for o in objects.values()
            ],
        )
        count = sum(1 for o in objects.values() if o.category == category and o.visible_steps)
        return {
            "steps": steps,
            "signature": f"count:{category}",
            "fill": {"cat": plural(category)},
            "facts": facts,
            "answer": str(count),
        }

    def _appearance_order(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        cfg = self.config
        camera = cfg.order_camera
        if camera not in episode.frames:
            return "no_order_camera"
        length = len(episode)
        found = self._pixel_counts(episode, camera, range(length))  # visibility only: masks suffice
        pixels_at = {step: {} if isinstance(counts, str) else counts for step, counts in found.items()}
        if not any(pixels_at.values()):
            geometry = self._geometry(episode, camera, 0, cache)
            return geometry if isinstance(geometry, str) else "no_objects"
        names = sorted({n for counts in pixels_at.values() for n in counts})
        candidates: list[tuple[int, list[int], dict[str, list[int]], dict[int, list[str]]]] = []
        changed = False
        for start in range(max(1, length - cfg.num_frames + 1)):
            steps = clip_steps(length, cfg.num_frames, start)
            pixels = {n: [pixels_at[s].get(n, 0) for s in steps] for n in names}
            first = first_appearances(pixels, cfg.order_min_pixels)
            groups: dict[int, list[str]] = {}
            for name, index in sorted(first.items()):
                groups.setdefault(index, []).append(name)
            changed |= len(groups) > 1
            if len(groups) >= cfg.order_min_objects:
                candidates.append((start, steps, pixels, groups))
        if not candidates:
            return "too_few_objects" if changed else "no_change"
        for _ in range(cfg.attempts):
            start, steps, pixels, groups = candidates[int(rng.integers(len(candidates)))]
            keys = sorted(groups)
            k = min(cfg.order_max_objects, len(keys))
            chosen = sorted(keys[i] for i in rng.permutation(len(keys))[:k].tolist())
            order = [groups[i][int(rng.integers(len(groups[i])))] for i in chosen]
            signature = f"order:{start}:{','.join(order)}"
            if signature in used:
                continue
            others = [list(p) for p in itertools.permutations(order) if list(p) != order]
            n_other = min(cfg.order_options - 1, len(others))
            distractors = [others[i] for i in sorted(rng.permutation(len(others))[:n_other].tolist())]
            asked = [order[i] for i in rng.permutation(len(order))]
            facts = {
                "camera": camera,
                "objects": asked,
                "min_pixels": cfg.order_min_pixels,
                "pixels": {n: pixels[n] for n in order},
            }
            return {
                "steps": steps,
                "camera": camera,
                "signature": signature,
                "fill": {"names": ", ".join(f"the {n}" for n in asked)},
                "facts": facts,
                "options": [", ".join(order), *[", ".join(d) for d in distractors]],
            }
        return "no_new_order"

    def _triangular_position(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        cfg = self.config
        reason = "too_few_objects"
        for _ in range(cfg.attempts):
            found = self._clip_objects(episode, "triangular_position", rng, cache)
            if isinstance(found, str):
                reason = found
                continue
            steps, objects, facts = found
            static = self._static(objects)
            if len(static) < 3:
                continue
            trio = [static[i] for i in sorted(rng.permutation(len(static))[:3].tolist())]
            centres = [objects[n].centre for n in trio]
            xy = np.asarray(centres)[:, :2]
            sides = [float(np.linalg.norm(xy[i] - xy[(i + 1) % 3])) for i in range(3)]
            if min(sides) < cfg.min_side:
                reason = "degenerate"
                continue
            angles = triangle_angles(centres)
            ranked = sorted(angles, reverse=True)
            if ranked[0] - ranked[1] < cfg.angle_margin_deg:
                reason = "ambiguous"
                continue
            signature = f"tri:{','.join(trio)}"
            if signature in used:
                continue
            answer = trio[angles.index(ranked[0])]
            facts.update(objects=trio, centres=centres, angle_margin_deg=cfg.angle_margin_deg)
            names = [trio[i] for i in rng.permutation(3)]
            return {
                "steps": steps,
                "signature": signature,
                "fill": {"names": f"{names[0]}, the {names[1]} and the {names[2]}"},
                "facts": facts,
                "options": [answer, *[n for n in trio if n != answer]],
            }
        return reason

    def _table_area(
        self,
        episode: Episode,
        rng: np.random.Generator,
        cache: dict[tuple[str, int], FrameGeometry | str],
        used: set[str],
    ) -> dict[str, Any] | str:
        cfg = self.config
        reason = "no_support"
        for _ in range(cfg.attempts):
            steps = self._steps(episode, "table_area", rng)
            if f"area:{steps}" in used:
                continue
            # the first frame of a clip; only its support and camera are used
            g = cache.get((cfg.camera, steps[0])) or self.provider.support_frame(episode, cfg.camera, steps[0])
            if isinstance(g, str):
                return g
            if g.support is None or g.support_height is None or int(g.support.sum()) < cfg.min_support_pixels:
                continue
            height = round(float(g.support_height), 6)
            camera = CameraModel(np.round(g.camera.intrinsics, 6), np.round(g.camera.extrinsics, 8), g.width, g.height)
            area = round(support_area(g.support, camera, height), 2)
            facts = {
                "step": steps[0],
                "geometry_origin": g.origin,
                "support": rle_encode(g.support),
                "support_height": height,
                "camera": camera.to_dict(),
            }
            return {
                "steps": steps,
                "signature": f"area:{steps}",
                "fill": {},
                "facts": facts,
                "answer": f"{area:.2f} m²",
            }
        return reason

    def _sample(
        self,
        episode: Episode,
        qtype: str,
        q: dict[str, Any],
        rng: np.random.Generator,
        index: int,
        images: dict[tuple[str, int], Image.Image] | None = None,
    ) -> Sample:
        camera = q.get("camera", self.config.camera)
        steps: list[int] = q["steps"]
        family = q.get("family", qtype)
        template = int(rng.integers(len(TEMPLATES[family])))
        question = TEMPLATES[family][template].format(**q["fill"])
        parts = [CLIP_NOTE.format(n=len(steps))] if len(steps) > 1 else []
        meta: dict[str, Any] = {
            "corpus": self.name,
            "question_type": qtype,
            "template": f"{family}/{template}",
            "episode_id": episode.episode_id,
            "camera": camera,
            "steps": steps,
            "facts": q["facts"],
        }
        if "options" in q:
            options: list[str] = list(q["options"])
            order = rng.permutation(len(options))
            shuffled = [options[i] for i in order]
            correct = int(np.flatnonzero(order == 0)[0])  # options[0] is the answer before shuffling
            text = " ".join([*parts, question]) + "\n" + format_options(shuffled) + "\n" + LETTER_NOTE
            answer = LETTERS[correct]
            meta.update(options=shuffled, correct_index=correct, answer=answer)
        else:
            note = COUNT_NOTE if qtype == "count" else NUMBER_NOTE
            text = " ".join([*parts, question, note])
            answer = q["answer"]
            meta["answer"] = answer
        memo = images if images is not None else {}
        for s in steps:
            if (camera, s) not in memo:
                memo[(camera, s)] = frame_image(episode.frames[camera][s], self.image_size)
        frames = [memo[(camera, s)] for s in steps]
        return Sample(
            key=sample_key(self.name, episode, index),
            messages=[user_turn(text, n_images=len(frames)), assistant_turn(answer)],
            images=frames,
            task=f"{self.name}/{qtype}",
            source=episode.source,
            meta=meta,
        )

    # -- checking -------------------------------------------------------------------------------
    def expected_answer(self, meta: dict[str, Any]) -> Any:
        """The answer re-derived from `meta["facts"]`: a number in the rendered unit, or the correct option text."""
        qtype = meta["question_type"]
        facts = meta["facts"]
        if qtype == "object_size":
            return size_cm(facts["size_m"]) / 100.0
        if qtype == "abs_distance":
            return centre_distance(*facts["centres"])
        if qtype == "count":
            return sum(1 for o in facts["objects"] if o["category"] == facts["category"] and o["visible_steps"])
        if qtype == "table_area":
            camera = CameraModel.from_dict(facts["camera"])
            return round(support_area(rle_decode(facts["support"]), camera, float(facts["support_height"])), 2)
        if qtype == "rel_distance":
            dists = {n: centre_distance(facts["target_centre"], c) for n, c in facts["candidates"].items()}
            pick = max if facts["polarity"] == "farthest" else min
            return pick(dists, key=lambda n: dists[n])
        if qtype == "appearance_order":
            first = first_appearances(facts["pixels"], int(facts["min_pixels"]))
            if sorted(first) != sorted(facts["objects"]) or len(set(first.values())) != len(first):
                raise ValueError("objects must all appear, at distinct frames")
            return ", ".join(sorted(first, key=lambda n: first[n]))
        if qtype == "triangular_position":
            angles = triangle_angles(facts["centres"])
            return facts["objects"][int(np.argmax(angles))]
        raise KeyError(qtype)

    def verify(self, sample: Sample) -> bool:
        """The answer (parsed back with its unit, or the option letter) equals what the facts give."""
        try:
            meta = sample.meta
            qtype = meta["question_type"]
            answer = message_text(sample, "assistant").strip()
            if qtype == "imported":
                return imported_answer_ok(answer, str(meta.get("answer_kind", "text")))
            if len(sample.images) != len(meta["steps"]):
                return False
            expected = self.expected_answer(meta)
            question = message_text(sample, "user")
            if qtype in NUMERIC_TYPES:
                if qtype == "count":
                    return parse_count(answer) == expected and meta["facts"]["category"] != ""
                value = parse_area(answer) if qtype == "table_area" else parse_length(answer, "")
                return math.isclose(value, expected, rel_tol=1e-9, abs_tol=1e-9) and self._names_in(meta, question)
            options = list(meta["options"])
            correct = int(meta["correct_index"])
            return (
                parse_options(question) == options
                and answer == LETTERS[correct]
                and options[correct] == expected
                and options.count(options[correct]) == 1
                and self._names_in(meta, question)
            )
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            return False

    @staticmethod
    def _names_in(meta: dict[str, Any], question: str) -> bool:
        facts = meta["facts"]
        names = [facts["object"]] if "object" in facts else list(facts.get("objects", []))
        if "target" in facts:
            names.append(facts["target"])
        return all(isinstance(n, str) and n in question for n in names)


_LETTER_ANSWER = re.compile(r"^\(?([A-H])\)?[.:)]?(\s.*)?$", re.DOTALL)


def imported_answer_ok(answer: str, kind: str) -> bool:
    """Form check of a published ViCA answer: a letter, a number (with or without unit) or free text."""
    if kind == "letter":
        return _LETTER_ANSWER.match(answer) is not None
    if kind == "number":
        return parse_number(answer) is not None
    return bool(answer.strip())


def answer_kind(text: str) -> str:
    """ "letter" ("B", "B. chair"), "number" ("3", "1.5 m") or "text"."""
    stripped = text.strip()
    if _LETTER_ANSWER.match(stripped) and len(stripped) <= 3:
        return "letter"
    if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)\s*[A-Za-z²^0-9 ]{0,20}\.?", stripped):
        return "number"
    return "text"
