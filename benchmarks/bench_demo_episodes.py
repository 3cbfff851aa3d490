"""Demo-sim recording cost: per episode and per step, split into physics, rendering and the expert.

Runs the same (task, seed) plan three ways in one process and prints ratios against the cheapest:
  1. rollouts with rendering off (physics + expert: the baseline),
  2. rollouts with rendering on (what `demo-episodes` simulates),
  3. the whole `demo-episodes` path (rollouts + LeRobot v3 writing), one worker.
Usage: python benchmarks/bench_demo_episodes.py [--episodes 12] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes
from datasets_build.sim import TASK_FAMILIES, TabletopConfig, TabletopEnv, rollout_expert


def _rollouts(plan: list[tuple[str, int]], render: bool) -> dict[str, float]:
    env = TabletopEnv(TabletopConfig(render=render))
    totals = {"wall_s": 0.0, "steps": 0.0, "physics_s": 0.0, "render_s": 0.0, "expert_s": 0.0}
    try:
        for task, seed in plan:
            start = time.perf_counter()
            episode = rollout_expert(env, task, seed)
            totals["wall_s"] += time.perf_counter() - start
            totals["steps"] += len(episode)
            for part in ("physics_s", "render_s", "expert_s"):
                totals[part] += float(episode.meta["timing"][part])
    finally:
        env.close()
    return totals


def main() -> None:
    """Measure and print the three ways, with ratios against rendering off."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=12, help="episodes, tasks cycling [12]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    tasks = sorted(TASK_FAMILIES)
    plan = [(tasks[i % len(tasks)], i) for i in range(args.episodes)]

    off = _rollouts(plan, render=False)
    on = _rollouts(plan, render=True)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DemoEpisodesConfig(out=str(Path(tmp) / "eps"), episodes=args.episodes, seed=0, tasks=tasks)
        start = time.perf_counter()
        record_demo_episodes(cfg)
        full_s = time.perf_counter() - start

    steps = on["steps"]
    rows: dict[str, Any] = {
        "episodes": args.episodes,
        "steps": steps,
        "render_off_ms_per_step": 1000 * off["wall_s"] / off["steps"],
        "render_on_ms_per_step": 1000 * on["wall_s"] / steps,
        "demo_episodes_ms_per_step": 1000 * full_s / steps,
        "demo_episodes_s_per_episode": full_s / args.episodes,
        "split_ms_per_step": {part: 1000 * on[part] / steps for part in ("physics_s", "render_s", "expert_s")},
        "ratio_render_on_vs_off": on["wall_s"] / off["wall_s"],
        "ratio_demo_episodes_vs_render_on": full_s / on["wall_s"],
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count()},
    }
    print(f"{args.episodes} episodes, {int(steps)} steps (expert, all task families)")
    print(f"rollout, rendering off : {rows['render_off_ms_per_step']:7.1f} ms/step  (baseline)")
    print(
        f"rollout, rendering on  : {rows['render_on_ms_per_step']:7.1f} ms/step  "
        f"ratio {rows['ratio_render_on_vs_off']:.1f}x baseline"
    )
    print(
        f"demo-episodes (+write) : {rows['demo_episodes_ms_per_step']:7.1f} ms/step  "
        f"{rows['demo_episodes_s_per_episode']:.2f} s/episode  "
        f"ratio {rows['ratio_demo_episodes_vs_render_on']:.2f}x rendering-on rollouts"
    )
    split = rows["split_ms_per_step"]
    print(
        f"split per step (rendering on): physics {split['physics_s']:.1f} ms, "
        f"rendering {split['render_s']:.1f} ms, expert {split['expert_s']:.2f} ms"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
