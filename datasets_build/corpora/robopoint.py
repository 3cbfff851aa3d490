"""`robopoint`: RoboPoint-style pointing questions answered from per-frame object geometry.

Masks come from `datasets_build.geometry.GeometryProvider`: ground truth where the source has it (the demo
sim's segmentation, CALVIN's block boxes back-projected from depth) and estimated masks elsewhere. The
free-table region is the frame's support mask (`FrameGeometry.support`; the demo sim's table id by
default), containers are objects whose `category` is `container_category`. Each episode draws `frames`
distinct frames once; every question is asked on one of them, so each frame's geometry is computed once.

Answers are lists of normalised points `[(x, y), ...]` (x = column / width, y = row / height, 3 decimals)
sampled at pixel centres of a target region of the chosen frame:

- `object`: "Point to the red block." -> points inside the object's mask eroded by `erode` px;
- `left` / `right` / `front` / `behind`: free table pixels (support mask, eroded) beside an object.
  Directions are IMAGE terms for the camera (the static one by default): left = smaller column, right =
  larger column, front = lower in the image (larger row, closer to the camera), behind = higher in the
  image. "Left of A" keeps the rows of A's mask bounding box and the columns from `margin` to
  `margin + reach` pixels left of it (`reach` = `reach_factor` times the box's longer side); the other
  sides are the same rotated;
- `between`: free table pixels in a band around the segment joining the centroids of two objects' masks
  (parameter along the segment in [0.2, 0.8], half width = half the smaller box side, at least 2 px);
- `on`: pixels of a container's (tray, plate) mask, eroded.

Episodes whose frames have no geometry are skipped with the provider's reason (`no_depth`, `no_masks`,
...), frames without objects as `no_objects`; questions without a support surface as `<type>:no_support`;
nothing is guessed. `meta["region"]` holds the target region as a run-length encoding of its pixel mask,
so `verify` re-parses the answer and checks every point lies inside.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.answers import format_points, parse_points, parse_tuples
from datasets_build.corpora.base import (
    CorpusBuilder,
    EpisodeContext,
    EpisodeResult,
    check_choices,
    frame_image,
    message_text,
    register_corpus,
    sample_key,
)
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.geometry.provider import GeometryConfig, GeometryProvider
from datasets_build.geometry.scene import FrameGeometry
from datasets_build.masks import point_pixel, rle_decode, rle_encode
from datasets_build.sample import Sample, assistant_turn, user_turn

QUESTION_TYPES = ("object", "left", "right", "front", "behind", "between", "on")
SIDES = ("left", "right", "front", "behind")

TEMPLATES: dict[str, list[str]] = {
    "object": [
        "Point to the {a}.",
        "Where is the {a}? Mark a few points on it.",
        "Locate the {a} in the image with some points.",
        "Pick several points that lie on the {a}.",
    ],
    "left": [
        "Point to free space on the table to the left of the {a}.",
        "Find some empty spots on the table left of the {a}.",
        "Where could something be placed on the table to the left of the {a}? Mark points there.",
    ],
    "right": [
        "Point to free space on the table to the right of the {a}.",
        "Find some empty spots on the table right of the {a}.",
        "Where could something be placed on the table to the right of the {a}? Mark points there.",
    ],
    "front": [
        "Point to free space on the table in front of the {a}.",
        "Find some empty spots on the table in front of the {a}.",
        "Where could something be placed on the table in front of the {a}? Mark points there.",
    ],
    "behind": [
        "Point to free space on the table behind the {a}.",
        "Find some empty spots on the table behind the {a}.",
        "Where could something be placed on the table behind the {a}? Mark points there.",
    ],
    "between": [
        "Point to free space on the table between the {a} and the {b}.",
        "Find some empty spots on the table between the {a} and the {b}.",
        "Where could something be placed between the {a} and the {b}? Mark points there.",
    ],
    "on": [
        "Point to a spot on the {a} where an object could be placed.",
        "Mark some points on the {a}.",
        "Where on the {a} could something be put down? Give points.",
    ],
}
SIDE_NOTE = "Left, right, in front of and behind are as seen in the image (in front = lower in the image)."
FORMAT_NOTE = (
    "Answer with a list of points [(x1, y1), (x2, y2), ...], where x and y are the column and row "
    "of each point normalised to [0, 1] by the image width and height."
)


@functools.lru_cache(maxsize=16)
def _pixel_centres(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel centres of an axis of `n` pixels at 3 decimals, and whether each stays in its pixel."""
    centres = np.round((np.arange(n) + 0.5) / n, 3)
    return centres, np.floor(centres * n) == np.arange(n)


@functools.lru_cache(maxsize=16)
def _stable_pixels(height: int, width: int) -> np.ndarray | None:
    """(H, W) mask of the pixels whose 3-decimal normalised centre still falls inside them; None = all do."""
    stable = _pixel_centres(height)[1][:, None] & _pixel_centres(width)[1][None, :]
    return None if bool(stable.all()) else stable


