"""Which periodic SFT checkpoint a resume may trust.

The Trainer writes `checkpoints/checkpoint-N` in place, file by file (weights, optimizer, scheduler, RNG, trainer
state), and this stage adds its card, recipe and extras (omni head, FAST tokenizer) after that. A job killed in
between leaves a `checkpoint-N` that `transformers.trainer_utils.get_last_checkpoint` still picks, and the Trainer
resumes from it silently wrong (no optimizer file: fresh AdamW moments; no trainer state: step 0 on trained
weights) or not at all (no omni head). So the stage writes `checkpoint_complete.json` last, and a resume starts
from the newest checkpoint holding it; the unfinished ones after it, this run's own, are removed first.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from datasets_build.checkpoint import CARD_FILE, RECIPE_FILE

COMPLETE_FILE = "checkpoint_complete.json"
TRAINER_STATE = "trainer_state.json"  # the Trainer's last file in a checkpoint (checkpoints written before the marker)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(folder: Path, step: int) -> None:
    """Record that `folder` holds every file of the checkpoint at `step` (called after its last file)."""
    (folder / COMPLETE_FILE).write_text(json.dumps({"step": step}) + "\n", encoding="utf-8")


def checkpoint_folders(root: Path) -> list[Path]:
    """Every `checkpoint-N` folder under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_complete(folder: Path, legacy: bool) -> bool:
    """Marked complete; or, in a run whose checkpoints predate the marker (`legacy`), holding the Trainer's state
    and the card written after it."""
    if (folder / COMPLETE_FILE).is_file():
        return True
    return legacy and all((folder / name).is_file() for name in (TRAINER_STATE, CARD_FILE, RECIPE_FILE))


def resume_checkpoint(root: Path, delete: bool = True) -> Path | None:
    """The newest complete checkpoint under `root` (None: start from step 0), after deleting (`delete`: the main
    process only) the unfinished checkpoints newer than it, which a kill left behind and the resumed run rewrites."""
    folders = checkpoint_folders(root)
    legacy = not any((p / COMPLETE_FILE).is_file() for p in folders)
    complete = [p for p in folders if is_complete(p, legacy)]
    latest = complete[-1] if complete else None
    for folder in folders:
        if delete and folder not in complete and (latest is None or folders.index(folder) > folders.index(latest)):
            shutil.rmtree(folder)
    return latest


def steps_done(folder: Path) -> int:
    """The optimizer steps checkpoint `folder` holds (its trainer state's global step)."""
    return int(json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"])
