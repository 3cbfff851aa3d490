"""`ShardWriter`: write `Sample`s to webdataset shards `NAME-%06d.tar` plus `dataset_card.json`.

Each shard is written as `.NAME-%06d.tar.tmp` and renamed to its final name only once complete.
The card is written last, atomically: a folder with a card holds a finished build. If the `with`
body raises (KeyboardInterrupt included), the unfinished shard AND the shards this run already
completed are deleted and no card is written, so a failed build leaves no final-named file. A
hard kill (SIGKILL, power loss) cannot clean up: it leaves at most completed shards and a temp
file, never a card, and the next build into that folder needs `overwrite=True`.

Output is byte-identical for identical samples: tar members have mtime 0, uid/gid 0, empty
user/group names and mode 0o444 (webdataset's `TarWriter` takes `mtime`, `user`, `group` and
`mode`; uid/gid stay at tarfile's default 0), and the card holds no timestamps.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tarfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from webdataset import TarWriter

from datasets_build.atomic import CommitOrAbort
from datasets_build.errors import ConfigError, DataError, OutputExistsError
from datasets_build.sample import Sample
from datasets_build.shards.card import CARD_NAME, DatasetCard, ShardEntry, fingerprint_path, to_jsonable

DEFAULT_MAX_SAMPLES_PER_SHARD = 2000
DEFAULT_MAX_BYTES_PER_SHARD = 256 * 1024 * 1024
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_USTAR_NAME_MAX = 100
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def shard_file_name(name: str, index: int) -> str:
    """Final file name of shard `index` of dataset `name`: `NAME-000000.tar`."""
    return f"{name}-{index:06d}.tar"


def tar_file_size(content_bytes: int) -> int:
    """Size of a finished tar whose members take `content_bytes` (headers + padded data).

    tarfile appends two zero blocks and pads the archive to a whole 10240-byte record.
    """
    end = content_bytes + 2 * _BLOCK
    return -(-end // _RECORD) * _RECORD


def _member_bytes(size: int) -> int:
    return _BLOCK + -(-size // _BLOCK) * _BLOCK


class _HashingFile:
    """Write-only file wrapper that hashes and counts every byte on its way to disk."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.fh.flush()


