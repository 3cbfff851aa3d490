"""Frame geometry estimated from an RGB image alone, the VQASynth way, through transformers pipelines.

Open-vocabulary detection of the named objects (OWLv2 by default), a mask per detected box (SAM, box
prompts), metric monocular depth (Depth Anything V2 metric by default), back-projection with the source's
intrinsics or a pinhole of `fov_deg`, a RANSAC fit of the support plane whose normal becomes canonical
+z, then per-object point clouds in the canonical frame (`datasets_build.geometry.scene`).
Models are chosen by Hub id or folder and resolved through the Hugging Face cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets_build.camera import CameraModel
from datasets_build.geometry.scene import FrameGeometry


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


class GeometryEstimator:
    """Loads the three models once (lazily) and estimates `FrameGeometry` for images."""

    def __init__(self, options: EstimatedOptions | None = None) -> None:
        self.options = options or EstimatedOptions()

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
        raise NotImplementedError
