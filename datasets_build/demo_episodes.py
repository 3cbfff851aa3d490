"""`demo-episodes`: record scripted-expert episodes of the demo sim as a LeRobot v3.0 dataset with geometry."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.lerobot import LeRobotWriter
from datasets_build.lerobot.writer import check_output
from datasets_build.progress import progress_bar
from datasets_build.sources.demo import demo_features, episode_to_columns


@dataclass
class DemoEpisodesConfig:
    """What to record. Tasks cycle through `tasks` (all families when empty); seeds are seed, seed+1, ..."""

    out: str = "runs/demo/episodes"
    episodes: int = 12
    seed: int = 0
    tasks: list[str] = field(default_factory=list)
    noise: float | None = None  # expert action noise; None = the expert's default
    workers: int = 1
    image_size: int = 224
    wrist_size: int | None = None  # None = the sim's default
    video: bool = False  # RGB as AV1 mp4 (LeRobot's default) instead of lossless PNG
    max_objects: int = 8
    overwrite: bool = False


def _plan(cfg: DemoEpisodesConfig) -> list[tuple[str, int]]:
    from datasets_build.sim import EVALUATION_SEED_BASE, TASK_FAMILIES

    tasks = cfg.tasks or sorted(TASK_FAMILIES)
    unknown = [t for t in tasks if t not in TASK_FAMILIES]
    if unknown:
        raise ConfigError(f"tasks: unknown task families {unknown}; available: {sorted(TASK_FAMILIES)}")
    if cfg.episodes < 1:
        raise ConfigError(f"episodes: must be >= 1, got {cfg.episodes}")
    if cfg.seed < 0 or cfg.seed + cfg.episodes > EVALUATION_SEED_BASE:
        raise ConfigError(
            f"seed: episodes use layout seeds {cfg.seed}..{cfg.seed + cfg.episodes - 1}; recordings must stay in "
            f"[0, {EVALUATION_SEED_BASE:,}) (from there on the layouts are the demo sim evaluation's)"
        )
    return [(tasks[i % len(tasks)], cfg.seed + i) for i in range(cfg.episodes)]


_WORKER_ENV: Any = None  # (sim config, env) of this process


def _sim_config(cfg: DemoEpisodesConfig) -> Any:
    from datasets_build.sim import TabletopConfig

    kwargs: dict[str, Any] = {"image_size": cfg.image_size, "render": True}
    if cfg.wrist_size is not None:
        kwargs["wrist_size"] = cfg.wrist_size
    return TabletopConfig(**kwargs)


def _record_one(args: tuple[DemoEpisodesConfig, str, int]) -> Episode:
    global _WORKER_ENV  # noqa: PLW0603  (one sim per worker process, reused across episodes)
    from datasets_build.sim import TabletopEnv, rollout_expert

    cfg, task, seed = args
    sim = _sim_config(cfg)
    if _WORKER_ENV is None or _WORKER_ENV[0] != sim:  # another recording in this process: its own sim settings
        if _WORKER_ENV is not None:
            _WORKER_ENV[1].close()
        _WORKER_ENV = (sim, TabletopEnv(sim))
    kwargs: dict[str, Any] = {} if cfg.noise is None else {"noise": cfg.noise}
    return rollout_expert(_WORKER_ENV[1], task, seed, **kwargs)


def iter_expert_episodes(cfg: DemoEpisodesConfig) -> Iterator[Episode]:
    """Roll out the plan, in plan order, with `workers` processes."""
    jobs = [(cfg, task, seed) for task, seed in _plan(cfg)]
    if cfg.workers <= 1:
        yield from map(_record_one, jobs)
        return
    with mp.get_context("spawn").Pool(cfg.workers) as pool:
        yield from pool.imap(_record_one, jobs)


def record_demo_episodes(cfg: DemoEpisodesConfig) -> dict[str, Any]:
    """Record `cfg.episodes` expert episodes into `cfg.out`; return a summary (episodes, steps, successes)."""
    plan = _plan(cfg)
    check_output(Path(cfg.out), cfg.overwrite)
    writer: LeRobotWriter | None = None
    summary: dict[str, Any] = {"out": cfg.out, "episodes": 0, "steps": 0, "successes": 0, "per_task": {}}
    try:
        for episode in progress_bar(iter_expert_episodes(cfg), total=len(plan), desc="demo episodes", unit="ep"):
            if writer is None:
                sizes = {cam: (int(f.shape[1]), int(f.shape[2])) for cam, f in episode.frames.items()}
                writer = LeRobotWriter(
                    Path(cfg.out),
                    fps=round(episode.fps),
                    features=demo_features(sizes, cfg.max_objects, video=cfg.video),
                    robot_type="franka_panda_pybullet",
                    overwrite=cfg.overwrite,
                )
            # wall-clock timings differ run to run: kept out of the files, so one seed gives byte-identical datasets
            episode.meta.pop("timing", None)
            columns, extra = episode_to_columns(episode, cfg.max_objects)
            writer.add_episode(columns, task=episode.instruction, extra=extra)
            summary["episodes"] += 1
            summary["steps"] += len(episode)
            summary["successes"] += int(bool(episode.success))
            per = summary["per_task"].setdefault(episode.task, {"episodes": 0, "successes": 0})
            per["episodes"] += 1
            per["successes"] += int(bool(episode.success))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    assert writer is not None
    writer.close()
    return summary
