"""`ShardWriter`: write `Sample`s to webdataset shards `NAME-%06d.tar` plus `dataset_card.json`.

Each shard is written as `.NAME-%06d.tar.tmp` and renamed to its final name only once complete.
The card is written last, atomically: a folder with a card holds a finished build. If the `with`
body raises (KeyboardInterrupt included), the unfinished shard AND the shards this run already
completed are deleted and no card is written, so a failed build leaves no final-named file. A
hard kill (SIGKILL, power loss) cannot clean up: it leaves at most completed shards and a temp
file, never a card, and the next build into that folder needs `overwrite=True`.

Every writer keeps `.progress.json` (written atomically at open and after each completed shard: the
completed shard entries, the counters, the skip counts, the number of samples written and the producer's
`cursor`), so a build killed hard can be resumed; `close` removes it after writing the card. A writer
opened with `resume=True` on a folder holding `.progress.json` and no card checks that name, limits,
build config and inputs are those of the interrupted run, re-checks the completed shards (size, sha256,
sample count), restores their keys from the tar member names, deletes any later shard or temp file, and
numbers the next shard after the last completed one; in resume mode `abort` deletes only the unfinished
shard. The producer then continues its (deterministic) stream after the first `num_samples` samples:
by skipping them (the mix), or from `resumed_cursor`, the `cursor` it had set before writing the first
sample that was not kept (a corpus build: its episode position), and the result is byte-identical to an
uninterrupted build. Skip counts are restored as counted when the last shard completed. With
`resume=True` and no progress file the writer starts a fresh build (`overwrite` applies as usual); a
progress file takes precedence over `overwrite`; a folder with a card has nothing to resume.

Output is byte-identical for identical samples: tar members have mtime 0, uid/gid 0, empty
user/group names and mode 0o444 (webdataset's `TarWriter` takes `mtime`, `user`, `group` and
`mode`; uid/gid stay at tarfile's default 0), and the card holds no timestamps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from datasets_build import faults
from datasets_build.atomic import CommitOrAbort
from datasets_build.errors import ConfigError, DataError, OutputExistsError
from datasets_build.outputs import OVERWRITE_HINT, is_empty, marker_kind, write_marker
from datasets_build.sample import (
    IMAGES_MEMBER,
    JSON_MEMBER,
    MEMBERS,
    TARGETS_MEMBER,
    Sample,
    count_image_parts,
    packed_count,
    upgrade_record,
    validate_messages,
)
from datasets_build.shards.card import CARD_NAME, DatasetCard, ShardEntry, fingerprint_path, to_jsonable
from datasets_build.shards.reader import sha256_file

DEFAULT_MAX_SAMPLES_PER_SHARD = 2000
DEFAULT_MAX_BYTES_PER_SHARD = 256 * 1024 * 1024
PROGRESS_NAME = ".progress.json"
PROGRESS_VERSION = 1
OUTPUT_KIND = "shards"  # the marker kind of a shard folder (datasets_build.outputs)
_RECORD_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,80}$")  # the rule `Sample` enforces on keys
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


def tar_keys(path: str | os.PathLike[str]) -> list[str]:
    """Sample keys of a shard in member order, from the tar headers alone (member data is seeked over).

    Members group by the base name before its first dot, as `iter_tar_records` and webdataset do.
    """
    keys: list[str] = []
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                dirname, _, base = member.name.rpartition("/")
                key, dot, _ = base.partition(".")
                if not (member.isfile() and dot and key):
                    continue
                key = f"{dirname}/{key}" if dirname else key
                if not keys or keys[-1] != key:
                    keys.append(key)
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read tar ({exc})", os.fspath(path)) from exc
    return keys


def _member_bytes(size: int) -> int:
    return _BLOCK + -(-size // _BLOCK) * _BLOCK


def prepare_output_folder(out: Path, overwrite: bool) -> None:
    """Create `out`, or check it is an empty folder; with `overwrite`, delete the build outputs in it (shards,
    their temp files, the card, the progress file) and nothing else. The folder gets the `shards` marker."""
    if out.exists() and not out.is_dir():
        raise DataError("output path exists and is not a folder", out)
    try:
        if out.is_dir() and not is_empty(out):
            if not overwrite:
                hint = (
                    f"an interrupted build: resume to continue it, or {OVERWRITE_HINT}"
                    if (out / PROGRESS_NAME).is_file() and not (out / CARD_NAME).exists()
                    else OVERWRITE_HINT
                )
                raise OutputExistsError(f"{out}: output folder exists and is not empty ({hint})")
            for path in out.iterdir():
                if _is_build_output(path.name):
                    path.unlink()
        out.mkdir(parents=True, exist_ok=True)
        if marker_kind(out) is None:
            write_marker(out, OUTPUT_KIND)
    except OSError as exc:
        if isinstance(exc, OutputExistsError):
            raise
        raise DataError(f"cannot prepare output folder ({exc.strerror or exc})", out) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise DataError("output folder is not writable", out)


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
        from webdataset import TarWriter  # webdataset imports torch: only when a shard is written

        self.stream = _HashingFile(self.fh)
        self.tar = TarWriter(self.stream, user="", group="", mode=0o444, mtime=0, encoder=False, compress=False)
        self.count = 0
        self.content = 0

    def finish(self) -> ShardEntry:
        self.tar.close()
        self.fh.close()
        if self.stream.size != tar_file_size(self.content):  # the size model that byte rolling relies on
            raise DataError(f"wrote {self.stream.size} bytes, expected {tar_file_size(self.content)}", self.tmp)
        faults.hit("shard.tmp_complete")
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
        resume: bool = False,
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
        self.resume = resume
        self.resumed_from = 0  # samples restored from an interrupted run
        self.cursor: Any = None  # the producer's position of the next sample (JSON); persisted with progress
        self.resumed_cursor: Any = None  # the cursor saved with the restored progress
        self.resumed_finished = False  # the interrupted run had written every sample (the card was next)
        progress = self.out_dir / PROGRESS_NAME
        self._created = not self.out_dir.exists()
        if resume and progress.is_file():
            self._restore(progress)
        else:
            self._prepare(overwrite)
            self._write_progress()

    # -- folder -------------------------------------------------------------------------------
    def _prepare(self, overwrite: bool) -> None:
        prepare_output_folder(self.out_dir, overwrite)

    # -- resume -------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        """What must match between an interrupted run and the run that resumes it."""
        return {
            "name": self.name,
            "max_samples_per_shard": self.max_samples_per_shard,
            "max_bytes_per_shard": self.max_bytes_per_shard,
            "jpeg_quality": self.jpeg_quality,
            "build_config": self.build_config,
            "inputs": self.inputs,
        }

    def _write_progress(self, finished: bool = False) -> None:
        """Atomically record the completed shards, the counters they hold and the producer's cursor."""
        state = {
            "progress_version": PROGRESS_VERSION,
            **self._settings(),
            "cursor": to_jsonable(self.cursor, "cursor"),
            "finished": finished,
            "num_samples": sum(entry.num_samples for entry in self._shards),
            "shards": [entry.to_dict() for entry in self._shards],
            "counts_per_task": dict(self._tasks),
            "counts_per_source": dict(self._sources),
            "counts_per_task_source": {task: dict(per) for task, per in self._task_sources.items()},
            "skipped": dict(self._skipped),
        }
        target = self.out_dir / PROGRESS_NAME
        try:
            fd, tmp = tempfile.mkstemp(prefix=f"{PROGRESS_NAME}.", suffix=".tmp", dir=self.out_dir)
        except OSError as exc:
            raise DataError(f"cannot write progress file ({exc.strerror or exc})", target) from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(state, fh, indent=1, sort_keys=True)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _restore(self, progress: Path) -> None:
        """Take over the completed shards of an interrupted resumable run (see the module docstring)."""
        if (self.out_dir / CARD_NAME).exists():
            raise OutputExistsError(
                f"{self.out_dir}: holds a finished build ({CARD_NAME}); nothing to resume ({OVERWRITE_HINT})"
            )
        try:
            state = json.loads(progress.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read progress file ({exc})", progress) from exc
        if not isinstance(state, dict) or state.get("progress_version") != PROGRESS_VERSION:
            raise DataError(f"not a version-{PROGRESS_VERSION} progress file", progress, "progress_version")
        for field_name, value in self._settings().items():
            if state.get(field_name) != value:
                raise ConfigError(
                    f"{progress}: {field_name} differs from the interrupted run's; resume with the same settings "
                    f"(or {OVERWRITE_HINT})"
                )
        try:
            shards = [ShardEntry(**entry) for entry in state["shards"]]
            tasks = Counter({str(k): int(v) for k, v in state["counts_per_task"].items()})
            sources = Counter({str(k): int(v) for k, v in state["counts_per_source"].items()})
            task_sources = {
                str(task): Counter({str(k): int(v) for k, v in per.items()})
                for task, per in state["counts_per_task_source"].items()
            }
            skipped = Counter({str(k): int(v) for k, v in state["skipped"].items()})
            num_samples = int(state["num_samples"])
            cursor, finished = state.get("cursor"), bool(state.get("finished", False))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"malformed progress file ({type(exc).__name__}: {exc})", progress) from exc
        keys: set[str] = set()
        for index, entry in enumerate(shards):
            path = self.out_dir / entry.name
            if entry.name != shard_file_name(self.name, index):
                raise DataError(f"shard {index} is named {entry.name!r}", progress, "shards")
            if not path.is_file():
                raise DataError("completed shard of the interrupted run is missing", path)
            if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
                raise DataError("completed shard changed since the interrupted run (size or sha256)", path)
            shard_keys = tar_keys(path)
            if len(shard_keys) != entry.num_samples or keys.intersection(shard_keys):
                raise DataError(f"holds {len(shard_keys)} distinct new keys, expected {entry.num_samples}", path)
            keys.update(shard_keys)
        if num_samples != len(keys) or sum(tasks.values()) != num_samples:
            raise DataError(f"num_samples {num_samples} disagrees with the completed shards", progress)
        listed = {entry.name for entry in shards} | {PROGRESS_NAME}
        for path in self.out_dir.iterdir():  # later shards and temp files: the resumed run writes them again
            if _is_build_output(path.name) and path.name not in listed:
                path.unlink()
        self._shards = shards
        self._keys = keys
        self._tasks, self._sources, self._task_sources, self._skipped = tasks, sources, task_sources, skipped
        self.resumed_from = num_samples
        self.resumed_cursor, self.resumed_finished = cursor, finished

    # -- writing ------------------------------------------------------------------------------

    @property
    def num_samples(self) -> int:
        """Samples written so far."""
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        """Whether a sample with this key was written (or restored by resume)."""
        return key in self._keys

    def write(self, sample: Sample) -> None:
        """Append one sample, rolling to a new shard first if it would pass either limit."""
        if not isinstance(sample, Sample):
            raise TypeError(f"ShardWriter.write takes a Sample, got {type(sample).__name__}")
        self._check_open_and_new(sample.key)
        self._append(sample.key, sample.encode(self.jpeg_quality), sample.task, sample.source)

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Append one already-encoded webdataset record byte for byte (layout 2: `__key__`, `json`, `images.npy`,
        `targets.npy`); a layout-1 record (`0.jpg`, `target.png`, ...) is first upgraded with its images as encoded.

        For copying samples between shard sets (mixing, merging) without decoding and re-encoding their images,
        which would cost time and JPEG generation loss. The record is checked as `Sample` would check it (chat
        format, image parts = images, meta a JSON object string); entries whose name starts with "_" are not
        members.
        """
        key = str(record.get("__key__", ""))
        where = f"{self.out_dir}: sample {key}"
        if not _RECORD_KEY_RE.match(key):
            raise DataError("keys are 1-80 letters, digits, '_' or '-'", where, "__key__")
        self._check_open_and_new(key)
        members = {k: v for k, v in record.items() if not k.startswith("_")}
        if not all(isinstance(v, bytes | bytearray) for v in members.values()):
            raise DataError("every member must be bytes", where)
        expected = _expected_members(members, where)
        if set(members) != expected:
            raise DataError(f"members {sorted(members)} differ from {sorted(expected)}", where)
        upgraded = upgrade_record({"__key__": key, **members}, str(self.out_dir))
        payload = json.loads(upgraded[JSON_MEMBER])
        validate_messages(payload.get("messages"), where)
        try:
            meta = json.loads(payload.get("meta"))
        except (TypeError, ValueError) as exc:
            raise DataError(f"meta must be a JSON object string ({exc})", where, "meta") from exc
        if not isinstance(meta, dict):
            raise DataError("meta must be a JSON object string", where, "meta")
        n_images = packed_count(upgraded[IMAGES_MEMBER], where)
        if count_image_parts(payload["messages"]) != n_images:
            raise DataError(f"{count_image_parts(payload['messages'])} image parts but {n_images} images", where)
        if packed_count(upgraded[TARGETS_MEMBER], where, TARGETS_MEMBER) > 1:
            raise DataError("at most one target", where, TARGETS_MEMBER)
        self._append(key, upgraded, str(payload.get("task", "")), str(payload.get("source", "")))

    def _check_open_and_new(self, key: str) -> None:
        if self._closed:
            raise DataError("writer is closed", self.out_dir)
        if key in self._keys:
            raise DataError("duplicate key in this dataset", f"{self.out_dir}: sample {key}", "__key__")

    def _finish_current(self) -> None:
        """Finish the open shard and record the progress."""
        if self._current is None:
            return
        self._shards.append(self._current.finish())
        self._current = None
        faults.hit("shard.renamed")
        self._write_progress()

    def _append(self, key: str, record: dict[str, Any], task: str, source: str) -> None:
        size = 0
        for field_name, payload in record.items():
            if field_name == "__key__":
                continue
            member = f"{key}.{field_name}"
            if len(member.encode()) > _USTAR_NAME_MAX:
                raise DataError(f"tar member name longer than {_USTAR_NAME_MAX} bytes", member, "__key__")
            size += _member_bytes(len(payload))
        cur = self._current
        if cur is not None and (
            cur.count >= self.max_samples_per_shard or tar_file_size(cur.content + size) > self.max_bytes_per_shard
        ):
            self._finish_current()
            cur = None
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
        self._keys.add(key)
        self._tasks[task] += 1
        self._sources[source] += 1
        self._task_sources.setdefault(task, Counter())[source] += 1
        faults.hit("shard.sample")

    def skip(self, reason: str, count: int = 1) -> None:
        """Count `count` inputs dropped for `reason` (recorded in the card's `skipped`)."""
        self._skipped[reason] += count

    # -- ending -------------------------------------------------------------------------------
    def _refuse_empty(self) -> None:
        """A build whose every input was skipped (e.g. --skip-bad, all bad) fails: no empty corpus."""
        if self.num_samples == 0 and self._skipped:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self._skipped.items()))
            raise DataError(f"every input was skipped ({reasons}); nothing left to write", self.out_dir, "skipped")

    def close(self) -> DatasetCard:
        """Finish the open shard and write the card; on any error, clean up as `abort` does."""
        if self._closed:
            if self.card is None:
                raise DataError("writer was aborted", self.out_dir)
            return self.card
        try:
            self._refuse_empty()
            self._finish_current()
            self._write_progress(finished=True)
            faults.hit("shard.before_card")
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
            (self.out_dir / PROGRESS_NAME).unlink(missing_ok=True)
        except BaseException:
            self.abort()
            raise
        self.card = card
        self._closed = True
        return card

    def abort(self) -> None:
        """Delete the unfinished shard, the shards this run completed and the progress file; write no card.

        In resume mode the completed shards and `.progress.json` stay, so the build can be resumed.
        """
        self._closed = True
        if self._current is not None:
            self._current.discard()
            self._current = None
        if self.resume:
            return
        for entry in self._shards:
            (self.out_dir / entry.name).unlink(missing_ok=True)
        self._shards = []
        (self.out_dir / PROGRESS_NAME).unlink(missing_ok=True)
        if self._created and self.out_dir.is_dir() and is_empty(self.out_dir):
            shutil.rmtree(self.out_dir, ignore_errors=True)  # the folder this writer made, with nothing in it


