"""`python -m evaluation run`: roll a policy out over a simulator's trials, resumably, on K worker processes.

The policy lives in this process and is asked for chunks in one batch (`act_batch`) for every
environment that needs one; each of the K workers owns one simulator adapter (K = 1 runs it
in-process). Every finished episode is appended to `episodes.jsonl` at once, so a rerun after a
crash skips finished trials; `summary.json` is rewritten from all episodes at the end.
With one environment `policy.reset()` runs before every episode (and CALVIN subtask); with
several it runs once, so batched policies must keep no per-episode state (VLM4VLA keeps none).
`policy` may be a policy server (`ws://HOST:PORT`, `python -m vla serve`). With `sim_options.python`
(or `sim_options.connect`) the simulators run in their own environments as `evaluation.worker`
processes that take their actions from a policy server (`evaluation.remote`); trials, resume and
summaries stay here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import traceback
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from datasets_build import faults
from datasets_build.crash_log import first_line, write_traceback
from datasets_build.errors import ConfigError, DataError, ToolkitError
from datasets_build.locking import output_lock
from datasets_build.progress import progress_bar
from evaluation.policies import load_policy
from evaluation.protocol import CHUNK_MODES, EpisodeRecord, steps_per_chunk, summarize
from evaluation.results import (
    SUMMARY_FILE,
    TIMING_FILE,
    EpisodeLog,
    check_run,
    read_episodes,
    write_json,
)
from evaluation.sims import METRICS, SIMULATORS, Observation, SimAdapter, StepResult, Trial, make_sim, require_package
from evaluation.ws_policy import WebsocketPolicy
from vla.api import PolicyLike


@dataclass
class RunConfig:
    """One evaluation run: which simulator and policy, how chunks are executed, how the trials are split."""

    sim: str = "demo"
    policy: str = ""  # checkpoint folder, Hub id, "zero", "replay:DIR" or a policy server "ws://HOST:PORT"
    api_key_env: str = ""  # environment variable holding the policy server's API key ("" = $VLA_API_KEY if set)
    out: str = ""
    chunk_mode: str = "full"  # full | half | one
    trials: int | None = None  # per task (CALVIN: chains); None = the protocol's count
    workers: int = 1  # simulator processes; 1 = in this process
    batch_inference: bool = True  # one act_batch call for all environments waiting for a chunk
    num_shards: int = 1
    shard_index: int = 0
    video: int = 0  # mp4 of the first `video` trials of each task
    overwrite: bool = False
    progress: bool = True
    sim_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sim not in SIMULATORS:
            raise ConfigError(f"sim: unknown simulator {self.sim!r}; known: {sorted(SIMULATORS)}")
        if self.chunk_mode not in CHUNK_MODES:
            raise ConfigError(f"chunk_mode: must be one of {list(CHUNK_MODES)}, got {self.chunk_mode!r}")
        if self.workers < 1 or (self.trials is not None and self.trials < 1) or self.video < 0:
            raise ConfigError("workers and trials must be >= 1, video >= 0")
        if not 0 <= self.shard_index < self.num_shards:
            raise ConfigError(f"shard_index must be in [0, {self.num_shards}), got {self.shard_index}")


# ----------------------------------------------------------------------------------------- workers
def _serve(adapter: SimAdapter, command: str, argument: Any) -> Any:
    if command == "trials":
        return adapter.trials(argument)
    if command == "reset":
        return adapter.reset(argument)
    if command == "provenance":
        return adapter.provenance()
    result = adapter.step(argument)
    if result.done:
        result.info["result"] = adapter.result_info()
    return result


def _failure(exc: Exception) -> tuple[str, str | None]:
    """A worker's error reply: its one line, and its traceback unless it is an expected (toolkit) error."""
    if isinstance(exc, ToolkitError):
        return str(exc), None
    return first_line(exc), traceback.format_exc()


def _worker_main(conn: Connection, sim: str, options: dict[str, Any]) -> None:
    """A simulator in a worker process; a failure goes back as (one line, full traceback) for the parent's log."""
    try:
        adapter = make_sim(sim, **options)
    except Exception as exc:
        conn.send(("error", _failure(exc)))
        return
    conn.send(("ok", (adapter.action_dim, adapter.max_steps)))
    try:
        while True:
            command, argument = conn.recv()
            if command == "close":
                break
            try:
                conn.send(("ok", _serve(adapter, command, argument)))
            except Exception as exc:
                conn.send(("error", _failure(exc)))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        adapter.close()


