"""`dataset_card.json`: what a shard folder holds, how it was built, and the sha256 of each shard.

The card is written last (atomically), so its presence marks a finished build. It holds no
timestamps: the same inputs, config and seed must give a byte-identical card.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.sample import LEGACY_SCHEMA_VERSION, SCHEMA_VERSION

CARD_NAME = "dataset_card.json"
SUPPORTED_SCHEMA_VERSIONS = (LEGACY_SCHEMA_VERSION, SCHEMA_VERSION)  # record layouts (datasets_build.sample)
SMALL_FILE_BYTES = 1 << 20
CONTENT_BUDGET_BYTES = 64 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SHARD_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+\.tar$")


def package_version() -> str:
    """The installed toolkit version, or "0+unknown" when running from an uninstalled checkout."""
    try:
        return metadata.version("vlm4vla-toolkit")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def to_jsonable(value: Any, where: str = "build_config") -> Any:
    """Normalise a config value to plain JSON types (Path -> str, tuple -> list); raise on anything else.

    Refusing arbitrary objects keeps the card deterministic (no `repr` with memory addresses).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ConfigError(f"{where}: {value} is not valid JSON")
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be strings, got {k!r}")
            out[k] = to_jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigError(f"{where}: {type(value).__name__} is not JSON-serialisable")


