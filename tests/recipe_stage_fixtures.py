"""A small real stage kind for the runner's tests: writes one file per step, resumes, can be interrupted.

`count_stage` writes `step-<i>.txt` files into `out` and `done.json` last (its "complete"), appends one line per
execution to `log` (so a test can count executions), reads `input` when given (so it has an upstream), and
raises a DataError after `$RECIPE_TEST_CRASH_AT` steps (an interruption that is not part of its config).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_build.errors import DataError, OutputExistsError


@dataclass
class CountConfig:
    """Steps to write into `out`; `input` is read and its text copied into every step."""

    out: str = ""
    input: str = ""
    steps: int = 3
    log: str = ""
    resume: bool = False
    workers: int = 1


def count_stage(cfg: CountConfig) -> dict[str, Any]:
    """Write the steps not yet written (resume) and `done.json`; return what it did."""
    out = Path(cfg.out)
    if out.is_dir() and any(out.iterdir()) and not cfg.resume:
        raise OutputExistsError(f"{out}: not empty")
    out.mkdir(parents=True, exist_ok=True)
    text = ""
    if cfg.input:
        source = Path(cfg.input)
        text = (source / "done.json").read_text() if source.is_dir() else source.read_text()
    start = len(list(out.glob("step-*.txt")))
    crash_at = os.environ.get("RECIPE_TEST_CRASH_AT")
    for i in range(start, cfg.steps):
        if crash_at is not None and i == int(crash_at):
            raise DataError(f"interrupted at step {i}", out)
        (out / f"step-{i}.txt").write_text(f"{i} {len(text)}\n")
    (out / "done.json").write_text(json.dumps({"steps": cfg.steps}) + "\n")
    if cfg.log:
        with open(cfg.log, "a", encoding="utf-8") as handle:
            handle.write(f"{out.name} from {start} rank {os.environ.get('RANK', '-')} pid {os.getpid()}\n")
    return {"steps": cfg.steps, "resumed_from": start, "pid": os.getpid(), "world_size": os.environ.get("WORLD_SIZE")}
