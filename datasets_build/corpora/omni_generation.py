"""`omni_generation`: image -> target image pairs (depth maps, segmentation maps, future frames, images).

The paper's Omni-Generation data: a diffusion head attached to the VLM learns to generate a depth map, a
semantic segmentation map, the next image of the scene or the image itself from the VLM's query tokens.
Each sample is one user turn (the input frame + an instruction from several wordings per type), one
assistant turn holding a fixed textual marker (`MARKERS`, so that a text-only model has an answer) and
the target image in `Sample.target`, written as a PNG in `{key}.targets.npy`. General VQA rows are mixed in by the
`vqa_mix` mixer, not here.

Every target has the resolution of the resized input image (`frame_image`, longer side `image_size`):

- `depth`: the frame's depth, resized by NEAREST NEIGHBOUR at pixel centres (target pixel (r, c) takes
  source pixel (floor((r + 0.5) H / h), floor((c + 0.5) W / w)), see `resize_nearest`), so no value is
  ever mixed across an object edge and valid / invalid pixels stay as they were. Ground truth comes from
  `episode.depth[camera]` (demo sim, CALVIN); sources without depth use the estimated path's metric
  monocular depth (`GeometryProvider(...).estimator.metric_depth` on the resized input image) unless
  `geometry.mode=ground_truth`, and `meta["depth_origin"]` says which. Encodings (`depth_encoding`):
  `png16_mm` (default) is a 16-bit grayscale PNG (PIL mode "I;16") of round(depth / 1 mm), 0 = invalid
  (not finite, <= 0, rounding to 0 mm, or beyond 65.535 m); `colormap` is an RGB PNG of matplotlib's
  256-entry `turbo` colour map over [`depth_near`, `depth_far`] metres: level i = round(255 (d - near) /
  (far - near)) with d clipped to the range, pure black (0, 0, 0) = invalid; the inverse maps each colour
  to its nearest entry and returns near + i (far - near) / 255. `decode_depth_target` inverts both.
- `segmentation`: an RGB PNG of semantic classes in the FIXED palette `PALETTE` (version
  `PALETTE_VERSION`): background, table, robot, the demo sim's and CALVIN's named objects (coloured
  blocks, tray, plate) and catch-alls for other blocks, containers and objects (`object_class`). Labels
  come from `episode.segmentation` when the camera has one (the demo sim; `table_id` / `robot_id` name
  the table's and robot's ids, the objects their `segmentation_id`), else from ground-truth
  `FrameGeometry` masks (CALVIN's block boxes back-projected from depth; its support mask is the table),
  resized by nearest neighbour like depth. Estimated masks are never used: only detected, named objects
  would be labelled and everything else would read as background. `legend` puts the present classes'
  colours in the question (`present`), the whole palette (`all`) or none.
- `future_frame`: frame t + the instruction active at t -> frame t + `future_offset` of the same camera
  (both through `frame_image`); t is drawn from the steps that have such a future.
- `image`: frame t -> the same frame (reconstruction / unconditional scene generation).

Frames: `frames_per_episode` distinct steps are drawn once per episode for depth, segmentation and image,
and as many again (among steps < T - `future_offset`) for future frames. Skips are counted per (type,
frame) as "<type>:<why>": `depth:no_depth`, `depth:size_mismatch`, `depth:no_valid_depth`,
`segmentation:no_segmentation`, `segmentation:no_masks`, `segmentation:no_objects`,
`future_frame:beyond_end`, `future_frame:no_instruction`, or `no_camera` for the whole episode.

`meta` records the target's size, mode and a digest of its pixels, and per type the facts `verify`
re-derives from the target alone: depth encoding / scale / range and min, max, mean valid depth (mm)
with the valid pixel count; the palette version, legend and per-class pixel counts; the frame indices.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from PIL import Image

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
from datasets_build.sample import Sample, assistant_turn, user_turn

QUESTION_TYPES = ("depth", "segmentation", "future_frame", "image")
DEPTH_ENCODINGS = ("png16_mm", "colormap")
LEGENDS = ("none", "present", "all")
MARKERS: dict[str, str] = {
    "depth": "<depth_map>",
    "segmentation": "<segmentation_map>",
    "future_frame": "<future_frame>",
    "image": "<generated_image>",
}

TEMPLATES: dict[str, list[str]] = {
    "depth": [
        "Generate the depth map of this image.",
        "Predict how far every pixel of this image is from the camera, as a depth map.",
        "Produce a depth image for this scene.",
        "Estimate the depth of the scene and draw it as a depth map.",
    ],
    "segmentation": [
        "Generate the semantic segmentation map of this image.",
        "Segment this scene: colour every pixel by its class.",
        "Produce a segmentation map of the objects, the table and the robot in this image.",
        "Label each pixel of this image with its semantic class as a colour map.",
    ],
    "future_frame": [
        "The robot is told: '{instruction}'. Generate the camera image {offset} steps later.",
        "Task: {instruction}. Predict what this view will look like after {offset} more steps.",
        "Imagine the next frames while the robot does this: {instruction}. Draw the frame {offset} steps ahead.",
    ],
    "image": [
        "Reconstruct this image.",
        "Generate the same scene as in this image.",
        "Redraw this camera view.",
        "Reproduce this image as closely as you can.",
    ],
}

# --- depth encodings ---------------------------------------------------------------------------------

MM = 0.001  # metres per unit of the png16_mm encoding
MAX_MM = int(np.iinfo(np.uint16).max)  # 65535 mm = 65.535 m; farther depth is written as invalid (0)
COLORMAP = "turbo"
COLORMAP_LEVELS = 256
INVALID_COLOUR = (0, 0, 0)  # colormap encoding's invalid pixels (turbo has no black entry)

# --- segmentation palette (FIXED: never reorder or recolour, add a new version instead) ----------------

PALETTE_VERSION = "omni-seg-v1"
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("background", (0, 0, 0)),
    ("table", (128, 128, 128)),
    ("robot", (255, 255, 255)),
    ("red block", (230, 25, 75)),
    ("green block", (60, 180, 75)),
    ("blue block", (0, 130, 200)),
    ("yellow block", (255, 225, 25)),
    ("purple block", (145, 30, 180)),
    ("orange block", (245, 130, 48)),
    ("pink block", (240, 50, 230)),
    ("tray", (170, 110, 40)),
    ("plate", (70, 240, 240)),
    ("other block", (128, 128, 0)),
    ("other container", (0, 0, 128)),
    ("other object", (255, 215, 180)),
)
CLASSES: tuple[str, ...] = tuple(name for name, _ in PALETTE)
BACKGROUND, TABLE, ROBOT = 0, 1, 2
_CATCH_ALL = {"block": "other block", "container": "other container"}


def segmentation_palette() -> dict[str, tuple[int, int, int]]:
    """The fixed class -> RGB colour legend of segmentation targets (`PALETTE_VERSION`), in class order."""
    return dict(PALETTE)


def object_class(name: str, category: str = "") -> str:
    """The palette class of a scene object: its own name when the palette has it, else its category's catch-all."""
    key = name.strip().lower()
    if key in CLASSES[ROBOT + 1 :]:
        return key
    return _CATCH_ALL.get(category.strip().lower(), "other object")


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, ...) -> (height, width, ...) by nearest neighbour at pixel centres.

    Row r takes source row floor((r + 0.5) H / height), column c likewise; no values are mixed.
    """
    h, w = array.shape[:2]
    if (h, w) == (height, width):
        return array
    rows = np.minimum(h - 1, ((np.arange(height) + 0.5) * h / height).astype(np.int64))
    cols = np.minimum(w - 1, ((np.arange(width) + 0.5) * w / width).astype(np.int64))
    return array[rows[:, None], cols[None, :]]


@functools.cache
def _colormap_lut() -> np.ndarray:
    """uint8 (256, 3): matplotlib's turbo sampled at its 256 entries."""
    import matplotlib as mpl

    cmap = mpl.colormaps[COLORMAP].resampled(COLORMAP_LEVELS)
    return np.round(cmap(np.arange(COLORMAP_LEVELS))[:, :3] * 255).astype(np.uint8)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> (...) int64 keys r * 65536 + g * 256 + b."""
    c = rgb.astype(np.int64)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def _colour_index(image: np.ndarray, colours: np.ndarray, nearest: bool) -> np.ndarray:
    """Per pixel of an (H, W, 3) image, the index of its colour in `colours` (K, 3); -1 off-table unless `nearest`."""
    keys = _pack(colours)
    order = np.argsort(keys)
    pixels = _pack(image)
    pos = np.clip(np.searchsorted(keys[order], pixels), 0, len(keys) - 1)
    found = keys[order][pos] == pixels
    out = np.where(found, order[pos], -1)
    if nearest and not found.all():
        missing, inverse = np.unique(pixels[~found], return_inverse=True)
        rgb = np.stack([(missing >> 16) & 255, (missing >> 8) & 255, missing & 255], axis=1)
        dist = ((rgb[:, None, :] - colours[None, :, :].astype(np.int64)) ** 2).sum(axis=2)
        out[~found] = np.argmin(dist, axis=1)[inverse.ravel()]
    return out


def encode_depth_target(
    depth_m: np.ndarray, encoding: str = "png16_mm", near: float = 0.0, far: float = 5.0
) -> Image.Image:
    """A float (H, W) depth map in metres as a target image (module docstring: "I;16" millimetres or turbo RGB).

    Invalid pixels (not finite or <= 0) become 0 / black; `near` and `far` (metres) only matter for `colormap`.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    if encoding == "png16_mm":
        mm = np.round(np.where(valid, depth, 0.0) / MM)
        mm[~valid | (mm > MAX_MM)] = 0
        return Image.fromarray(mm.astype(np.uint16))
    if encoding == "colormap":
        if not far > near:
            raise ValueError(f"colormap needs far > near, got [{near}, {far}]")
        scaled = (np.clip(np.where(valid, depth, near), near, far) - near) / (far - near)
        levels = np.round(scaled * (COLORMAP_LEVELS - 1)).astype(np.int64)
        rgb = _colormap_lut()[levels]
        rgb[~valid] = INVALID_COLOUR
        return Image.fromarray(rgb)
    raise ValueError(f"unknown depth encoding {encoding!r}; known {DEPTH_ENCODINGS}")