def erode(mask: np.ndarray, pixels: int = 1) -> np.ndarray:
    """4-neighbour binary erosion by `pixels` (pixels outside the image count as background)."""
    out = np.asarray(mask, dtype=bool)
    for _ in range(pixels):
        padded = np.pad(out, 1, constant_values=False)
        out = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return out


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))  # cheaper than nonzero(mask)
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def side_slices(
    bbox: tuple[int, int, int, int], side: str, margin: int, reach_factor: float, height: int, width: int
) -> tuple[slice, slice]:
    """(rows, cols) slices of the pixels beside an object's box (r0, r1, c0, c1 inclusive), in image terms."""
    r0, r1, c0, c1 = bbox
    reach = max(1, math.ceil(reach_factor * max(r1 - r0 + 1, c1 - c0 + 1)))
    rows, cols = slice(r0, r1 + 1), slice(c0, c1 + 1)
    if side == "left":
        return rows, slice(max(0, c0 - margin - reach), max(0, c0 - margin))
    if side == "right":
        return rows, slice(min(width, c1 + margin + 1), min(width, c1 + margin + 1 + reach))
    if side == "front":
        return slice(min(height, r1 + margin + 1), min(height, r1 + margin + 1 + reach)), cols
    if side == "behind":
        return slice(max(0, r0 - margin - reach), max(0, r0 - margin)), cols
    raise ValueError(side)


def side_region(obj_mask: np.ndarray, side: str, margin: int, reach_factor: float) -> np.ndarray:
    """Pixels beside an object's mask in image terms (see the module docstring); not limited to the table."""
    h, w = obj_mask.shape
    region = np.zeros((h, w), dtype=bool)
    region[side_slices(_bbox(obj_mask), side, margin, reach_factor, h, w)] = True
    return region


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(row, col) mean of a mask's pixels (integer sums, so exact whatever the summation order)."""
    flat = np.flatnonzero(mask)
    rows, cols = np.divmod(flat, mask.shape[1])
    return np.array([rows.mean(), cols.mean()])


def between_region(mask_a: np.ndarray, mask_b: np.ndarray) -> np.ndarray:
    """Pixels in a band around the segment joining the two masks' centroids (parameter 0.2-0.8)."""
    return band_region(mask_a.shape, (_centroid(mask_a), _centroid(mask_b)), (_bbox(mask_a), _bbox(mask_b)))


def band_region(
    shape: tuple[int, ...], centroids: tuple[np.ndarray, np.ndarray], boxes: tuple[tuple[int, int, int, int], ...]
) -> np.ndarray:
    """`between_region` from the masks' (row, col) centroids and (r0, r1, c0, c1) boxes, computed elsewhere."""
    h, w = int(shape[0]), int(shape[1])
    ca, cb = centroids
    d = cb - ca
    length2 = float(d @ d)
    if length2 < 1.0:
        return np.zeros((h, w), dtype=bool)
    half = max(2.0, 0.5 * min(min(r1 - r0 + 1, c1 - c0 + 1) for r0, r1, c0, c1 in boxes))
    # the band lies within `half` of the sub-segment [0.2, 0.8]: evaluate only that box of pixels
    ends = np.stack([ca + 0.2 * d, ca + 0.8 * d])
    r0, c0 = (max(0, math.floor(v - half) - 1) for v in ends.min(axis=0))
    r1, c1 = (math.ceil(v + half) + 2 for v in ends.max(axis=0))
    region = np.zeros((h, w), dtype=bool)
    if r0 >= min(r1, h) or c0 >= min(c1, w):
        return region
    rows, cols = np.arange(r0, min(r1, h))[:, None], np.arange(c0, min(c1, w))[None, :]
    pr, pc = rows - ca[0], cols - ca[1]
    t = (pr * d[0] + pc * d[1]) / length2
    dist = np.abs(pr * d[1] - pc * d[0]) / math.sqrt(length2)
    region[r0 : min(r1, h), c0 : min(c1, w)] = (t >= 0.2) & (t <= 0.8) & (dist <= half)
    return region


@dataclass
class RobopointConfig:
    """Options of the robopoint corpus (key=value on the command line)."""

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    per_type: int = 1  # questions per type per episode (at most)
    camera: str = "static"
    frames: int = 1  # distinct frames per episode the questions are drawn from (each frame's geometry computed once)
    min_points: int = 3
    max_points: int = 5
    erode: int = 1  # pixels removed from every target region's edge
    margin: int = 2  # free-space sides: pixels between the object's box and the region
    reach_factor: float = 3.0  # free-space sides: region depth as a multiple of the box's longer side
    min_region_pixels: int = 12  # smaller regions are not asked about
    table_id: int | None = 1  # segmentation id of the table (demo sim); the support mask's source when set
    container_category: str = "container"  # objects of this category are "on" targets
    attempts: int = 8  # (frame, object) picks tried per question before giving up
    geometry: GeometryConfig = field(default_factory=GeometryConfig)


