"""`python -m evaluation sweep`: every saved checkpoint of a training run x every chunk mode, best-of reported.

The paper evaluates each saved checkpoint with the full chunk, half of it and one step, and
reports the best (Sec. 3.3); every result is kept: `OUT/<checkpoint>/<mode>/` is a normal
resumable results folder, and `OUT/sweep.json` lists them all with the best setting. With
`repeats` > 1 (stochastic policies, paper A.3) each setting runs that many times into
`rep-<k>/` subfolders and the setting's `summary.json` holds the metrics averaged over repeats.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError
from datasets_build.locking import output_lock
from evaluation.policies import load_policy
from evaluation.protocol import CHUNK_MODES, headline
from evaluation.results import SUMMARY_FILE, read_json, write_json
from evaluation.run import RunConfig, run
from evaluation.sims import METRICS, SIMULATORS
from vla.api import PolicyLike

SWEEP_FILE = "sweep.json"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")  # the names `vla train` saves under


@dataclass
class SweepConfig:
    """Which training run, simulator, chunk modes and trials; how many repeats per setting."""

    sim: str = "demo"
    run: str = ""  # training run folder holding checkpoint-NNNNNN/ folders (or one checkpoint folder)
    out: str = ""  # default: RUN/eval-SIM
    chunk_modes: list[str] = field(default_factory=lambda: list(CHUNK_MODES))
    trials: int | None = None
    workers: int = 1
    repeats: int = 1
    progress: bool = True
    sim_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sim not in SIMULATORS:
            raise ConfigError(f"sim: unknown simulator {self.sim!r}; known: {sorted(SIMULATORS)}")
        bad = [m for m in self.chunk_modes if m not in CHUNK_MODES]
        if bad or not self.chunk_modes:
            raise ConfigError(f"chunk_modes: each must be one of {list(CHUNK_MODES)}, got {self.chunk_modes}")
        if self.repeats < 1:
            raise ConfigError("repeats must be >= 1")


def find_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders in step order (the folder itself when it is one checkpoint)."""
    if not run_dir.is_dir():
        raise ConfigError(f"run: {run_dir}: no such folder")
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    if found:
        return [p for _, p in sorted(found)]
    if (run_dir / "config.json").is_file():
        return [run_dir]
    raise ConfigError(f"run: {run_dir}: no checkpoint-NNNNNN folders (nor a checkpoint's config.json)")


def average_metrics(items: list[Any]) -> Any:
    """Element-wise mean of equally-shaped metric trees (numbers averaged, anything else taken from the first)."""
    first = items[0]
    if isinstance(first, dict):
        return {k: average_metrics([i[k] for i in items if isinstance(i, dict) and k in i]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(float(i) for i in items) / len(items)
    return first


def _setting(cfg: SweepConfig, policy: PolicyLike, checkpoint: Path, mode: str, folder: Path) -> dict[str, Any]:
    runs = []
    for repeat in range(cfg.repeats):
        out = folder if cfg.repeats == 1 else folder / f"rep-{repeat}"
        run_cfg = RunConfig(
            sim=cfg.sim, policy=str(checkpoint), out=str(out), chunk_mode=mode, trials=cfg.trials,
            workers=cfg.workers, progress=cfg.progress, sim_options=dict(cfg.sim_options),
        )  # fmt: skip
        runs.append(run(run_cfg, policy=policy))
    summary = runs[0]
    if cfg.repeats > 1:
        summary = {**runs[0], "repeats": cfg.repeats, "metrics": average_metrics([r["metrics"] for r in runs])}
        write_json(folder / SUMMARY_FILE, summary)
    metric = METRICS[cfg.sim]
    return {
        "checkpoint": checkpoint.name,
        "chunk_mode": mode,
        "path": str(folder.relative_to(folder.parents[1])),
        "score": headline(metric, summary["metrics"]),
        "scores": [headline(metric, r["metrics"]) for r in runs],
    }


def sweep(cfg: SweepConfig, load: Callable[[str], PolicyLike] = load_policy) -> dict[str, Any]:
    """Run every checkpoint x chunk mode (x repeats); write and return sweep.json's content."""
    if not cfg.run:
        raise ConfigError("run: a training run folder is required")
    checkpoints = find_checkpoints(Path(cfg.run))
    out = Path(cfg.out) if cfg.out else Path(cfg.run) / f"eval-{cfg.sim}"
    with output_lock(out, "evaluation sweep"):  # two sweeps on one folder would interleave their runs
        previous = read_json(out / SWEEP_FILE) if (out / SWEEP_FILE).is_file() else None
        if previous is not None and previous.get("sim") != cfg.sim:
            raise ConfigError(f"{out}: holds a sweep of simulator {previous.get('sim')!r}, not {cfg.sim!r}")
        record: dict[str, Any] = {"sim": cfg.sim, "run": str(cfg.run), "metric": METRICS[cfg.sim], "results": []}
        for checkpoint in checkpoints:
            policy = load(str(checkpoint))
            for mode in cfg.chunk_modes:
                record["results"].append(_setting(cfg, policy, checkpoint, mode, out / checkpoint.name / mode))
                record["best"] = max(record["results"], key=lambda r: r["score"])
                write_json(out / SWEEP_FILE, record)
    return record