def decode_depth_target(image: Image.Image, meta: Mapping[str, Any]) -> np.ndarray:
    """Inverse of `encode_depth_target`: float32 (H, W) metres, NaN where invalid.

    `meta` gives `depth_encoding` (default png16_mm) and, for `colormap`, `depth_near_m` / `depth_far_m`;
    colours off the colour map (a generated image) take the nearest entry (or black = invalid).
    """
    encoding = str(meta.get("depth_encoding", "png16_mm"))
    if encoding == "png16_mm":
        image = normalise_target(image)
        if image.mode != "I;16":
            raise ValueError(f"png16_mm depth needs a 16-bit grayscale image, got mode {image.mode}")
        units = np.asarray(image).astype(np.float64)
        return np.where(units > 0, units * MM, np.nan).astype(np.float32)
    if encoding == "colormap":
        near, far = float(meta["depth_near_m"]), float(meta["depth_far_m"])
        table = np.concatenate([_colormap_lut(), np.asarray([INVALID_COLOUR], dtype=np.uint8)])
        index = _colour_index(np.asarray(image.convert("RGB")), table, nearest=True)
        depth = near + index.astype(np.float64) * (far - near) / (COLORMAP_LEVELS - 1)
        return np.where(index < COLORMAP_LEVELS, depth, np.nan).astype(np.float32)
    raise ValueError(f"unknown depth encoding {encoding!r}; known {DEPTH_ENCODINGS}")


