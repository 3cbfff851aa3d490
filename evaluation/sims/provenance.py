"""What a result was measured with: simulator package versions and the sha256 of the task files it read.

Each adapter's `provenance()` builds its record from these helpers; `evaluation run` writes it
into `summary.json` under `simulator`, and `evaluation merge` refuses shards whose records differ,
so two results can be compared (or told apart) by their physics, assets and protocol files.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed distribution version of each name (None when it is not installed)."""
    return {name: _version(name) for name in names}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def sha256_file(path: str | Path) -> str:
    """sha256 of one file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: Iterable[str | Path]) -> str:
    """One sha256 over several files, each as (name, length, bytes) in the order given."""
    digest = hashlib.sha256()
    for raw in paths:
        path = Path(raw)
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of a JSON-ready value in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
