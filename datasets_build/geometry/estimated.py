"""Frame geometry estimated from an RGB image alone, the VQASynth way, through transformers models.

Open-vocabulary detection of the named objects (OWLv2 by default: the best box per name above
`detection_threshold`), a mask per detected box (SAM with box prompts, kept inside its box), metric
monocular depth (Depth Anything V2 metric by default: metres from `predicted_depth`, resized to the
image), back-projection with the source's intrinsics or a pinhole of horizontal `fov_deg`, a RANSAC fit
of the support plane whose normal (turned toward the camera) becomes canonical +z, then per-object point
clouds in the canonical frame (`datasets_build.geometry.scene`). Models are chosen by Hub id or folder,
resolved through the Hugging Face cache and loaded once per estimator, on first use.

Skip reasons: `no_object_names`, `no_detections`, `no_masks` (no mask, or none with `min_pixels` valid
depth pixels), `no_depth` (fewer than three valid depth pixels), `no_support_plane`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from datasets_build.camera import CameraModel
from datasets_build.errors import ConfigError
from datasets_build.geometry.scene import (
    FrameGeometry,
    ObjectGeometry,
    apply,
    canonical_from_camera,
    mask_box,
    subsample,
)

DETECTOR_TYPES = ("owlv2", "owlvit")  # zero-shot detectors whose outputs are per-query logits and cxcywh boxes


@dataclass
class EstimatedOptions:
    """Models and thresholds of the estimated-geometry path."""

    detector: str = "google/owlv2-base-patch16-ensemble"
    segmenter: str = "facebook/sam-vit-base"
    depth: str = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
    device: str = "cpu"
    detection_threshold: float = 0.1
    fov_deg: float = 60.0  # horizontal field of view assumed when the source has no intrinsics
    min_pixels: int = 12
    max_points: int = 2048
    plane_iterations: int = 200  # RANSAC iterations for the support plane
    plane_tolerance: float = 0.01  # metres
    seed: int = 0  # RANSAC generator seed (deterministic output)
    plane_sample: int = 4096  # points on which RANSAC hypotheses are scored (the final fit uses all)

    def __post_init__(self) -> None:
        if not 0.0 <= self.detection_threshold <= 1.0:
            raise ConfigError(f"geometry.estimated.detection_threshold: {self.detection_threshold} not in [0, 1]")
        if not 0.0 < self.fov_deg < 180.0:
            raise ConfigError(f"geometry.estimated.fov_deg: {self.fov_deg} not in (0, 180)")
        if self.plane_iterations < 1 or self.plane_tolerance <= 0 or self.plane_sample < 3:
            raise ConfigError("geometry.estimated: plane_iterations >= 1, plane_tolerance > 0, plane_sample >= 3")
        if self.min_pixels < 1 or self.max_points < 1:
            raise ConfigError("geometry.estimated: min_pixels and max_points must be >= 1")


@dataclass(frozen=True)
class Detection:
    """The best box of one object name: (x0, y0, x1, y1) pixels clipped to the image, and its score."""

    name: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class PlaneFit:
    """A plane n . p + d = 0 (unit `normal`), and which of the fitted points lie within the tolerance."""

    normal: np.ndarray
    offset: float
    inliers: np.ndarray  # bool (N,)


@dataclass
class _Models:
    """The three loaded models with their processors."""

    detector: Any
    detector_processor: Any
    detector_type: str
    segmenter: Any
    segmenter_processor: Any
    depth: Any
    depth_processor: Any


# ---- geometry helpers (no models) ---------------------------------------------------------------


def pinhole_intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """3x3 intrinsics of a pinhole with horizontal field of view `fov_deg`, square pixels, centred."""
    focal = width / (2.0 * np.tan(np.deg2rad(fov_deg) / 2.0))
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def intrinsics_for(camera: CameraModel | None, width: int, height: int, fov_deg: float) -> np.ndarray:
    """The camera's intrinsics rescaled to a (width, height) image, or a pinhole of `fov_deg` without one."""
    if camera is None:
        return pinhole_intrinsics(width, height, fov_deg)
    k = camera.intrinsics.copy()
    k[0] *= width / camera.width
    k[1] *= height / camera.height
    return k