def fingerprint_path(
    path: str | os.PathLike[str],
    *,
    small_file_bytes: int = SMALL_FILE_BYTES,
    content_budget_bytes: int = CONTENT_BUDGET_BYTES,
) -> dict[str, Any]:
    """Cheap deterministic fingerprint of an input file or folder: {path, fingerprint, files, bytes}.

    sha256 over the sorted relative paths and sizes, plus the full content of files <= `small_file_bytes`
    (in sorted order, until `content_budget_bytes` have been hashed, so a folder of millions of small
    files such as CALVIN's per-frame npz stays cheap). No mtimes: a copy of the data fingerprints the same.
    """
    root = Path(path)
    if not root.exists():
        raise DataError("input does not exist", root, "inputs")
    if root.is_file():
        entries = [(root.name, root)]
    else:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for filename in sorted(filenames):
                full = Path(dirpath) / filename
                entries.append((full.relative_to(root).as_posix(), full))
        entries.sort(key=lambda e: e[0])
    digest = hashlib.sha256()
    total = 0
    budget = content_budget_bytes
    for rel, full in entries:
        try:
            size = full.stat().st_size
            digest.update(f"{rel}\0{size}\n".encode())
            if size <= small_file_bytes and size <= budget:
                digest.update(hashlib.sha256(full.read_bytes()).digest())
                budget -= size
        except OSError as exc:
            raise DataError(f"cannot read input ({exc.strerror or exc})", full, "inputs") from exc
        total += size
    return {"path": os.fspath(path), "fingerprint": digest.hexdigest(), "files": len(entries), "bytes": total}


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the card lists it: file name (relative to the card), sample count, size, sha256."""

    name: str
    num_samples: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"name": self.name, "num_samples": self.num_samples, "bytes": self.bytes, "sha256": self.sha256}


@dataclass
class DatasetCard:
    """Contents of `dataset_card.json`: counts, build config, input fingerprints, skips and shard list."""

    name: str
    schema_version: int = SCHEMA_VERSION
    package_version: str = field(default_factory=package_version)
    num_samples: int = 0
    counts_per_task: dict[str, int] = field(default_factory=dict)
    counts_per_source: dict[str, int] = field(default_factory=dict)
    counts_per_task_source: dict[str, dict[str, int]] = field(default_factory=dict)
    build_config: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    shards: list[ShardEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form with every mapping sorted, so equal cards serialise to equal bytes."""
        return {
            "name": self.name,
            "schema_version": self.schema_version,
            "package_version": self.package_version,
            "num_samples": self.num_samples,
            "counts_per_task": dict(sorted(self.counts_per_task.items())),
            "counts_per_source": dict(sorted(self.counts_per_source.items())),
            "counts_per_task_source": {
                task: dict(sorted(per.items())) for task, per in sorted(self.counts_per_task_source.items())
            },
            "build_config": to_jsonable(self.build_config),
            "inputs": to_jsonable(self.inputs, "inputs"),
            "skipped": dict(sorted(self.skipped.items())),
            "shards": [s.to_dict() for s in self.shards],
        }

    def dumps(self) -> str:
        """The exact text written to disk (sorted keys, 2-space indent, trailing newline)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file in the same folder + os.replace); `path` may be the folder."""
        target = Path(path)
        if target.is_dir():
            target = target / CARD_NAME
        text = self.dumps().encode()
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise DataError(f"cannot write card ({exc.strerror or exc})", target.parent) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DatasetCard:
        """Load and validate a card (`path` may be the folder); DataError names the file and field."""
        target = Path(path)
        if target.is_dir():
            target = target / CARD_NAME
        try:
            raw = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError("dataset card not found (unfinished build, or not a shard folder?)", target) from exc
        except OSError as exc:
            raise DataError(f"cannot read dataset card ({exc.strerror or exc})", target) from exc
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise DataError(f"invalid JSON ({exc})", target) from exc
        return cls.from_dict(raw, target)

    @classmethod
    def from_dict(cls, raw: Any, where: str | os.PathLike[str] = CARD_NAME) -> DatasetCard:
        """Validate the JSON form; every error names `where` and the offending field.

        Unknown fields are ignored, so a card from a newer toolkit with the same schema still reads.
        """
        w = os.fspath(where)
        if not isinstance(raw, dict):
            raise DataError("card must be a JSON object", w)
        name = _get(raw, "name", str, w)
        version = _get(raw, "schema_version", int, w)
        if version not in SUPPORTED_SCHEMA_VERSIONS:
            raise DataError(
                f"schema version {version} is not supported (this toolkit reads {list(SUPPORTED_SCHEMA_VERSIONS)})",
                w,
                "schema_version",
            )
        shards = []
        for i, entry in enumerate(_get(raw, "shards", list, w)):
            f = f"shards[{i}]"
            if not isinstance(entry, dict):
                raise DataError("must be an object", w, f)
            shard = ShardEntry(
                name=_get(entry, "name", str, w, f"{f}."),
                num_samples=_count(_get(entry, "num_samples", int, w, f"{f}."), w, f"{f}.num_samples"),
                bytes=_count(_get(entry, "bytes", int, w, f"{f}."), w, f"{f}.bytes"),
                sha256=_get(entry, "sha256", str, w, f"{f}."),
            )
            if not _SHARD_NAME_RE.match(shard.name) or shard.name.startswith("."):
                raise DataError(f"bad shard file name {shard.name!r}", w, f"{f}.name")
            if not _SHA256_RE.match(shard.sha256):
                raise DataError("must be 64 lowercase hex digits", w, f"{f}.sha256")
            shards.append(shard)
        if len({s.name for s in shards}) != len(shards):
            raise DataError("a shard is listed twice", w, "shards")
        card = cls(
            name=name,
            schema_version=version,
            package_version=_get(raw, "package_version", str, w),
            num_samples=_count(_get(raw, "num_samples", int, w), w, "num_samples"),
            counts_per_task=_counts(_get(raw, "counts_per_task", dict, w), w, "counts_per_task"),
            counts_per_source=_counts(_get(raw, "counts_per_source", dict, w), w, "counts_per_source"),
            counts_per_task_source={
                task: _counts(per, w, f"counts_per_task_source.{task}")
                for task, per in _get(raw, "counts_per_task_source", dict, w).items()
            },
            build_config=_get(raw, "build_config", dict, w),
            inputs=_get(raw, "inputs", list, w),
            skipped=_counts(_get(raw, "skipped", dict, w), w, "skipped"),
            shards=shards,
        )
        listed = sum(s.num_samples for s in shards)
        if listed != card.num_samples:
            raise DataError(f"is {card.num_samples} but the shards hold {listed}", w, "num_samples")
        for fname in ("counts_per_task", "counts_per_source"):
            total = sum(getattr(card, fname).values())
            if total != card.num_samples:
                raise DataError(f"sums to {total}, not num_samples={card.num_samples}", w, fname)
        return card


def _get(raw: dict[str, Any], key: str, kind: type, where: str, prefix: str = "") -> Any:
    if key not in raw:
        raise DataError("missing", where, prefix + key)
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"must be {kind.__name__}, got {type(value).__name__}", where, prefix + key)
    return value


def _count(value: int, where: str, fname: str) -> int:
    if value < 0:
        raise DataError(f"must be >= 0, got {value}", where, fname)
    return value


def _counts(raw: Any, where: str, fname: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise DataError(f"must be an object, got {type(raw).__name__}", where, fname)
    for key, value in raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DataError(f"must be a count >= 0, got {value!r}", where, f"{fname}.{key}")
    return dict(raw)
