"""Record one scripted-expert episode of the demo sim as a `datasets_build.episode.Episode`.

Frame t is the observation before action t; the final observation (after the last action) is
not kept, so every per-step array has one entry per action.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np

from datasets_build.episode import Episode, ObjectInfo
from datasets_build.sim.env import CAMERAS, STATE_NAMES, TabletopConfig, TabletopEnv
from datasets_build.sim.expert import DEFAULT_NOISE, ScriptedExpert
from datasets_build.sim.scene import TABLE_ID
from datasets_build.sim.tasks import TASK_FAMILIES

SOURCE = "demo"


def episode_id(task: str, seed: int) -> str:
    """The id of the expert episode of `task` from layout `seed` (safe as a shard key)."""
    return f"demo_{task}_{seed:06d}"


def rollout_expert(env: TabletopEnv, task: str, seed: int, noise: float = DEFAULT_NOISE) -> Episode:
    """Run the scripted expert on `task` from layout `seed`, recording every step.

    With `env.config.render` off the episode has no frames, depth or segmentation. Both cameras
    are in `Episode.camera` (the wrist one as at step 0); the wrist camera moves, so its per-step
    extrinsics (T, 4, 4) are in `Episode.camera_extrinsics["wrist"]` (see `Episode.camera_at`).
    `meta["timing"]` splits the wall time into physics (reset and steps, IK included), rendering
    and expert seconds.
    """
    _, info = env.reset(seed=seed, options={"task": task})
    timing = {"physics_s": env.timings["physics_s"], "render_s": env.timings["render_s"], "expert_s": 0.0}
    started = time.perf_counter()
    expert = ScriptedExpert(env, noise=noise, seed=seed)
    expert.reset()
    timing["expert_s"] += time.perf_counter() - started

    scene = env.scene
    names = list(scene.objects)
    moving = [n for n in names if not scene.objects[n].static]
    frames: dict[str, list[np.ndarray]] = {c: [] for c in CAMERAS}
    depth: dict[str, list[np.ndarray]] = {c: [] for c in CAMERAS}
    seg: dict[str, list[np.ndarray]] = {c: [] for c in CAMERAS}
    states: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    poses: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {n: [] for n in moving}
    wrist_extrinsics: list[np.ndarray] = []
    cameras = env.cameras()

    success = bool(info["success"])
    while True:
        for camera, frame in env.frames().items():
            frames[camera].append(frame.rgb)
            depth[camera].append(frame.depth)
            seg[camera].append(frame.segmentation)
        states.append(env.state())
        for name in moving:
            poses[name].append(scene.pose(name))
        wrist_extrinsics.append(env.cameras()["wrist"].extrinsics)

        started = time.perf_counter()
        action = expert.act()
        timing["expert_s"] += time.perf_counter() - started
        _, _, terminated, truncated, info = env.step(action)
        timing["physics_s"] += env.timings["physics_s"]
        timing["render_s"] += env.timings["render_s"]
        actions.append(action)
        success = bool(info["success"])
        if terminated or truncated:
            break

    objects = {}
    for name, obj in scene.objects.items():
        if obj.static:
            position, orientation = scene.pose(name)
            positions, orientations = position[None], orientation[None]
        else:
            positions = np.stack([pos for pos, _ in poses[name]])
            orientations = np.stack([quat for _, quat in poses[name]])
        objects[name] = ObjectInfo(
            name=name,
            positions=positions,
            orientations=orientations,
            size=obj.size,
            segmentation_id=obj.segmentation_id,
            category=obj.category,
        )
    meta: dict[str, Any] = {
        "seed": int(seed),
        "noise": float(noise),
        "steps": len(actions),
        "timing": timing,
        "layout": asdict(env.task.layout),
        "state_names": list(STATE_NAMES),
        "support_segmentation_id": TABLE_ID,  # the table: geometry reads free space from it
    }
    rendered = [c for c in CAMERAS if frames[c]]
    return Episode(
        episode_id=episode_id(task, seed),
        source=SOURCE,
        frames={c: np.stack(frames[c]) for c in rendered},
        actions=np.stack(actions).astype(np.float32),
        instruction=env.task.instruction,
        state=np.stack(states).astype(np.float32),
        depth={c: np.stack(depth[c]) for c in rendered},
        segmentation={c: np.stack(seg[c]) for c in rendered},
        camera=cameras,
        camera_extrinsics={"wrist": np.stack(wrist_extrinsics)},
        objects=objects,
        fps=float(env.config.control_hz),
        task=task,
        success=success,
        meta=meta,
    )


def expert_episodes(n: int, config: TabletopConfig | None = None) -> list[Episode]:
    """`n` in-memory expert episodes cycling over every task family (seed i for episode i)."""
    env = TabletopEnv(config or TabletopConfig())
    tasks = sorted(TASK_FAMILIES)
    try:
        return [rollout_expert(env, tasks[i % len(tasks)], i) for i in range(n)]
    finally:
        env.close()
