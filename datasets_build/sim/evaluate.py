"""Measure the scripted expert's success rate per task family (optionally over a process pool).

Episode i of a family uses layout seed `cfg.seed + i`, so results do not depend on `workers`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field

from datasets_build.errors import ConfigError
from datasets_build.progress import progress_bar
from datasets_build.sim.env import TabletopConfig, TabletopEnv
from datasets_build.sim.expert import DEFAULT_NOISE, ExpertResult, play_expert
from datasets_build.sim.tasks import TASK_FAMILIES, get_family


@dataclass(frozen=True)
class ExpertEvalConfig:
    """How many expert episodes to run, from which seeds, with how much action noise, on how many processes."""

    episodes_per_task: int = 30
    seed: int = 0
    noise: float = DEFAULT_NOISE
    tasks: list[str] = field(default_factory=lambda: list(TASK_FAMILIES))
    workers: int = 1
    render: bool = False

    def __post_init__(self) -> None:
        if self.episodes_per_task < 1 or self.workers < 1:
            raise ConfigError("episodes_per_task and workers must be >= 1")
        if self.noise < 0:
            raise ConfigError(f"noise must be >= 0, got {self.noise}")
        if not self.tasks:
            raise ConfigError("tasks must name at least one task family")
        for task in self.tasks:
            get_family(task)


_worker_env: TabletopEnv | None = None


def _init_worker(render: bool) -> None:
    global _worker_env  # noqa: PLW0603 (one env per worker process)
    _worker_env = TabletopEnv(TabletopConfig(render=render))


def _run_job(job: tuple[str, int, float]) -> ExpertResult:
    task, seed, noise = job
    if _worker_env is None:
        raise RuntimeError("worker not initialised")
    return play_expert(_worker_env, task, seed, noise)


def _play_all(cfg: ExpertEvalConfig, jobs: list[tuple[str, int, float]]) -> Iterator[ExpertResult]:
    if cfg.workers == 1:
        env = TabletopEnv(TabletopConfig(render=cfg.render))
        try:
            for task, seed, noise in jobs:
                yield play_expert(env, task, seed, noise)
        finally:
            env.close()
        return
    # spawn: a fresh pybullet per process, safe beside threads; callers need a __main__ guard.
    context = multiprocessing.get_context("spawn")
    with context.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg.render,)) as pool:
        yield from pool.imap(_run_job, jobs, chunksize=4)


def evaluate_expert(cfg: ExpertEvalConfig, progress: bool = True) -> dict[str, dict[str, float]]:
    """Per family: episodes, successes, success_rate and mean_steps (a progress bar on stderr unless disabled)."""
    jobs = [(task, cfg.seed + i, cfg.noise) for task in cfg.tasks for i in range(cfg.episodes_per_task)]
    results = list(
        progress_bar(_play_all(cfg, jobs), total=len(jobs), desc="expert episodes", unit="ep", enabled=progress)
    )
    summary: dict[str, dict[str, float]] = {}
    for task in cfg.tasks:
        mine = [r for r in results if r.task == task]
        successes = sum(r.success for r in mine)
        summary[task] = {
            "episodes": len(mine),  # counts stay ints (JSON 10, not 10.0)
            "successes": successes,
            "success_rate": successes / len(mine),
            "mean_steps": sum(r.steps for r in mine) / len(mine),
        }
    return summary


def format_table(results: dict[str, dict[str, float]]) -> str:
    """A plain-text table of `evaluate_expert` results with an overall row."""
    header = ("task", "episodes", "successes", "success rate", "mean steps")
    rows = [
        (task, f"{r['episodes']:.0f}", f"{r['successes']:.0f}", f"{r['success_rate']:.1%}", f"{r['mean_steps']:.1f}")
        for task, r in results.items()
    ]
    episodes = sum(r["episodes"] for r in results.values())
    if episodes:
        successes = sum(r["successes"] for r in results.values())
        steps = sum(r["mean_steps"] * r["episodes"] for r in results.values()) / episodes
        rows.append(("all", f"{episodes:.0f}", f"{successes:.0f}", f"{successes / episodes:.1%}", f"{steps:.1f}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