def backproject(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Depth map (H, W) metres -> camera-frame points (H*W, 3), row-major, pixel centres (OpenCV axes)."""
    h, w = depth.shape
    return CameraModel(intrinsics, np.eye(4), w, h).unproject(depth)


def _plane_through(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (K, 3) and offsets (K,) of the planes through K point triplets (K, 3, 3); zero if degenerate."""
    normals = np.cross(points[:, 1] - points[:, 0], points[:, 2] - points[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    ok = norms > 1e-12
    normals[ok] /= norms[ok, None]
    normals[~ok] = 0.0
    return normals, -np.einsum("kj,kj->k", normals, points[:, 0])


def _refine(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares plane through `points` (N >= 3): the centred cloud's least singular direction."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    normal = vt[-1]
    return normal, float(-normal @ centre)


def fit_plane(
    points: np.ndarray, iterations: int, tolerance: float, rng: np.random.Generator, sample: int = 4096
) -> PlaneFit | None:
    """RANSAC plane of the (N, 3) `points`: hypotheses from random triplets scored on a subsample of
    `sample` points, the best refined by least squares on all its inliers (twice). None below 3 points."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) < 3:
        return None
    scored = points if len(points) <= sample else points[np.sort(rng.choice(len(points), sample, replace=False))]
    triplets = scored[rng.integers(0, len(scored), size=(iterations, 3))]
    normals, offsets = _plane_through(triplets)
    counts = np.zeros(iterations, dtype=np.int64)
    for start in range(0, iterations, 64):  # bounded memory: 64 hypotheses x sample points at a time
        part = slice(start, start + 64)
        distances = np.abs(scored @ normals[part].T + offsets[part])
        counts[part] = (distances <= tolerance).sum(axis=0)
    counts[np.linalg.norm(normals, axis=1) == 0] = -1
    best = int(np.argmax(counts))
    if counts[best] < 3:
        return None
    normal, offset = normals[best], float(offsets[best])
    inliers = np.abs(points @ normal + offset) <= tolerance
    for _ in range(2):
        if inliers.sum() < 3:
            break
        normal, offset = _refine(points[inliers])
        inliers = np.abs(points @ normal + offset) <= tolerance
    if inliers.sum() < 3:
        return None
    return PlaneFit(normal=normal, offset=offset, inliers=inliers)


def facing_origin(plane: PlaneFit) -> PlaneFit | None:
    """The plane with its normal turned so that the origin (the camera centre) lies on its + side.

    None when the plane passes through the camera (no side to take).
    """
    if abs(plane.offset) < 1e-9:
        return None
    if plane.offset > 0:
        return plane
    return PlaneFit(normal=-plane.normal, offset=-plane.offset, inliers=plane.inliers)


def head_noun(phrase: str) -> str:
    """Last word of a noun phrase ("red spoon" -> "spoon"): the object's category."""
    words = phrase.split()
    return words[-1] if words else ""


def _on_device(model: Any, device: str) -> Any:
    """`model` moved to `device`, in inference mode (no dropout)."""
    return model.to(device).eval()


# ---- the estimator -----------------------------------------------------------------------------


class GeometryEstimator:
    """Loads the three models once (lazily) and estimates `FrameGeometry` for images.

    `timings` holds the seconds of each stage of the last `estimate` call (detection, masks, depth,
    points), for benchmarks.
    """

    def __init__(self, options: EstimatedOptions | None = None) -> None:
        self.options = options or EstimatedOptions()
        self.timings: dict[str, float] = {}
        self._models: _Models | None = None

    # ---- models -----------------------------------------------------------------------------

    @property
    def models(self) -> _Models:
        """The loaded models (first access loads them from the Hub cache or folders)."""
        if self._models is None:
            self._models = self._load()
        return self._models

    def _load(self) -> _Models:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForDepthEstimation,
            AutoModelForZeroShotObjectDetection,
            AutoProcessor,
            SamModel,
            SamProcessor,
        )

        opts = self.options
        detector_type = AutoConfig.from_pretrained(opts.detector, trust_remote_code=False).model_type
        if detector_type not in DETECTOR_TYPES:
            raise ConfigError(
                f"geometry.estimated.detector: {opts.detector!r} is a {detector_type!r} model; "
                f"supported: {', '.join(DETECTOR_TYPES)}"
            )
        depth_config = AutoConfig.from_pretrained(opts.depth, trust_remote_code=False)
        if getattr(depth_config, "depth_estimation_type", "metric") != "metric":
            raise ConfigError(
                f"geometry.estimated.depth: {opts.depth!r} predicts relative depth; a metric model is needed"
            )
        return _Models(
            detector=_on_device(
                AutoModelForZeroShotObjectDetection.from_pretrained(opts.detector, trust_remote_code=False), opts.device
            ),
            detector_processor=AutoProcessor.from_pretrained(opts.detector, trust_remote_code=False),
            detector_type=detector_type,
            segmenter=_on_device(SamModel.from_pretrained(opts.segmenter), opts.device),
            segmenter_processor=SamProcessor.from_pretrained(opts.segmenter),
            depth=_on_device(
                AutoModelForDepthEstimation.from_pretrained(opts.depth, trust_remote_code=False), opts.device
            ),
            depth_processor=AutoImageProcessor.from_pretrained(opts.depth, trust_remote_code=False),
        )

    # ---- stages -----------------------------------------------------------------------------

    def detect(self, image: np.ndarray, names: list[str]) -> list[Detection]:
        """The best box of each name scoring above `detection_threshold`, clipped to the image, in `names` order."""
        import torch
        from PIL import Image

        models = self.models
        h, w = image.shape[:2]
        inputs = models.detector_processor(
            text=[names], images=Image.fromarray(image), return_tensors="pt", truncation=True
        ).to(self.options.device)
        with torch.inference_mode():
            outputs = models.detector(**inputs)
        scores = torch.sigmoid(outputs.logits[0]).float().cpu().numpy()  # (queries, names)
        cx, cy, bw, bh = outputs.pred_boxes[0].float().cpu().numpy().T  # normalised centre, size
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        # OWLv2 pads the image to a square (bottom/right) before resizing; OWL-ViT resizes it
        scale = np.array([max(h, w), max(h, w)] * 2) if models.detector_type == "owlv2" else np.array([w, h, w, h])
        boxes = np.clip(boxes * scale, 0.0, [w, h, w, h])
        # a box with less than a pixel left inside the image cannot be the object's
        inside = ((boxes[:, 2] - boxes[:, 0]) >= 1.0) & ((boxes[:, 3] - boxes[:, 1]) >= 1.0)
        scores = np.where(inside[:, None], scores, -1.0)
        found: list[Detection] = []
        for j, name in enumerate(names):
            best = int(np.argmax(scores[:, j]))
            score = float(scores[best, j])
            if score <= self.options.detection_threshold:
                continue
            x0, y0, x1, y1 = (float(v) for v in boxes[best])
            found.append(Detection(name=name, score=score, box=(x0, y0, x1, y1)))
        return found

    def segment(self, image: np.ndarray, detections: list[Detection]) -> list[np.ndarray]:
        """A bool (H, W) mask per detection from SAM with its box as the prompt, cut to the box."""
        import torch
        from PIL import Image

        models = self.models
        h, w = image.shape[:2]
        inputs = models.segmenter_processor(
            images=Image.fromarray(image), input_boxes=[[list(d.box) for d in detections]], return_tensors="pt"
        ).to(self.options.device)
        with torch.inference_mode():
            outputs = models.segmenter(**inputs, multimask_output=False)
        masks = models.segmenter_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0]  # (boxes, 1, H, W) bool
        rows, cols = np.mgrid[0:h, 0:w]
        result = []
        for det, mask in zip(detections, masks[:, 0].numpy().astype(bool), strict=True):
            x0, y0, x1, y1 = det.box
            inside = (cols + 0.5 >= x0) & (cols + 0.5 <= x1) & (rows + 0.5 >= y0) & (rows + 0.5 <= y1)
            result.append(mask & inside)
        return result

    def metric_depth(self, image: np.ndarray) -> np.ndarray:
        """float64 (H, W) metres from the depth model's `predicted_depth`, resized bilinearly to the image."""
        import torch
        from PIL import Image

        models = self.models
        h, w = image.shape[:2]
        inputs = models.depth_processor(images=Image.fromarray(image), return_tensors="pt").to(self.options.device)
        with torch.inference_mode():
            predicted = models.depth(**inputs).predicted_depth  # (1, h', w') metres
            resized = torch.nn.functional.interpolate(
                predicted[:, None].float(), size=(h, w), mode="bilinear", align_corners=False
            )
        return resized[0, 0].cpu().numpy().astype(np.float64)

    # ---- the whole path ---------------------------------------------------------------------

    def estimate(
        self,
        image: np.ndarray,
        names: list[str],
        camera: CameraModel | None = None,
        *,
        episode_id: str = "",
        step: int = 0,
        camera_name: str = "",
    ) -> FrameGeometry | str:
        """Geometry of the objects `names` in `image` (uint8 H, W, 3), or a skip reason."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        if not names:
            return "no_object_names"
        opts = self.options
        self.timings = {}

        clock = time.perf_counter()
        detections = self.detect(image, names)
        self.timings["detection"] = time.perf_counter() - clock
        if not detections:
            return "no_detections"

        clock = time.perf_counter()
        masks = self.segment(image, detections)
        self.timings["masks"] = time.perf_counter() - clock
        if not any(m.sum() >= opts.min_pixels for m in masks):
            return "no_masks"

        clock = time.perf_counter()
        depth = self.metric_depth(image)
        self.timings["depth"] = time.perf_counter() - clock

        clock = time.perf_counter()
        result = self._assemble(image, detections, masks, depth, camera, episode_id, step, camera_name)
        self.timings["points"] = time.perf_counter() - clock
        return result

    def _assemble(
        self,
        image: np.ndarray,
        detections: list[Detection],
        masks: list[np.ndarray],
        depth: np.ndarray,
        camera: CameraModel | None,
        episode_id: str,
        step: int,
        camera_name: str,
    ) -> FrameGeometry | str:
        """Back-projection, support plane, canonical frame and per-object clouds."""
        opts = self.options
        h, w = depth.shape
        valid = (np.isfinite(depth) & (depth > 0)).ravel()
        if valid.sum() < 3:
            return "no_depth"
        intrinsics = intrinsics_for(camera, w, h, opts.fov_deg)
        cam_points = backproject(np.where(np.isfinite(depth), depth, 0.0), intrinsics)
        plane = fit_plane(
            cam_points[valid],
            opts.plane_iterations,
            opts.plane_tolerance,
            np.random.default_rng(opts.seed),
            opts.plane_sample,
        )
        plane = None if plane is None else facing_origin(plane)
        if plane is None:
            return "no_support_plane"
        cam_to_canon = canonical_from_camera(plane.normal)
        canonical = apply(cam_to_canon, cam_points)
        objects: dict[str, ObjectGeometry] = {}
        taken = np.zeros(h * w, dtype=bool)
        for det, mask in zip(detections, masks, strict=True):
            flat = mask.ravel() & valid
            if int(flat.sum()) < opts.min_pixels:
                continue
            taken |= flat
            mask2d = flat.reshape(h, w)
            objects[det.name] = ObjectGeometry(
                name=det.name,
                mask=mask2d,
                points=subsample(canonical[flat], opts.max_points).astype(np.float32),
                box=mask_box(mask2d),
                score=det.score,
                category=head_noun(det.name),
            )
        if not objects:
            return "no_masks"
        on_plane = np.zeros(h * w, dtype=bool)
        on_plane[np.flatnonzero(valid)[plane.inliers]] = True
        return FrameGeometry(
            episode_id=episode_id,
            step=step,
            camera_name=camera_name,
            image=image,
            camera=CameraModel(intrinsics, np.linalg.inv(cam_to_canon), w, h),
            objects=objects,
            world_to_canonical=None,
            support=(on_plane & ~taken).reshape(h, w),
            support_height=-plane.offset,  # canonical z = normal . p = -offset on the plane
            origin="estimated",
        )
