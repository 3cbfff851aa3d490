"""`GeometryProvider`: one call that gives a corpus builder a frame's geometry, ground truth or estimated.

`mode=auto` uses ground truth when the episode has depth, a calibrated camera and objects for the
camera asked (demo sim, CALVIN), and otherwise estimates it from the image (Bridge, Fractal, LIBERO,
LeRobot), detecting the objects named in the instruction (`datasets_build.geometry.language`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.geometry.estimated import EstimatedOptions, GeometryEstimator
from datasets_build.geometry.ground_truth import (
    GroundTruthOptions,
    ground_truth_geometry,
    ground_truth_pixel_counts,
    ground_truth_support,
)
from datasets_build.geometry.scene import FrameGeometry

MODES = ("auto", "ground_truth", "estimated")


@dataclass
class GeometryConfig:
    """Where geometry comes from (`mode`) and the options of each path (`geometry.estimated.depth=...`)."""

    mode: str = "auto"
    ground_truth: GroundTruthOptions = field(default_factory=GroundTruthOptions)
    estimated: EstimatedOptions = field(default_factory=EstimatedOptions)


def has_ground_truth(episode: Episode, camera: str) -> bool:
    """Whether `ground_truth_geometry` can work on this episode's `camera`."""
    return (
        camera in episode.frames
        and camera in episode.depth
        and camera in episode.camera
        and any(o.segmentation_id is not None or o.size is not None for o in episode.objects.values())
    )


class GeometryProvider:
    """Frame geometry for corpus builders; the estimator's models load on first use only."""

    def __init__(self, config: GeometryConfig | None = None) -> None:
        self.config = config or GeometryConfig()
        if self.config.mode not in MODES:
            raise ConfigError(f"geometry.mode: {self.config.mode!r} is not one of {', '.join(MODES)}")
        self._estimator: GeometryEstimator | None = None

    @property
    def estimator(self) -> GeometryEstimator:
        """The estimated-geometry path (models loaded lazily)."""
        if self._estimator is None:
            self._estimator = GeometryEstimator(self.config.estimated)
        return self._estimator

    def uses_ground_truth(self, episode: Episode, camera: str) -> bool:
        """Whether `frame` answers for this episode's `camera` from ground truth (else it estimates)."""
        mode = self.config.mode
        return mode == "ground_truth" or (mode == "auto" and has_ground_truth(episode, camera))

    def pixel_counts(
        self, episode: Episode, camera: str, step: int, names: list[str] | None = None
    ) -> dict[str, int] | str:
        """{object: mask pixels} of the objects `frame(..., points=False)` finds, or its skip reason; ground truth
        counts the masks without building the geometry."""
        if camera not in episode.frames:
            return "no_camera"
        if self.uses_ground_truth(episode, camera):
            return ground_truth_pixel_counts(episode, camera, step, self.config.ground_truth, names)
        found = self.frame(episode, camera, step, names, points=False)
        return found if isinstance(found, str) else {n: o.pixels for n, o in found.objects.items()}

    def support_frame(self, episode: Episode, camera: str, step: int) -> FrameGeometry | str:
        """`frame` for questions about the support plane only: its support, support height and camera are those of
        `frame`, its objects may be missing (ground truth then skips the objects' point clouds)."""
        if camera not in episode.frames:
            return "no_camera"
        if self.uses_ground_truth(episode, camera):
            return ground_truth_support(episode, camera, step, self.config.ground_truth)
        return self.frame(episode, camera, step)

    def frame(
        self, episode: Episode, camera: str, step: int, names: list[str] | None = None, points: bool = True
    ) -> FrameGeometry | str:
        """Geometry of `episode`'s `camera` at `step`, or a skip reason string.

        `points=False` asks for masks only (ground truth then skips back-projection; estimates always have points).
        """
        if camera not in episode.frames:
            return "no_camera"
        if self.uses_ground_truth(episode, camera):
            return ground_truth_geometry(episode, camera, step, self.config.ground_truth, names, points=points)
        if names is None:
            from datasets_build.geometry.language import object_phrases

            texts = [episode.instruction] + [w.instruction for w in episode.language if w.start <= step < w.end]
            names = []
            for text in texts:
                names += [n for n in object_phrases(text) if n not in names]
        if not names:
            return "no_object_names"
        model = episode.camera_at(camera, step) if camera in episode.camera else None
        return self.estimator.estimate(
            episode.frames[camera][step], names, model, episode_id=episode.episode_id, step=step, camera_name=camera
        )