def _expected_members(members: Mapping[str, Any], where: str) -> set[str]:
    """The member names a record with this JSON must have: the three of layout 2, or layout 1's per-image ones."""
    if JSON_MEMBER not in members:
        raise DataError("record has no json member", where, JSON_MEMBER)
    try:
        payload = json.loads(members[JSON_MEMBER])
    except (TypeError, ValueError) as exc:
        raise DataError(f"invalid JSON ({exc})", where, JSON_MEMBER) from exc
    if not isinstance(payload, dict):
        raise DataError("must be a JSON object", where, JSON_MEMBER)
    if payload.get("schema_version", 1) != 1:
        return set(MEMBERS)
    fmt = payload.get("image_format", "jpg")
    expected = {JSON_MEMBER, *(f"{i}.{fmt}" for i in range(int(payload.get("images", 0))))}
    return expected | {"target.png"} if payload.get("has_target") else expected


_OUTPUT_RE = re.compile(
    r"^(\.?[A-Za-z0-9][A-Za-z0-9_.\-]*-\d{6}\.tar(\.tmp)?|\.?dataset_card\.json(\..*\.tmp)?|\.progress\.json(\..*\.tmp)?)$"
)


def _is_build_output(file_name: str) -> bool:
    """Files `overwrite` removes: shards of any name, their temp files, the card, the progress file and
    their temp files."""
    return bool(_OUTPUT_RE.match(file_name))
