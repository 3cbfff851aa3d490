"""The episode layouts of a training source (actions and language, no images), read once and cached.

`vla train` reads every episode's layout before the first step: the global sampler indexes its samples from
them, an epoch-based schedule counts them, and the action statistics (when no stats.json is given) come from
the same pass. The main process writes them to `OUT/episode_index/` (arrays in an npz, text in a JSON, both
written under temporary names and renamed) with a fingerprint of the source; the other ranks and a resumed run
load that instead of reading the dataset again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from datasets_build.episode import LanguageWindow
from datasets_build.errors import DataError
from datasets_build.inspection import ACTION_KEY
from datasets_build.progress import progress_bar
from datasets_build.sources.base import EpisodeLayout, Source
from datasets_build.stats import RunningStats

INDEX_DIR = "episode_index"
ARRAYS = "layouts.npz"
TEXT = "layouts.json"
FORMAT = 1


def read_layouts(source: Source, progress: bool = True) -> list[EpisodeLayout]:
    """Every episode's layout, in `episode_keys()` order (skipped ones left out under `skip_bad`)."""
    keys = source.episode_keys()
    return [
        _layout_or_skip(source, key, i)
        for i, key in enumerate(progress_bar(keys, desc="index", unit="ep", enabled=progress))
    ]


def _layout_or_skip(source: Source, key: Any, position: int) -> EpisodeLayout:
    """The layout, or (under `skip_bad`) an empty one that keeps the list aligned with `episode_keys()`."""
    try:
        return source.episode_layout(key)
    except DataError as exc:
        if not source.skip_bad:
            raise
        source.skipped[exc.field or type(exc).__name__] += 1
        return EpisodeLayout(f"skipped:{position}", np.zeros((0, 7), np.float32))


def fingerprint(source: str, path: str, options: dict[str, Any]) -> dict[str, Any]:
    """What identifies a source's layouts (a cache made for another one is not reused)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {
        "format": FORMAT,
        "source": source,
        "path": str(resolved),
        "mtime_ns": stat.st_mtime_ns,
        "options": json.loads(json.dumps(options, sort_keys=True, default=str)),
    }


def save_layouts(folder: str | Path, layouts: list[EpisodeLayout], key: dict[str, Any]) -> Path:
    """Write the layouts to `folder/episode_index/` (each file atomically)."""
    out = Path(folder) / INDEX_DIR
    out.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray([len(layout) for layout in layouts], dtype=np.int64)
    actions = np.concatenate([layout.actions for layout in layouts]) if layouts else np.zeros((0, 7), np.float32)
    tmp = out / f".{ARRAYS}.tmp.npz"
    np.savez(tmp, lengths=lengths, actions=actions.astype(np.float32))
    tmp.replace(out / ARRAYS)
    text = {
        "fingerprint": key,
        "episodes": [
            {
                "id": layout.episode_id,
                "instruction": layout.instruction,
                "language": [[w.start, w.end, w.instruction, w.task] for w in layout.language],
                "cameras": list(layout.cameras),
            }
            for layout in layouts
        ],
    }
    tmp_json = out / f".{TEXT}.tmp"
    tmp_json.write_text(json.dumps(text))
    tmp_json.replace(out / TEXT)
    return out


def load_layouts(folder: str | Path, key: dict[str, Any]) -> list[EpisodeLayout] | None:
    """The cached layouts when present and made for the same source (`key`), else None."""
    out = Path(folder) / INDEX_DIR
    if not (out / ARRAYS).is_file() or not (out / TEXT).is_file():
        return None
    try:
        text = json.loads((out / TEXT).read_text())
        if text.get("fingerprint") != key:
            return None
        with np.load(out / ARRAYS) as arrays:
            lengths, actions = arrays["lengths"], arrays["actions"]
    except (OSError, ValueError, KeyError):
        return None
    episodes = text.get("episodes", [])
    if len(episodes) != len(lengths) or int(lengths.sum()) != len(actions):
        return None
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [
        EpisodeLayout(
            str(e["id"]),
            actions[bounds[i] : bounds[i + 1]],
            str(e["instruction"]),
            [LanguageWindow(int(a), int(b), str(t), str(task)) for a, b, t, task in e["language"]],
            tuple(e["cameras"]),
        )
        for i, e in enumerate(episodes)
    ]


def layout_stats(layouts: list[EpisodeLayout]) -> dict[str, Any]:
    """Action statistics in the `stats` command's layout, from the layouts' actions ({} when there are none)."""
    running = RunningStats(7)
    for layout in layouts:
        running.update(layout.actions)
    return {ACTION_KEY: running.result()} if running.count else {}
