"""Evaluation throughput: parallel workers on the demo sim, and the LIBERO adapter's overhead.

1. Demo sim, the same trials with 1, 2, ... K workers (K up to the core count), the policy batched
   in this process (`act_batch`): episodes/s, and the speed-up against one worker in the same run
   (target >= 0.8 N with N workers).
2. LIBERO (libero_10 task 0, init state 0): steps/s through `LiberoSim.step` against the raw
   `OffScreenRenderEnv.step` with the same images (target >= 0.9).
Usage: python benchmarks/bench_eval.py [--trials 2] [--max-steps 30] [--libero-steps 60] [--json OUT]
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

import numpy as np

from evaluation.policies import ConstantPolicy
from evaluation.run import RunConfig, run


def demo_workers(trials: int, max_steps: int, workers: list[int]) -> dict[str, Any]:
    """episodes/s per worker count on identical trials (the no-op policy: every episode runs max_steps)."""
    rows: dict[str, Any] = {}
    for count in workers:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = RunConfig(
                sim="demo", policy="zero", out=tmp, trials=trials, workers=count, progress=False,
                sim_options={"max_steps": max_steps},
            )  # fmt: skip
            run(cfg, policy=ConstantPolicy(chunk_size=4))
            timing = json.loads((Path(tmp) / "timing.json").read_text())
        rows[str(count)] = {"episodes_per_s": timing["episodes_per_s"], "steps_per_s": timing["steps_per_s"],
                            "wall_s": timing["wall_s"], "episodes": timing["episodes_run"]}  # fmt: skip
    base = rows[str(workers[0])]["episodes_per_s"]
    for count in workers:
        rows[str(count)]["speedup"] = rows[str(count)]["episodes_per_s"] / base
        rows[str(count)]["efficiency"] = rows[str(count)]["speedup"] / count
    return rows


def libero_overhead(steps: int, image_size: int = 224, block: int = 5) -> dict[str, float]:
    """steps/s of the raw LIBERO env against the adapter: same env, state, image size and actions.

    Raw and adapter steps alternate in blocks of `block` on the one environment, so that load
    from other processes on the machine hits both sides alike.
    """
    from evaluation.sims.libero import LiberoSim

    sim = LiberoSim(image_size=image_size)
    trial = sim.trials(per_task=1)[0]
    action = np.array([0, 0, 0.05, 0, 0, 0, 1.0], dtype=np.float32)
    raw_action = np.array([0, 0, 0.05, 0, 0, 0, -1.0])  # the same command in LIBERO's gripper sign
    timings = {"raw": 0.0, "adapter": 0.0}
    try:
        sim.reset(trial)
        for _ in range(max(1, steps // block)):
            start = time.perf_counter()
            for _ in range(block):
                sim.raw_env.step(raw_action)
            timings["raw"] += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(block):
                sim.step(action)
            timings["adapter"] += time.perf_counter() - start
    finally:
        sim.close()
    count = max(1, steps // block) * block
    raw, adapter = count / timings["raw"], count / timings["adapter"]
    return {"raw_steps_per_s": raw, "adapter_steps_per_s": adapter, "ratio": adapter / raw, "steps": count}


def main() -> None:
    """Measure and print both comparisons."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2, help="demo trials per task family [2]")
    parser.add_argument("--max-steps", type=int, default=30, help="demo episode length [30]")
    parser.add_argument("--max-workers", type=int, default=os.cpu_count() or 1, help="[core count]")
    parser.add_argument("--libero-steps", type=int, default=60, help="LIBERO steps per measurement; 0 skips [60]")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    workers = list(range(1, max(1, args.max_workers) + 1))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "demo_workers": demo_workers(args.trials, args.max_steps, workers),
    }
    for count, row in results["demo_workers"].items():
        print(f"demo, {count} worker(s): {row['episodes_per_s']:.2f} episodes/s, speed-up {row['speedup']:.2f}x "
              f"({row['efficiency']:.0%} of linear; target >= 80%)")  # fmt: skip
    if args.libero_steps:
        try:
            results["libero"] = libero_overhead(args.libero_steps)
        except ImportError as exc:
            print(f"libero: skipped ({exc})")
        else:
            lib = results["libero"]
            raw, adapter, ratio = lib["raw_steps_per_s"], lib["adapter_steps_per_s"], lib["ratio"]
            print(f"libero: raw {raw:.1f} steps/s, adapter {adapter:.1f} steps/s, ratio {ratio:.2f} (target >= 0.9)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