class _OpenShard:
    def __init__(self, index: int, final: Path, tmp: Path) -> None:
        self.index = index
        self.final = final
        self.tmp = tmp
        try:
            self.fh = open(tmp, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in finish/discard
        except OSError as exc:
            raise DataError(f"cannot create shard ({exc.strerror or exc})", tmp) from exc
        self.stream = _HashingFile(self.fh)
        self.tar = TarWriter(self.stream, user="", group="", mode=0o444, mtime=0, encoder=False, compress=False)
        self.count = 0
        self.content = 0

    def finish(self) -> ShardEntry:
        self.tar.close()
        self.fh.close()
        if self.stream.size != tar_file_size(self.content):  # the size model that byte rolling relies on
            raise DataError(f"wrote {self.stream.size} bytes, expected {tar_file_size(self.content)}", self.tmp)
        os.replace(self.tmp, self.final)
        return ShardEntry(self.final.name, self.count, self.stream.size, self.stream.sha.hexdigest())

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # the file is deleted next; a second error would hide the first
            self.tar.close()
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class ShardWriter(CommitOrAbort):
    """Write Samples into size- and count-limited webdataset shards and, on success, the dataset card.

    Use as a context manager; `write(sample)` per record, `skip(reason)` to count a dropped input.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        name: str,
        *,
        max_samples_per_shard: int = DEFAULT_MAX_SAMPLES_PER_SHARD,
        max_bytes_per_shard: int = DEFAULT_MAX_BYTES_PER_SHARD,
        overwrite: bool = False,
        build_config: Mapping[str, Any] | None = None,
        inputs: Sequence[str | os.PathLike[str] | Mapping[str, Any]] | None = None,
        jpeg_quality: int = 95,
    ) -> None:
        if not _NAME_RE.match(name):
            raise ConfigError(f"dataset name {name!r} may hold only letters, digits, '_', '-' and '.'")
        if max_samples_per_shard < 1:
            raise ConfigError(f"max_samples_per_shard must be >= 1, got {max_samples_per_shard}")
        if max_bytes_per_shard < 1:
            raise ConfigError(f"max_bytes_per_shard must be >= 1, got {max_bytes_per_shard}")
        self.out_dir = Path(out_dir)
        self.name = name
        self.max_samples_per_shard = max_samples_per_shard
        self.max_bytes_per_shard = max_bytes_per_shard
        self.jpeg_quality = jpeg_quality
        self.build_config: dict[str, Any] = to_jsonable(dict(build_config or {}))
        self.inputs: list[dict[str, Any]] = [
            to_jsonable(dict(item), "inputs") if isinstance(item, Mapping) else fingerprint_path(item)
            for item in inputs or []
        ]
        self._keys: set[str] = set()
        self._shards: list[ShardEntry] = []
        self._current: _OpenShard | None = None
        self._tasks: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._task_sources: dict[str, Counter[str]] = {}
        self._skipped: Counter[str] = Counter()
        self._closed = False
        self.card: DatasetCard | None = None
        self._prepare(overwrite)

    # -- folder -------------------------------------------------------------------------------
    def _prepare(self, overwrite: bool) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise DataError("output path exists and is not a folder", out)
        try:
            if out.is_dir() and any(out.iterdir()):
                if not overwrite:
                    raise OutputExistsError(
                        f"{out}: output folder exists and is not empty (use overwrite to replace it)"
                    )
                for path in out.iterdir():
                    if _is_build_output(path.name):
                        path.unlink()
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if isinstance(exc, OutputExistsError):
                raise
            raise DataError(f"cannot prepare output folder ({exc.strerror or exc})", out) from exc
        if not os.access(out, os.W_OK | os.X_OK):
            raise DataError("output folder is not writable", out)

    # -- writing ------------------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Samples written so far."""
        return len(self._keys)

    def write(self, sample: Sample) -> None:
        """Append one sample, rolling to a new shard first if it would pass either limit."""
        if self._closed:
            raise DataError("writer is closed", self.out_dir)
        if not isinstance(sample, Sample):
            raise TypeError(f"ShardWriter.write takes a Sample, got {type(sample).__name__}")
        if sample.key in self._keys:
            raise DataError("duplicate key in this dataset", f"{self.out_dir}: sample {sample.key}", "__key__")
        record = sample.encode(self.jpeg_quality)
        size = 0
        for field_name, payload in record.items():
            if field_name == "__key__":
                continue
            member = f"{sample.key}.{field_name}"
            if len(member.encode()) > _USTAR_NAME_MAX:
                raise DataError(f"tar member name longer than {_USTAR_NAME_MAX} bytes", member, "__key__")
            size += _member_bytes(len(payload))
        cur = self._current
        if cur is not None and (
            cur.count >= self.max_samples_per_shard or tar_file_size(cur.content + size) > self.max_bytes_per_shard
        ):
            self._shards.append(cur.finish())
            self._current = cur = None
        if cur is None:
            index = len(self._shards)
            final = self.out_dir / shard_file_name(self.name, index)
            cur = self._current = _OpenShard(index, final, self.out_dir / f".{final.name}.tmp")
        try:
            cur.tar.write(record)
        except OSError as exc:
            raise DataError(f"cannot write shard ({exc.strerror or exc})", cur.tmp) from exc
        cur.count += 1
        cur.content += size
        self._keys.add(sample.key)
        self._tasks[sample.task] += 1
        self._sources[sample.source] += 1
        self._task_sources.setdefault(sample.task, Counter())[sample.source] += 1

    def skip(self, reason: str, count: int = 1) -> None:
        """Count `count` inputs dropped for `reason` (recorded in the card's `skipped`)."""
        self._skipped[reason] += count

    # -- ending -------------------------------------------------------------------------------
    def close(self) -> DatasetCard:
        """Finish the open shard and write the card; on any error, clean up as `abort` does."""
        if self._closed:
            if self.card is None:
                raise DataError("writer was aborted", self.out_dir)
            return self.card
        try:
            if self._current is not None:
                self._shards.append(self._current.finish())
                self._current = None
            card = DatasetCard(
                name=self.name,
                num_samples=self.num_samples,
                counts_per_task=dict(self._tasks),
                counts_per_source=dict(self._sources),
                counts_per_task_source={task: dict(per) for task, per in self._task_sources.items()},
                build_config=self.build_config,
                inputs=self.inputs,
                skipped=dict(self._skipped),
                shards=list(self._shards),
            )
            card.write(self.out_dir / CARD_NAME)
        except BaseException:
            self.abort()
            raise
        self.card = card
        self._closed = True
        return card

    def abort(self) -> None:
        """Delete the unfinished shard and the shards this run completed; write no card."""
        self._closed = True
        if self._current is not None:
            self._current.discard()
            self._current = None
        for entry in self._shards:
            (self.out_dir / entry.name).unlink(missing_ok=True)
        self._shards = []


_OUTPUT_RE = re.compile(r"^(\.?[A-Za-z0-9][A-Za-z0-9_.\-]*-\d{6}\.tar(\.tmp)?|\.?dataset_card\.json(\..*\.tmp)?)$")


def _is_build_output(file_name: str) -> bool:
    """Files `overwrite` removes: shards of any name, their temp files, the card and its temp files."""
    return bool(_OUTPUT_RE.match(file_name))