@dataclass
class _Frame:
    """One chosen frame's geometry plus what questions derive from it, each computed at most once."""

    geometry: FrameGeometry
    eroded: dict[str, np.ndarray] = field(default_factory=dict)
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    pixels: dict[str, int] = field(default_factory=dict)
    centroids: dict[str, np.ndarray] = field(default_factory=dict)
    table: np.ndarray | None = None

    def names(self, category: str | None = None) -> list[str]:
        """Sorted object names (of `category` when given)."""
        objects = self.geometry.objects
        return sorted(n for n, o in objects.items() if category is None or o.category == category)

    def count(self, name: str) -> int:
        """Pixels in the object's mask."""
        if name not in self.pixels:
            self.pixels[name] = int(np.count_nonzero(self.geometry.objects[name].mask))
        return self.pixels[name]

    def centroid(self, name: str) -> np.ndarray:
        """(row, col) mean of the object's mask pixels."""
        if name not in self.centroids:
            self.centroids[name] = _centroid(self.geometry.objects[name].mask)
        return self.centroids[name]

    def bbox(self, name: str) -> tuple[int, int, int, int]:
        """(r0, r1, c0, c1), inclusive, of the object's mask."""
        if name not in self.boxes:
            self.boxes[name] = _bbox(self.geometry.objects[name].mask)
        return self.boxes[name]


