"""Stage fingerprints and the records that make finished stages cached and unfinished ones resumable.

A stage's fingerprint is a sha256 over its kind, the package version and its resolved config with the output
folder and execution-only fields left out and every input replaced by the input's own fingerprint: for an
input another stage of the recipe wrote, that stage's fingerprint and run id (so a re-run upstream re-runs
everything downstream); for outside data, the names and sizes of the folder's entries one level deep and the
bytes of its small files (no mtimes, no recursion: a copy of a dataset fingerprints the same, and CALVIN's
millions of frames cost one directory listing). A finished stage writes `recipe_stage.json` into its output
folder (fingerprint, run id, config, inputs, timing and its full result); a started one leaves a marker in
the recipe's state folder, so an unfinished output is known to be its own and can be resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORD_NAME = "recipe_stage.json"
RECORD_FORMAT = 1
SMALL_FILE = 64 * 1024  # small files of an outside input are hashed whole (configs, cards, statistics)
MAX_ENTRIES = 100_000  # an outside folder listing beyond this is summarised by its count


def package_version() -> str:
    """The toolkit's version (part of every fingerprint: a new release re-runs what it may compute differently)."""
    from datasets_build import __version__

    return str(__version__)


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj`."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_entry(path: Path, size: int) -> list[Any]:
    entry: list[Any] = [path.name, size]
    if size <= SMALL_FILE:
        with contextlib.suppress(OSError):
            entry.append(hashlib.sha256(path.read_bytes()).hexdigest())
    return entry


def outside_fingerprint(path: str | Path) -> str:
    """Cheap fingerprint of data no stage of the recipe wrote (see the module docstring); "missing" if absent."""
    root = Path(path)
    try:
        if root.is_file():
            return digest(_file_entry(root, root.stat().st_size))
        if not root.is_dir():
            return "missing"
        entries: list[Any] = []
        with os.scandir(root) as listing:
            for i, item in enumerate(sorted(listing, key=lambda e: e.name)):
                if i >= MAX_ENTRIES:
                    entries.append(["...", sum(1 for _ in os.scandir(root))])
                    break
                if item.is_dir():
                    entries.append([item.name + "/", sum(1 for _ in os.scandir(item.path))])
                else:
                    entries.append(_file_entry(Path(item.path), item.stat().st_size))
        return digest(entries)
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"


# ------------------------------------------------------------------------------------- nested config paths
def _parts(dotted: str) -> list[str]:
    return [p for p in dotted.split(".") if p]


def get_path(tree: Any, dotted: str) -> Any:
    """`tree["data"][0]["path"]` for "data.0.path" (None when absent)."""
    node = tree
    for part in _parts(dotted):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def set_path(tree: Any, dotted: str, value: Any, delete: bool = False) -> None:
    """Set (or delete) the value at a dotted path of nested dicts and lists, if its parent exists."""
    parts = _parts(dotted)
    parent = get_path(tree, ".".join(parts[:-1])) if len(parts) > 1 else tree
    last = parts[-1]
    if isinstance(parent, dict) and (last in parent or not delete):
        if delete:
            parent.pop(last, None)
        else:
            parent[last] = value
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent) and not delete:
        parent[int(last)] = value


def strip_keys(tree: Any, names: frozenset[str]) -> Any:
    """A copy of `tree` without any mapping key in `names`, at any depth."""
    if isinstance(tree, dict):
        return {k: strip_keys(v, names) for k, v in tree.items() if k not in names}
    if isinstance(tree, list):
        return [strip_keys(v, names) for v in tree]
    return tree


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in differences(a, b, f"{prefix}{i}.")]
    return [] if old == new else [prefix.rstrip(".") or "(config)"]


# ------------------------------------------------------------------------------------------------ records
@dataclass
class StageRecord:
    """What `recipe_stage.json` holds: the fingerprint and its parts, when and how long, and the full result."""

    stage: str
    kind: str
    fingerprint: str
    version: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: float = 0.0
    finished_at: float = 0.0
    seconds: float = 0.0
    host: str = field(default_factory=socket.gethostname)
    result: Any = None
    format: int = RECORD_FORMAT

    @classmethod
    def read(cls, path: Path) -> StageRecord | None:
        """The record at `path`, or None when absent or unreadable (an unreadable record caches nothing)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data) if isinstance(data, dict) and data.get("format") == RECORD_FORMAT else None
        except (OSError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        """Write atomically (temporary name, then rename)."""
        write_json(path, asdict(self))

    def token(self) -> str:
        """What a downstream stage's fingerprint takes from this one: which config, and which execution."""
        return f"{self.fingerprint}:{self.run_id}"


def write_json(path: Path, data: Any) -> None:
    """Write JSON under a temporary name and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


@dataclass
class Marker:
    """A started, not yet finished stage: its fingerprint and output (in the recipe's state folder)."""

    stage: str
    fingerprint: str
    output: str | None
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)

    @classmethod
    def read(cls, path: Path) -> Marker | None:
        """The marker at `path`, or None."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError):
            return None


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One runner per recipe state folder at a time (a second is refused with the holder's pid and host)."""
    import fcntl

    from datasets_build.errors import ConfigError

    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "lock"
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"{path}: this recipe's run folder is in use by {holder}; wait for it to end") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