def depth_statistics(depth_m: np.ndarray) -> dict[str, Any]:
    """Min / max / mean valid depth in millimetres (2 decimals) and the valid pixel count and fraction."""
    valid = np.isfinite(depth_m)
    count = int(valid.sum())
    values = depth_m[valid].astype(np.float64) * 1000.0
    stats: dict[str, Any] = {"valid_pixels": count, "valid_fraction": round(count / max(1, depth_m.size), 6)}
    if count:
        stats.update(
            min_mm=round(float(values.min()), 2),
            max_mm=round(float(values.max()), 2),
            mean_mm=round(float(values.mean()), 2),
        )
    return stats


def encode_segmentation_target(classes: np.ndarray) -> Image.Image:
    """An (H, W) map of palette class indices as an RGB target image in the fixed palette."""
    colours = np.asarray([c for _, c in PALETTE], dtype=np.uint8)
    index = np.asarray(classes)
    if index.min(initial=0) < 0 or index.max(initial=0) >= len(PALETTE):
        raise ValueError(f"class indices must lie in [0, {len(PALETTE)})")
    return Image.fromarray(colours[index])


def decode_segmentation_target(image: Image.Image, nearest: bool = False) -> np.ndarray:
    """(H, W) int64 palette class indices of a segmentation target; -1 for off-palette colours unless `nearest`."""
    colours = np.asarray([c for _, c in PALETTE], dtype=np.uint8)
    return _colour_index(np.asarray(image.convert("RGB")), colours, nearest)


