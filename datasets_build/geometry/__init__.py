"""Per-frame object geometry (masks, point clouds in a canonical frame) for the spatial corpora."""

from datasets_build.geometry.provider import GeometryConfig, GeometryProvider, has_ground_truth
from datasets_build.geometry.robot import ee_positions
from datasets_build.geometry.scene import FrameGeometry, ObjectGeometry

__all__ = ["FrameGeometry", "GeometryConfig", "GeometryProvider", "ObjectGeometry", "ee_positions", "has_ground_truth"]