@register_corpus("robopoint")
class RobopointBuilder(CorpusBuilder):
    """Pointing questions (objects, free table space beside/between objects, container tops)."""

    config_cls = RobopointConfig

    def __init__(self, config: RobopointConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        check_choices(self.name, "question_types", config.question_types, QUESTION_TYPES)
        if not 1 <= config.min_points <= config.max_points:
            raise ConfigError("corpus robopoint options: need 1 <= min_points <= max_points")
        if config.per_type < 0 or config.erode < 0 or config.margin < 0 or config.attempts < 1 or config.frames < 1:
            raise ConfigError("corpus robopoint options: per_type, erode, margin >= 0; attempts, frames >= 1")
        if config.reach_factor <= 0:
            raise ConfigError("corpus robopoint options: reach_factor must be > 0")
        geometry = config.geometry
        if geometry.ground_truth.support_id is None and config.table_id is not None:
            geometry = replace(geometry, ground_truth=replace(geometry.ground_truth, support_id=config.table_id))
        self.provider = GeometryProvider(geometry)

    # -- building -------------------------------------------------------------------------------
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Pointing questions about one episode; skip reasons name the type and why ("on:no_container")."""
        cfg = self.config
        result = EpisodeResult()
        camera = cfg.camera
        if camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        rng = context.rng
        chosen = np.sort(rng.choice(len(episode), size=min(cfg.frames, len(episode)), replace=False))
        frames: dict[int, _Frame] = {}
        reasons: list[str] = []
        for step in chosen.tolist():
            geometry = self.provider.frame(episode, camera, int(step))
            if isinstance(geometry, str):
                reasons.append(geometry)
            elif geometry.objects:
                frames[int(step)] = _Frame(geometry)
        if not frames:
            result.skipped.append(reasons[0] if reasons else "no_objects")
            return result
        images: dict[int, Image.Image] = {}
        for qtype in cfg.question_types:
            for asked in range(cfg.per_type):
                question = self._question(qtype, frames, rng)
                if isinstance(question, str):
                    if not asked:
                        result.skipped.append(f"{qtype}:{question}")
                    break
                frame = question["frame"]
                if frame not in images:
                    images[frame] = frame_image(episode.frames[camera][frame], self.image_size)
                question["origin"] = frames[frame].geometry.origin
                result.samples.append(self._sample(episode, qtype, question, images[frame], rng, len(result.samples)))
        return result

    def _question(self, qtype: str, frames: dict[int, _Frame], rng: np.random.Generator) -> dict[str, Any] | str:
        """A target region with its frame and object names, or a skip reason."""
        cfg = self.config
        category = cfg.container_category if qtype == "on" else None
        wanted = 2 if qtype == "between" else 1
        usable = [f for f, fr in sorted(frames.items()) if len(fr.names(category)) >= wanted]
        if not usable:
            return "no_container" if qtype == "on" else "too_few_objects"
        if qtype not in ("object", "on"):
            usable = [f for f in usable if frames[f].geometry.support is not None]
            if not usable:
                return "no_support"
        for _ in range(cfg.attempts):
            frame = usable[int(rng.integers(len(usable)))]
            entry = frames[frame]
            names = entry.names(category)
            picks = [names[i] for i in rng.permutation(len(names))[:wanted]]
            if any(entry.count(n) < cfg.min_region_pixels for n in picks):
                continue
            region, rule = self._region(qtype, picks, entry)
            if int(np.count_nonzero(region)) >= max(cfg.min_region_pixels, cfg.min_points):
                return {"frame": frame, "objects": picks, "region": region, "rule": rule}
        return "no_region"

    def _region(self, qtype: str, picks: list[str], entry: _Frame) -> tuple[np.ndarray, dict[str, Any]]:
        """The target pixels of one question and the rule's parameters (per-frame masks cached in `entry`)."""
        cfg = self.config
        objects = entry.geometry.objects
        if qtype in ("object", "on"):
            if picks[0] not in entry.eroded:
                entry.eroded[picks[0]] = erode(objects[picks[0]].mask, cfg.erode)
            return entry.eroded[picks[0]], {"erode": cfg.erode}
        if entry.table is None:
            assert entry.geometry.support is not None
            entry.table = erode(entry.geometry.support, cfg.erode)
        table = entry.table
        if qtype == "between":
            band = band_region(
                table.shape, (entry.centroid(picks[0]), entry.centroid(picks[1])), tuple(entry.bbox(n) for n in picks)
            )
            return table & band, {"erode": cfg.erode, "band": [0.2, 0.8]}
        bbox = entry.bbox(picks[0])
        rule = {"erode": cfg.erode, "margin": cfg.margin, "reach_factor": cfg.reach_factor, "bbox": list(bbox)}
        region = np.zeros_like(table)
        window = side_slices(bbox, qtype, cfg.margin, cfg.reach_factor, *table.shape)
        region[window] = table[window]
        return region, rule

    def _sample(
        self,
        episode: Episode,
        qtype: str,
        q: dict[str, Any],
        image: Image.Image,
        rng: np.random.Generator,
        index: int,
    ) -> Sample:
        cfg = self.config
        region: np.ndarray = q["region"]
        h, w = region.shape
        col_x, _ = _pixel_centres(w)
        row_y, _ = _pixel_centres(h)
        # 3 decimals move a point by up to 0.0005 of the image: keep pixels whose rounded point stays inside
        stable = _stable_pixels(h, w)
        keep = np.flatnonzero(region if stable is None else region & stable)  # row-major, like argwhere
        k = int(rng.integers(cfg.min_points, cfg.max_points + 1))
        chosen = np.sort(rng.choice(keep, size=min(k, len(keep)), replace=False))
        points = [(float(col_x[i % w]), float(row_y[i // w])) for i in chosen.tolist()]
        template = int(rng.integers(len(TEMPLATES[qtype])))
        names = q["objects"]
        question = TEMPLATES[qtype][template].format(a=names[0], b=names[-1])
        notes = [SIDE_NOTE] if qtype in SIDES else []
        text = " ".join([question, *notes, FORMAT_NOTE])
        meta = {
            "corpus": self.name,
            "question_type": qtype,
            "template": f"{qtype}/{template}",
            "objects": list(names),
            "frame": int(q["frame"]),
            "camera": cfg.camera,
            "episode_id": episode.episode_id,
            "frame_size": [h, w],
            "image_size": [image.size[0], image.size[1]],
            "points": [[x, y] for x, y in points],
            "region": rle_encode(region),
            "rule": q["rule"],
            "geometry": q.get("origin", "ground_truth"),
        }
        return Sample(
            key=sample_key(self.name, episode, index),
            messages=[user_turn(text), assistant_turn(format_points(points))],
            images=[image],
            task=f"{self.name}/{qtype}",
            source=episode.source,
            meta=meta,
        )

    # -- checking -------------------------------------------------------------------------------
    def verify(self, sample: Sample) -> bool:
        """Every point of the answer text lies in the recorded region, and the question names the objects."""
        try:
            meta = sample.meta
            answer = message_text(sample, "assistant")
            if meta.get("question_type") == "imported":  # published rows: only the answer's form is checked
                groups = parse_tuples(answer)
                if meta.get("answer_kind") == "text":
                    return bool(answer.strip())
                size = 2 if meta.get("answer_kind") == "points" else 4
                return bool(groups) and all(len(g) == size and all(0.0 <= v <= 1.0 for v in g) for g in groups)
            points = parse_points(answer)
            if not points:
                return False
            region = rle_decode(meta["region"])
            h, w = region.shape
            question = message_text(sample, "user")
            return (
                all(0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 for x, y in points)
                and all(bool(region[point_pixel(x, y, h, w)]) for x, y in points)
                and all(name in question for name in meta["objects"])
                and len(sample.images) == 1
            )
        except (KeyError, IndexError, TypeError, ValueError):
            return False
