"""Evaluation throughput: parallel workers, simulator workers sharing one policy server, the server's round trip,
and the LIBERO adapter's overhead.

1. Demo sim, the same trials with 1, 2, ... K in-process workers (K up to the core count), the policy batched
   in this process (`act_batch`): episodes/s, and the speed-up against one worker in the same run
   (target >= 0.8 N with N workers).
2. Demo sim through `evaluation.worker` processes (`sim_options.python`, here this interpreter or --sim-python)
   that take their actions from one batched `vla.serve` server: 1 .. K workers; the policy costs a fixed
   --policy-ms per forward pass whatever the batch (as a GPU does; it sleeps, so it leaves the CPUs to the
   simulators): speed-up against one worker (target >= 0.8 K).
3. Round trip: `act` through the server on loopback (project client, msgpack-numpy, websockets) against the
   same policy's in-process `act`, 224x224 images, interleaved blocks: the added ms per call (target < 2 ms).
4. LIBERO (libero_10 task 0, init state 0): steps/s through `LiberoSim.step` against the raw
   `OffScreenRenderEnv.step` with the same images (target >= 0.9).
The machine is shared: each ratio comes from runs made in the same process minutes apart; rerun to see the noise.
Usage: python benchmarks/bench_eval.py [--trials 2] [--max-steps 30] [--libero-steps 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.policies import ConstantPolicy
from evaluation.run import RunConfig, run
from evaluation.ws_policy import WebsocketPolicy
from vla.serve import PolicyServer


class FixedCostPolicy(ConstantPolicy):
    """The no-op policy with a fixed latency per forward pass, whatever the batch size (a GPU-like cost)."""

    def __init__(self, cost_s: float, chunk_size: int = 4) -> None:
        super().__init__(chunk_size=chunk_size)
        self.cost_s = cost_s

    def act_batch(self, images: Any, instructions: Any) -> np.ndarray:
        """Sleep `cost_s`, then the no-op chunks."""
        time.sleep(self.cost_s)
        return super().act_batch(images, instructions)


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


def served_workers(trials: int, max_steps: int, workers: list[int], policy_ms: float, python: str) -> dict[str, Any]:
    """episodes/s of 1..K simulator workers (own processes, `python`) sharing one batched policy server."""
    rows: dict[str, Any] = {}
    policy = FixedCostPolicy(policy_ms / 1000)
    for count in workers:
        with tempfile.TemporaryDirectory() as tmp:
            options = {"max_steps": max_steps, "python": python}
            cfg = RunConfig(sim="demo", policy="fixed", out=tmp, trials=trials, workers=count, progress=False,
                            sim_options=options)  # fmt: skip
            run(cfg, policy=policy)
            timing = json.loads((Path(tmp) / "timing.json").read_text())
        rows[str(count)] = {"episodes_per_s": timing["episodes_per_s"], "wall_s": timing["wall_s"],
                            "episodes": timing["episodes_run"]}  # fmt: skip
    base = rows[str(workers[0])]["episodes_per_s"]
    for count in workers:
        rows[str(count)]["speedup"] = rows[str(count)]["episodes_per_s"] / base
        rows[str(count)]["efficiency"] = rows[str(count)]["speedup"] / count
    return rows


def round_trip(calls: int, image_size: int = 224, block: int = 20) -> dict[str, float]:
    """ms per `act` in process and through the server on loopback, alternating blocks of `block` calls."""
    policy = ConstantPolicy(chunk_size=10)
    image = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    timings = {"local": 0.0, "served": 0.0}
    with PolicyServer(policy, port=0) as server:
        client = WebsocketPolicy(server.url)
        for _ in range(5):  # warm-up
            client.act([image], "pick up the block")
        rounds = max(1, calls // block)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(block):
                policy.act([image], "pick up the block")
            timings["local"] += time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(block):
                client.act([image], "pick up the block")
            timings["served"] += time.perf_counter() - start
        client.close()
    count = rounds * block
    local_ms, served_ms = 1000 * timings["local"] / count, 1000 * timings["served"] / count
    return {"local_ms": local_ms, "served_ms": served_ms, "added_ms": served_ms - local_ms, "calls": count,
            "image_size": image_size}  # fmt: skip


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
    parser.add_argument("--policy-ms", type=float, default=20.0, help="served policy cost per forward pass [20]")
    parser.add_argument("--sim-python", default=sys.executable, help="interpreter of the simulator workers [this]")
    parser.add_argument("--round-trips", type=int, default=400, help="calls per side of the round trip [400]")
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
    results["served_workers"] = served_workers(args.trials, args.max_steps, workers, args.policy_ms, args.sim_python)
    for count, row in results["served_workers"].items():
        print(f"demo, {count} simulator worker(s) + one server ({args.policy_ms:.0f} ms/forward): "
              f"{row['episodes_per_s']:.2f} episodes/s, speed-up {row['speedup']:.2f}x "
              f"({row['efficiency']:.0%} of linear; target >= 80%)")  # fmt: skip
    trip = results["round_trip"] = round_trip(args.round_trips)
    print(f"round trip at {trip['image_size']}x{trip['image_size']}: in-process {trip['local_ms']:.3f} ms, served "
          f"{trip['served_ms']:.3f} ms, added {trip['added_ms']:.3f} ms per act (target < 2 ms)")  # fmt: skip
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