class _Slot:
    """One environment: in this process or in a worker; `send` then `recv` so workers step in parallel."""

    def __init__(self, sim: str, options: dict[str, Any], remote: bool, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir  # where a worker's traceback is kept (the run's output folder)
        self.trial: Trial | None = None
        self.queue: deque[np.ndarray] = deque()
        self.observation: Observation | None = None
        self.steps = 0
        self.frames: list[np.ndarray] = []
        self.started = 0.0
        self.waiting = False
        self._reply: Any = None
        self._process: Any = None
        if remote:
            context = multiprocessing.get_context("spawn")
            self._conn, child = context.Pipe()
            self._process = context.Process(target=_worker_main, args=(child, sim, options), daemon=True)
            self._process.start()
            child.close()
            self.action_dim, self.max_steps = self._unwrap(self._conn.recv())
        else:
            self._adapter = make_sim(sim, **options)
            self.action_dim, self.max_steps = self._adapter.action_dim, self._adapter.max_steps

    def _unwrap(self, reply: tuple[str, Any]) -> Any:
        status, value = reply
        if status != "ok":
            line, trace = value
            if trace is None:
                raise ToolkitError(f"simulator worker: {line}")
            log = write_traceback(self.log_dir, "sim-worker", trace)
            raise ToolkitError(f"simulator worker: {line}; traceback: {log}")
        return value

    def send(self, command: str, argument: Any) -> None:
        self.waiting = True
        if self._process is not None:
            self._conn.send((command, argument))
        else:
            self._reply = _serve(self._adapter, command, argument)

    def recv(self) -> Any:
        self.waiting = False
        if self._process is not None:
            return self._unwrap(self._conn.recv())
        return self._reply

    def call(self, command: str, argument: Any) -> Any:
        self.send(command, argument)
        return self.recv()

    def close(self) -> None:
        if self._process is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send(("close", None))
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.terminate()
        else:
            self._adapter.close()


# ------------------------------------------------------------------------------------------ runner
def _check_actions(actions: np.ndarray, count: int, action_dim: int, where: str) -> np.ndarray:
    arr = np.asarray(actions, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != count or arr.shape[1] < 1:
        raise DataError(f"expected actions of shape ({count}, chunk, {action_dim}), got {arr.shape}", where, "actions")
    if arr.shape[2] != action_dim:
        raise DataError(
            f"policy predicts {arr.shape[2]}-D actions but the simulator takes {action_dim}-D actions", where, "actions"
        )
    return arr


class _Rollouts:
    """Drives the slots over the pending trials, writing each finished episode to the log."""

    def __init__(self, cfg: RunConfig, policy: PolicyLike, slots: list[_Slot], log: EpisodeLog, out: Path) -> None:
        self.cfg, self.policy, self.slots, self.log, self.out = cfg, policy, slots, log, out
        self.policy_s = 0.0
        self.steps = 0
        self.finished: list[EpisodeRecord] = []

    def _start(self, slot: _Slot, pending: deque[Trial]) -> None:
        slot.trial = pending.popleft() if pending else None
        slot.queue.clear()
        slot.steps = 0
        slot.frames = []
        slot.observation = None
        if slot.trial is not None:
            if len(self.slots) == 1:  # one environment: per-episode policy state can be reset
                self.policy.reset()
            slot.started = time.perf_counter()
            slot.send("reset", slot.trial)

    def _record(self, slot: _Slot, result: StepResult) -> None:
        trial = slot.trial
        if trial is None or slot.observation is None:
            raise RuntimeError("recording a slot with no episode")
        record = EpisodeRecord(
            key=trial.key,
            task=trial.task,
            index=trial.index,
            seed=trial.seed,
            instruction=slot.observation.instruction,
            success=bool(result.success),
            steps=slot.steps,
            info=dict(result.info.get("result", {})),
            wall_s=round(time.perf_counter() - slot.started, 3),
        )
        if slot.frames:  # before the record: a logged episode always has its video, even after a kill
            self._save_video(trial, slot.frames)
        self.log.append(record)
        self.finished.append(record)

    def _save_video(self, trial: Trial, frames: list[np.ndarray]) -> None:
        from evaluation.video import episode_video_path, write_mp4

        write_mp4(episode_video_path(self.out, trial.task, trial.index), frames)

    def _act(self, ready: list[_Slot]) -> None:
        images = [s.observation.images for s in ready if s.observation is not None]
        texts = [s.observation.instruction for s in ready if s.observation is not None]
        started = time.perf_counter()
        if len(ready) == 1 or not self.cfg.batch_inference:
            chunks = np.stack(
                [np.asarray(self.policy.act(i, t), dtype=np.float32) for i, t in zip(images, texts, strict=True)]
            )
        else:
            chunks = np.asarray(self.policy.act_batch(images, texts), dtype=np.float32)
        self.policy_s += time.perf_counter() - started
        chunks = _check_actions(
            chunks, len(ready), ready[0].action_dim, f"policy {self.cfg.policy or type(self.policy).__name__}"
        )
        execute = steps_per_chunk(chunks.shape[1], self.cfg.chunk_mode)
        for slot, chunk in zip(ready, chunks, strict=True):
            slot.queue.extend(chunk[:execute])

    def run(self, pending: deque[Trial], bar: tqdm) -> None:
        for slot in self.slots:
            self._start(slot, pending)
        while any(slot.trial is not None for slot in self.slots):
            for slot in self.slots:  # collect what every busy slot sent back
                if not slot.waiting:
                    continue
                reply = slot.recv()
                if isinstance(reply, Observation):
                    slot.observation = reply
                else:
                    self._after_step(slot, reply, pending, bar)
                if (
                    slot.observation is not None
                    and slot.trial is not None
                    and self.cfg.video
                    and slot.trial.index < self.cfg.video
                    and not slot.frames
                ):
                    slot.frames.append(slot.observation.images[0])
            active = [s for s in self.slots if s.trial is not None and not s.waiting and s.observation is not None]
            needy = [s for s in active if not s.queue]
            if needy:
                self._act(needy)
            for slot in active:
                slot.send("step", slot.queue.popleft())
                slot.steps += 1
                self.steps += 1

    def _after_step(self, slot: _Slot, result: StepResult, pending: deque[Trial], bar: tqdm) -> None:
        slot.observation = result.observation
        if slot.frames:
            slot.frames.append(result.observation.images[0])
        if result.info.get("new_subtask"):
            slot.queue.clear()  # a new instruction: never finish the old subtask's chunk
            if len(self.slots) == 1:
                self.policy.reset()
        if result.done or (slot.max_steps and slot.steps >= slot.max_steps):
            self._record(slot, result)
            bar.update(1)
            self._start(slot, pending)


def run_config_record(cfg: RunConfig) -> dict[str, Any]:
    """The settings that define a run's results (a rerun must match them to resume)."""
    from evaluation.remote import adapter_options

    return {
        "sim": cfg.sim,
        "policy": cfg.policy,
        "chunk_mode": cfg.chunk_mode,
        "trials": cfg.trials,
        "num_shards": cfg.num_shards,
        "shard_index": cfg.shard_index,
        "sim_options": adapter_options(cfg.sim_options),  # where the workers run is not part of the results
    }


def policy_sim_options(policy: Any, sim: str) -> dict[str, Any]:
    """The adapter options a policy asks for on `sim` (`policy.metadata["eval_sim_options"][sim]`, e.g. a paper
    preset's LIBERO crop or Simpler's late gripper opening); {} for a policy without metadata."""
    metadata = getattr(policy, "metadata", None)
    if not isinstance(metadata, Mapping):
        return {}
    per_sim = metadata.get("eval_sim_options") or {}
    options = per_sim.get(sim) or {} if isinstance(per_sim, Mapping) else per_sim
    if not isinstance(options, Mapping):
        raise ConfigError(f"policy metadata: eval_sim_options.{sim} must be a mapping, got {type(options).__name__}")
    return dict(options)


def run(cfg: RunConfig, policy: PolicyLike | None = None) -> dict[str, Any]:
    """Evaluate `policy` (or the one `cfg.policy` names) and return the summary also written to summary.json.

    The policy's own `eval_sim_options` for this simulator are defaults under `cfg.sim_options`
    (explicit options win); the options in force are what summary.json records.
    """
    if not cfg.out:
        raise ConfigError("out: a results folder is required")
    if policy is None and not cfg.policy:
        raise ConfigError("policy: a checkpoint folder, Hub id, 'zero' or 'replay:DIR' is required")
    from evaluation.remote import WorkerFleet, adapter_options, uses_workers

    external = uses_workers(cfg.sim_options)  # the simulator runs in its own environment
    if not external:
        require_package(cfg.sim)
    out = Path(cfg.out)
    policy = (
        policy if policy is not None else load_policy(cfg.policy, cfg.api_key_env, out)
    )  # `out` untouched unless it crashes
    from_policy = {k: v for k, v in policy_sim_options(policy, cfg.sim).items() if k not in cfg.sim_options}
    cfg = replace(cfg, sim_options={**from_policy, **cfg.sim_options})
    started = time.perf_counter()
    # a bad simulator option fails here, before `out` is touched
    slots: list[Any] = (
        [WorkerFleet(cfg, policy, out)] if external else _open_slots(cfg, adapter_options(cfg.sim_options))
    )
    try:
        trials = slots[0].call("trials", cfg.trials)
        simulator = slots[0].call("provenance", None)
        with output_lock(out, "evaluation run"):  # a second run on this --out would duplicate episodes
            check_run(out, run_config_record(cfg), cfg.overwrite)
            summary = _rollout_all(cfg, policy, out, slots, trials, started, external)
            summary.update(simulator=simulator, sim_options_from_policy=sorted(from_policy))
            faults.hit("eval.before_summary")
            write_json(out / SUMMARY_FILE, summary)
    finally:
        for slot in slots:
            slot.close()
    return summary


def _open_slots(cfg: RunConfig, options: dict[str, Any]) -> list[_Slot]:
    """`cfg.workers` environments (closing those already open when one fails to start)."""
    slots: list[_Slot] = []
    try:
        for _ in range(cfg.workers):
            slots.append(_Slot(cfg.sim, dict(options), remote=cfg.workers > 1, log_dir=Path(cfg.out)))  # noqa: PERF401 (one by one: close the started ones on failure)
    except BaseException:
        for slot in slots:
            slot.close()
        raise
    return slots


def _rollout_all(
    cfg: RunConfig,
    policy: PolicyLike,
    out: Path,
    slots: list[Any],
    trials: list[Trial],
    started: float,
    external: bool = False,
) -> dict[str, Any]:
    """Run this shard's unfinished trials into `out`; the summary of all its episodes (timing.json written)."""
    mine = [t for i, t in enumerate(trials) if i % cfg.num_shards == cfg.shard_index]
    log = EpisodeLog(out)
    try:
        done = {r.key for r in read_episodes(out)}
        pending = deque(t for t in mine if t.key not in done)
        policy.reset()
        rollouts = slots[0].rollouts(log) if external else _Rollouts(cfg, policy, slots, log, out)
        with progress_bar(
            total=len(mine),
            initial=len(mine) - len(pending),
            desc=f"{cfg.sim} episodes",
            unit="ep",
            enabled=cfg.progress,
        ) as bar:
            rollouts.run(pending, bar)
    finally:
        log.close()
    wall = time.perf_counter() - started
    keys = {t.key for t in mine}
    episodes = [r for r in read_episodes(out) if r.key in keys]
    metric = METRICS[cfg.sim]
    summary = {
        **run_config_record(cfg),
        "metric": metric,
        "complete": len(episodes) == len(mine),
        "episodes_expected": len(mine),
        "trials_total": len(trials),  # of the whole protocol, over every shard
        "metrics": summarize(metric, episodes),
    }
    if external:  # the simulator's own interpreter and package versions, as its worker reported them
        summary["sim_environment"] = slots[0].environment
    if isinstance(policy, WebsocketPolicy):  # what the server said it serves (checkpoint, backbone, chunk)
        summary["policy_server"] = policy.metadata
    ran = len(rollouts.finished)
    write_json(
        out / TIMING_FILE,
        {
            "wall_s": wall,
            "episodes_run": ran,
            "steps_run": rollouts.steps,
            "policy_s": rollouts.policy_s,
            "episodes_per_s": ran / wall if wall else 0.0,
            "steps_per_s": rollouts.steps / wall if wall else 0.0,
            "workers": cfg.workers,
        },
    )
    return summary