def class_counts(classes: np.ndarray) -> dict[str, int]:
    """Pixels per palette class present in an (H, W) class-index map, in palette order."""
    counts = np.bincount(classes[classes >= 0].ravel(), minlength=len(PALETTE))
    return {CLASSES[i]: int(n) for i, n in enumerate(counts) if n}


def legend_text(classes: list[str]) -> str:
    """The question's colour legend: "Colours: table (128, 128, 128); red block (230, 25, 75)."."""
    palette = segmentation_palette()
    return "Colours: " + "; ".join(f"{name} {palette[name]}" for name in classes) + "."


def normalise_target(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale target read back as mode "I" / "I;16B" (older Pillow) as mode "I;16"; others unchanged."""
    if image.mode not in ("I", "I;16B", "I;16L"):
        return image
    values = np.asarray(image)
    if values.min(initial=0) < 0 or values.max(initial=0) > MAX_MM:
        raise ValueError(f"a 16-bit target holds values in [0, {MAX_MM}]")
    return Image.fromarray(values.astype(np.uint16))


def target_digest(image: Image.Image) -> str:
    """sha256 (16 hex digits) of a target's mode, size and pixel bytes: the same before and after PNG."""
    image = normalise_target(image)
    head = f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode()
    return hashlib.sha256(head + np.ascontiguousarray(np.asarray(image)).tobytes()).hexdigest()[:16]


# --- the builder ---------------------------------------------------------------------------------------


@dataclass
class OmniGenerationConfig:
    """Options of the omni_generation corpus (key=value on the command line)."""

    question_types: list[str] = field(default_factory=lambda: list(QUESTION_TYPES))
    camera: str = "static"
    frames_per_episode: int = 2  # distinct steps per episode (per type; future frames draw their own)
    depth_encoding: str = "png16_mm"  # or "colormap"
    depth_near: float = 0.0  # metres: the colormap's first entry
    depth_far: float = 5.0  # metres: the colormap's last entry
    future_offset: int = 10  # steps between the input frame and the future target
    table_id: int | None = 1  # segmentation id of the table (demo sim); also the ground-truth support id
    robot_id: int | None = 2  # segmentation id of the robot (demo sim)
    legend: str = "present"  # colour legend in segmentation questions: none | present | all
    geometry: GeometryConfig = field(default_factory=GeometryConfig)


@register_corpus("omni_generation")
class OmniGenerationBuilder(CorpusBuilder):
    """Depth maps, segmentation maps, future frames and images as generation targets of one camera."""

    config_cls = OmniGenerationConfig

    def __init__(self, config: OmniGenerationConfig, image_size: int = 224) -> None:
        super().__init__(config, image_size)
        where = "corpus omni_generation options"
        check_choices(self.name, "question_types", config.question_types, QUESTION_TYPES)
        if config.depth_encoding not in DEPTH_ENCODINGS:
            raise ConfigError(f"{where}: depth_encoding {config.depth_encoding!r} not one of {DEPTH_ENCODINGS}")
        if config.legend not in LEGENDS:
            raise ConfigError(f"{where}: legend {config.legend!r} not one of {LEGENDS}")
        if config.frames_per_episode < 1 or config.future_offset < 1:
            raise ConfigError(f"{where}: frames_per_episode and future_offset must be >= 1")
        if not 0.0 <= config.depth_near < config.depth_far:
            raise ConfigError(f"{where}: need 0 <= depth_near < depth_far")
        geometry = config.geometry
        if geometry.ground_truth.support_id is None and config.table_id is not None:
            geometry = replace(geometry, ground_truth=replace(geometry.ground_truth, support_id=config.table_id))
        self.provider = GeometryProvider(geometry)  # depth: ground truth, or the estimator's metric depth
        self.masks = GeometryProvider(replace(geometry, mode="ground_truth"))  # segmentation: never estimated

    # -- building -------------------------------------------------------------------------------
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Generation samples of one episode's camera; skip reasons name the type and why ("depth:no_depth")."""
        cfg = self.config
        result = EpisodeResult()
        if cfg.camera not in episode.frames:
            result.skipped.append("no_camera")
            return result
        rng = context.rng
        length = len(episode)
        steps = np.sort(rng.choice(length, size=min(cfg.frames_per_episode, length), replace=False)).tolist()
        images: dict[int, Image.Image] = {}

        def image_at(step: int) -> Image.Image:
            """The resized input image of `step`, made once per episode."""
            if step not in images:
                images[step] = frame_image(episode.frames[cfg.camera][step], self.image_size)
            return images[step]

        for qtype in cfg.question_types:
            if qtype == "future_frame":
                horizon = length - cfg.future_offset
                if horizon < 1:
                    result.skipped.append("future_frame:beyond_end")
                    continue
                chosen = np.sort(rng.choice(horizon, size=min(cfg.frames_per_episode, horizon), replace=False))
            else:
                chosen = np.asarray(steps)
            for step in chosen.tolist():
                made = self._target(qtype, episode, int(step), image_at)
                if isinstance(made, str):
                    result.skipped.append(f"{qtype}:{made}")
                    continue
                target, facts, fill = made
                index = len(result.samples)
                result.samples.append(
                    self._sample(episode, qtype, int(step), image_at(int(step)), target, facts, fill, rng, index)
                )
        return result

    def _target(
        self, qtype: str, episode: Episode, step: int, image_at: Callable[[int], Image.Image]
    ) -> tuple[Image.Image, dict[str, Any], dict[str, Any]] | str:
        """(target, meta facts, template fields) of one question, or a skip reason."""
        image = image_at(step)
        if qtype == "depth":
            return self._depth(episode, step, image)
        if qtype == "segmentation":
            return self._segmentation(episode, step, image)
        if qtype == "future_frame":
            instruction = _instruction_at(episode, step)
            if not instruction:
                return "no_instruction"
            later = step + self.config.future_offset
            facts = {"target_frame": later, "future_offset": self.config.future_offset, "instruction": instruction}
            return image_at(later).copy(), facts, {"instruction": instruction, "offset": self.config.future_offset}
        return image.copy(), {"target_frame": step}, {}

    def _depth(
        self, episode: Episode, step: int, image: Image.Image
    ) -> tuple[Image.Image, dict[str, Any], dict[str, Any]] | str:
        """The encoded depth target at the input image's size (ground truth, else estimated) and its facts."""
        cfg = self.config
        w, h = image.size
        mode = self.provider.config.mode
        if mode != "estimated" and cfg.camera in episode.depth:
            raw = np.asarray(episode.depth[cfg.camera][step], dtype=np.float64)
            if raw.shape != episode.frames[cfg.camera].shape[1:3]:
                return "size_mismatch"
            depth, origin = resize_nearest(raw, h, w), "ground_truth"
        elif mode == "ground_truth":
            return "no_depth"
        else:
            depth, origin = self.provider.estimator.metric_depth(np.asarray(image.convert("RGB"))), "estimated"
        facts: dict[str, Any] = {"depth_encoding": cfg.depth_encoding, "depth_origin": origin, "resize": "nearest"}
        if cfg.depth_encoding == "png16_mm":
            facts.update(depth_scale_m=MM, invalid_value=0, depth_max_m=MAX_MM * MM)
        else:
            facts.update(
                colormap=COLORMAP,
                colormap_levels=COLORMAP_LEVELS,
                depth_near_m=cfg.depth_near,
                depth_far_m=cfg.depth_far,
                invalid_colour=list(INVALID_COLOUR),
            )
        target = encode_depth_target(depth, cfg.depth_encoding, cfg.depth_near, cfg.depth_far)
        stats = depth_statistics(decode_depth_target(target, facts))
        if not stats["valid_pixels"]:
            return "no_valid_depth"
        facts["depth_stats"] = stats
        return target, facts, {}

    def _segmentation(
        self, episode: Episode, step: int, image: Image.Image
    ) -> tuple[Image.Image, dict[str, Any], dict[str, Any]] | str:
        """The palette-coloured class map at the input image's size, its legend and class pixel counts."""
        cfg = self.config
        w, h = image.size
        labelled = self._class_map(episode, step)
        if isinstance(labelled, str):
            return labelled
        classes, origin, objects = labelled
        classes = resize_nearest(classes, h, w)
        counts = class_counts(classes)
        if not any(CLASSES.index(name) > ROBOT for name in counts):
            return "no_objects"
        legend = _legend_classes(cfg.legend, counts)
        palette = segmentation_palette()
        facts = {
            "palette_version": PALETTE_VERSION,
            "segmentation_origin": origin,
            "resize": "nearest",
            "legend_mode": cfg.legend,
            "legend": [[name, list(palette[name])] for name in legend],
            "class_pixels": counts,
            "object_classes": objects,
        }
        return encode_segmentation_target(classes), facts, {}

    def _class_map(self, episode: Episode, step: int) -> tuple[np.ndarray, str, dict[str, str]] | str:
        """(H, W) palette class indices at the frame's resolution, their origin and object -> class, or a reason."""
        cfg = self.config
        frame_shape = episode.frames[cfg.camera].shape[1:3]
        seg = episode.segmentation.get(cfg.camera)
        with_ids = {n: o for n, o in sorted(episode.objects.items()) if o.segmentation_id is not None}
        if seg is not None and with_ids and seg.shape[1:] == frame_shape:
            ids = seg[step]
            classes = np.full(ids.shape, BACKGROUND, dtype=np.int64)
            if cfg.table_id is not None:
                classes[ids == cfg.table_id] = TABLE
            if cfg.robot_id is not None:
                classes[ids == cfg.robot_id] = ROBOT
            objects = {n: object_class(n, o.category) for n, o in with_ids.items()}
            for name, info in with_ids.items():
                classes[ids == info.segmentation_id] = CLASSES.index(objects[name])
            return classes, "segmentation", objects
        if cfg.camera not in episode.depth:
            return "no_segmentation"
        geometry = self.masks.frame(episode, cfg.camera, step)
        if isinstance(geometry, str):
            return geometry
        classes = np.full(frame_shape, BACKGROUND, dtype=np.int64)
        if geometry.support is not None:
            classes[geometry.support] = TABLE
        objects = {}
        for name, obj in sorted(geometry.objects.items()):
            objects[name] = object_class(name, obj.category)
            classes[obj.mask] = CLASSES.index(objects[name])
        return classes, "geometry", objects

    def _sample(
        self,
        episode: Episode,
        qtype: str,
        step: int,
        image: Image.Image,
        target: Image.Image,
        facts: dict[str, Any],
        fill: dict[str, Any],
        rng: np.random.Generator,
        index: int,
    ) -> Sample:
        """One sample: the input image + a drawn wording, the type's marker as the answer, the target and meta."""
        template = int(rng.integers(len(TEMPLATES[qtype])))
        text = TEMPLATES[qtype][template].format(**fill)
        if qtype == "segmentation" and facts["legend"]:
            text = f"{text} {legend_text([name for name, _ in facts['legend']])}"
        h, w = episode.frames[self.config.camera].shape[1:3]
        meta = {
            "corpus": self.name,
            "question_type": qtype,
            "template": f"{qtype}/{template}",
            "episode_id": episode.episode_id,
            "camera": self.config.camera,
            "frame": step,
            "frame_size": [int(h), int(w)],
            "image_size": [image.size[0], image.size[1]],
            "marker": MARKERS[qtype],
            "target_size": [target.size[0], target.size[1]],
            "target_mode": target.mode,
            "target_sha256": target_digest(target),
            **facts,
        }
        return Sample(
            key=sample_key(self.name, episode, index),
            messages=[user_turn(text), assistant_turn(MARKERS[qtype])],
            images=[image],
            task=f"{self.name}/{qtype}",
            source=episode.source,
            meta=meta,
            target=target,
            image_format="jpg",
        )

    # -- checking -------------------------------------------------------------------------------
    def verify(self, sample: Sample) -> bool:
        """The target exists with the recorded size, mode and pixels, its statistics match meta, the marker the type."""
        try:
            meta = sample.meta
            qtype = meta["question_type"]
            if sample.target is None or len(sample.images) != 1:
                return False
            target = normalise_target(sample.target)
            if message_text(sample, "assistant") != MARKERS[qtype] or meta["marker"] != MARKERS[qtype]:
                return False
            if list(target.size) != meta["target_size"] or list(sample.images[0].size) != meta["target_size"]:
                return False
            if target.mode != meta["target_mode"] or target_digest(target) != meta["target_sha256"]:
                return False
            question = message_text(sample, "user")
            if qtype == "depth":
                return _depth_ok(target, meta)
            if qtype == "segmentation":
                return _segmentation_ok(target, meta, question)
            if qtype == "future_frame":
                return (
                    meta["target_frame"] - meta["frame"] == meta["future_offset"] >= 1
                    and meta["instruction"] in question
                    and target.mode == "RGB"
                )
            if qtype == "image":
                diff = np.abs(
                    np.asarray(target, dtype=np.int16) - np.asarray(sample.images[0].convert("RGB"), np.int16)
                )
                return meta["target_frame"] == meta["frame"] and float(diff.mean()) <= _JPEG_TOLERANCE
            return False
        except (KeyError, IndexError, TypeError, ValueError):
            return False


_JPEG_TOLERANCE = 8.0  # mean absolute 8-bit difference allowed between a JPEG input and its PNG reconstruction


def _depth_ok(target: Image.Image, meta: Mapping[str, Any]) -> bool:
    """The target decodes to the recorded valid count and min / max / mean depth (within 1 mm)."""
    expected_mode = "RGB" if meta["depth_encoding"] == "colormap" else "I;16"
    if target.mode != expected_mode:
        return False
    stats = depth_statistics(decode_depth_target(target, meta))
    recorded = meta["depth_stats"]
    if stats["valid_pixels"] != recorded["valid_pixels"] or not stats["valid_pixels"]:
        return False
    return all(abs(stats[k] - recorded[k]) <= 1.0 for k in ("min_mm", "max_mm", "mean_mm"))


def _segmentation_ok(target: Image.Image, meta: Mapping[str, Any], question: str) -> bool:
    """Every colour is in the palette, class pixel counts match meta, and the question's legend is the recorded one."""
    if meta["palette_version"] != PALETTE_VERSION or target.mode != "RGB":
        return False
    classes = decode_segmentation_target(target)
    if (classes < 0).any() or class_counts(classes) != meta["class_pixels"]:
        return False
    palette = segmentation_palette()
    names = [name for name, _ in meta["legend"]]
    if any(palette[name] != tuple(colour) for name, colour in meta["legend"]):
        return False
    if names != _legend_classes(meta["legend_mode"], meta["class_pixels"]):
        return False
    return not names or legend_text(names) in question


def _legend_classes(mode: str, counts: Mapping[str, int]) -> list[str]:
    """The classes a question's legend lists, in palette order: none, those present in the target, or all."""
    if mode == "none":
        return []
    if mode == "present":
        return [name for name in CLASSES if counts.get(name)]
    if mode == "all":
        return list(CLASSES)
    raise ValueError(f"unknown legend mode {mode!r}")


def _instruction_at(episode: Episode, step: int) -> str:
    """The language window's instruction covering `step`, else the episode's instruction ("" if none)."""
    for window in episode.language:
        if window.start <= step < window.end and window.instruction:
            return window.instruction
    return episode.instruction
