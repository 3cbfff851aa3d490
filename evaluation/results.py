"""The results folder of one evaluation run: `run.json` (what ran), `episodes.jsonl` (appended per episode),
`summary.json` (metrics), `timing.json` and `videos/`.

Episodes are appended and flushed one line at a time, so a crashed run loses at most the episode
in flight and a rerun skips every finished trial; a torn last line is dropped on reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets_build import faults
from datasets_build.errors import ConfigError, DataError
from datasets_build.outputs import OVERWRITE_HINT
from evaluation.protocol import EpisodeRecord

RUN_FILE = "run.json"
EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
TIMING_FILE = "timing.json"


def write_json(path: Path, data: Any) -> None:
    """Write JSON under a temporary name and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    """Read a JSON file (one-line DataError when missing or malformed)."""
    if not path.is_file():
        raise DataError("no such file", path)
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"malformed JSON ({exc})", path) from exc


def read_episodes(out: Path) -> list[EpisodeRecord]:
    """Every complete episode line of `out/episodes.jsonl` (none when the file is absent)."""
    path = out / EPISODES_FILE
    if not path.is_file():
        return []
    records = []
    lines = path.read_text().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(EpisodeRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == len(lines):  # the torn tail of a crashed run: that trial simply runs again
                break
            raise DataError(f"line {number}: bad episode record ({exc})", path) from exc
    return records


class EpisodeLog:
    """Appends one JSON line per finished episode and flushes it to disk at once."""

    def __init__(self, out: Path) -> None:
        path = out / EPISODES_FILE
        self._file = path.open("a+", encoding="utf-8")
        self._file.seek(0, os.SEEK_END)
        if self._file.tell() > 0:  # drop a torn last line so the next record starts clean
            self._file.seek(0)
            text = self._file.read()
            if not text.endswith("\n"):
                keep = text[: text.rfind("\n") + 1]
                self._file.seek(0)
                self._file.truncate()
                self._file.write(keep)
                self._file.flush()

    def append(self, record: EpisodeRecord) -> None:
        """Write one record durably."""
        self._file.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        faults.hit("eval.episode")

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def check_run(out: Path, run: dict[str, Any], overwrite: bool) -> None:
    """Make `out` hold this run: create it, resume a matching one, refuse another sim's or setting's results."""
    path = out / RUN_FILE
    if path.is_file() and not overwrite:
        previous = read_json(path)
        if previous.get("sim") != run["sim"]:
            raise ConfigError(
                f"{out}: holds results of simulator {previous.get('sim')!r}, not {run['sim']!r}; use another --out"
            )
        differing = sorted(k for k in run if previous.get(k) != run[k])
        if differing:
            raise ConfigError(
                f"{out}: holds a run with other settings ({', '.join(differing)}); "
                f"use another --out, or {OVERWRITE_HINT}"
            )
    if overwrite:
        for name in (RUN_FILE, EPISODES_FILE, SUMMARY_FILE, TIMING_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, run)


def load_results(paths: Iterable[str | Path], allow_incomplete: bool = False) -> list[dict[str, Any]]:
    """`summary.json` of each results folder (or the file itself), with `path` added.

    A shard of a sharded run is refused (it is a part of one evaluation, not a result: merge the
    shards first), and so is an unfinished run unless `allow_incomplete` (then its `complete` is
    False and tables mark it).
    """
    loaded = []
    for raw in paths:
        path = Path(raw)
        file = path / SUMMARY_FILE if path.is_dir() else path
        summary = read_json(file)
        if not isinstance(summary, dict) or "sim" not in summary or "metrics" not in summary:
            raise DataError("not an evaluation summary (needs 'sim' and 'metrics')", file)
        if int(summary.get("num_shards") or 1) > 1:
            raise DataError(
                f"shard {summary.get('shard_index')} of {summary['num_shards']} of a sharded run, not a whole "
                "evaluation: join the shards first (python -m evaluation merge SHARD_RUN ... --out DIR)",
                path,
            )
        if not summary.get("complete", True) and not allow_incomplete:
            done = summary["metrics"].get("episodes", "?")
            raise DataError(
                f"incomplete run ({done} of {summary.get('episodes_expected', '?')} episodes): finish it by "
                "rerunning its command, or report it marked with allow_incomplete (--allow-incomplete)",
                path,
            )
        summary["path"] = str(path)
        loaded.append(summary)
    return loaded
