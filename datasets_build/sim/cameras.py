"""The two cameras of the demo sim: a fixed static view of the workspace and a wrist camera on the hand.

One `getCameraImage` call per camera per step gives RGB, depth and segmentation together
(TinyRenderer, no shadows, headless). Depth is converted from pybullet's non-linear z-buffer to
metres along the camera z axis; segmentation is mapped to the scene's stable ids. Each camera is
also exposed as a `datasets_build.camera.CameraModel` built from the very matrices used to render.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet as p

from datasets_build.camera import CameraModel
from datasets_build.sim.scene import Scene


@dataclass(frozen=True)
class StaticCameraConfig:
    """Fixed camera facing the robot across the table (image right = world +y)."""

    width: int = 224
    height: int = 224
    eye: tuple[float, float, float] = (1.15, 0.0, 1.3)
    target: tuple[float, float, float] = (0.45, 0.0, 0.68)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov_deg: float = 45.0  # vertical
    near: float = 0.05
    far: float = 3.0


@dataclass(frozen=True)
class WristCameraConfig:
    """Camera fixed to the Panda hand, looking along the fingers.

    128x128 by default: the view is close-up (a few blocks at most), TinyRenderer's cost grows
    with the pixel count, and wrist views in robot datasets are usually small (CALVIN 84x84,
    LIBERO 128x128).
    """

    width: int = 128
    height: int = 128
    offset: tuple[float, float, float] = (0.07, 0.0, 0.03)  # camera position in the hand frame
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.25)  # point it looks at, hand frame
    up: tuple[float, float, float] = (1.0, 0.0, 0.0)  # image-up direction, hand frame
    fov_deg: float = 70.0
    near: float = 0.01
    far: float = 2.0


@dataclass
class CameraFrame:
    """One rendered view: RGB uint8 (H, W, 3), depth float32 (H, W) metres, segmentation int32 (H, W)."""

    rgb: np.ndarray
    depth: np.ndarray
    segmentation: np.ndarray


def zbuffer_to_metres(zbuffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """pybullet's OpenGL depth buffer in [0, 1] -> metric depth along the camera z axis (float32)."""
    z = np.asarray(zbuffer, dtype=np.float64)
    return (far * near / (far - (far - near) * z)).astype(np.float32)


def render(
    client: int,
    view: list[float],
    projection: list[float],
    width: int,
    height: int,
    near: float,
    far: float,
    scene: Scene,
) -> CameraFrame:
    """Render one view with a single getCameraImage call and convert its three buffers."""
    _, _, rgba, zbuffer, seg = p.getCameraImage(
        width,
        height,
        viewMatrix=view,
        projectionMatrix=projection,
        shadow=0,
        renderer=p.ER_TINY_RENDERER,
        physicsClientId=client,
    )
    rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()
    depth = zbuffer_to_metres(np.asarray(zbuffer).reshape(height, width), near, far)
    segmentation = scene.map_segmentation(np.asarray(seg).reshape(height, width))
    return CameraFrame(rgb, depth, segmentation)


class StaticCamera:
    """The fixed workspace camera; its matrices are computed once."""

    def __init__(self, config: StaticCameraConfig) -> None:
        self.config = config
        c = config
        self.view = list(p.computeViewMatrix(c.eye, c.target, c.up))
        self.projection = list(p.computeProjectionMatrixFOV(c.fov_deg, c.width / c.height, c.near, c.far))
        self.model = CameraModel.from_opengl(np.asarray(self.view), np.asarray(self.projection), c.width, c.height)

    def image_right(self) -> np.ndarray:
        """Unit world direction on the table plane that moves a point to the right in the image."""
        right = self.model.extrinsics[0, :3].copy()  # camera x axis (OpenCV) in world coordinates
        right[2] = 0.0
        return right / np.linalg.norm(right)

    def render(self, scene: Scene) -> CameraFrame:
        """RGB, metric depth and stable-id segmentation of the current scene."""
        c = self.config
        return render(scene.client, self.view, self.projection, c.width, c.height, c.near, c.far, scene)


class WristCamera:
    """The hand-mounted camera; its pose follows the hand, so its matrices change every step."""

    def __init__(self, config: WristCameraConfig) -> None:
        self.config = config
        c = config
        self.projection = list(p.computeProjectionMatrixFOV(c.fov_deg, c.width / c.height, c.near, c.far))

    def view(self, scene: Scene) -> list[float]:
        """The OpenGL view matrix for the current hand pose."""
        pos, quat = scene.robot.hand_pose()
        rot = np.asarray(p.getMatrixFromQuaternion(quat.tolist())).reshape(3, 3)
        eye = pos + rot @ np.asarray(self.config.offset)
        target = pos + rot @ np.asarray(self.config.look_at)
        up = rot @ np.asarray(self.config.up)
        return list(p.computeViewMatrix(eye.tolist(), target.tolist(), up.tolist()))

    def model(self, scene: Scene) -> CameraModel:
        """The camera model for the current hand pose."""
        c = self.config
        return CameraModel.from_opengl(np.asarray(self.view(scene)), np.asarray(self.projection), c.width, c.height)

    def render(self, scene: Scene, view: list[float] | None = None) -> CameraFrame:
        """RGB, metric depth and stable-id segmentation from the hand (pass `view` to reuse one)."""
        c = self.config
        view = self.view(scene) if view is None else view
        return render(scene.client, view, self.projection, c.width, c.height, c.near, c.far, scene)
