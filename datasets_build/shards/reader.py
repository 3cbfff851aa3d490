"""`ShardSet`: open shards from a folder, a glob, a list of tar paths or a Hub dataset id; yield `Sample`s.

Opening checks the dataset card (present, supported schema, every listed shard present with its
listed size; sha256 too with `verify=True`). Iteration reads tar members with `tarfile` (no pickle,
no webdataset decoders) in card order; `select` partitions deterministically for job arrays and
`shuffled` gives a seeded order.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import os
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from datasets_build.errors import DataError
from datasets_build.sample import Sample
from datasets_build.shards.card import CARD_NAME, DatasetCard, ShardEntry

ShardSpec = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_READ_BUFFER = 1 << 20


def resolve_hub_dataset(
    repo_id: str, *, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Local folder of Hub dataset `repo_id` via `huggingface_hub.snapshot_download` (uses the HF cache).

    With HF_HUB_OFFLINE=1 it resolves from the cache only. `cache_dir` defaults to huggingface_hub's
    HF_HUB_CACHE, which that library reads from the environment once, at import.
    """
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, cache_dir=None if cache_dir is None else Path(cache_dir)
        )
    except Exception as exc:  # hub errors are many classes; all mean "cannot get it"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"no such local path, and cannot get it as a Hub dataset ({type(exc).__name__}: {first_line})", repo_id
        ) from exc
    return Path(folder)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_READ_BUFFER):
            digest.update(block)
    return digest.hexdigest()


def iter_tar_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Raw webdataset records of one tar: {"__key__", "__url__", "json": bytes, "images.npy": bytes, ...}.

    Members are grouped by the part of the base name before its first dot, as webdataset does.
    """
    where = os.fspath(path)
    seen: set[str] = set()
    record: dict[str, Any] = {}
    try:
        with open(path, "rb", buffering=_READ_BUFFER) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise DataError("unsafe member name (absolute or with '..')", f"{where}:{member.name}", "name")
                dirname, _, base = member.name.rpartition("/")
                key, dot, suffix = base.partition(".")
                if not dot or not key:
                    continue
                if dirname:
                    key = f"{dirname}/{key}"
                if record and record["__key__"] != key:
                    yield record
                    record = {}
                if not record:
                    if key in seen:
                        raise DataError("key appears twice in the shard", f"{where}:{key}", "__key__")
                    seen.add(key)
                    record = {"__key__": key, "__url__": where}
                if suffix in record:
                    raise DataError("member appears twice", f"{where}:{key}", suffix)
                data = tar.extractfile(member)
                record[suffix] = data.read() if data is not None else b""
    except FileNotFoundError as exc:
        raise DataError("shard not found", where) from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot read tar ({exc})", where) from exc
    if record:
        yield record


class ShardSet:
    """A set of shards with its dataset card: `len()` samples, iterate `Sample`s in a deterministic order.

    `spec`: a shard folder, a glob of tars, one tar, a list of tars (one folder), or a Hub dataset id
    "ORG/NAME" (a path that exists wins over an id).
    """

    def __init__(
        self,
        spec: ShardSpec,
        *,
        require_card: bool = True,
        verify: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        paths, root, listed_all = _resolve(spec, revision=revision, cache_dir=cache_dir)
        self.root: Path = root
        self.card: DatasetCard | None = None
        entries: dict[str, ShardEntry] = {}
        card_path = root / CARD_NAME
        if card_path.is_file():
            self.card = DatasetCard.read(card_path)
            entries = {e.name: e for e in self.card.shards}
            if listed_all:
                paths = [root / e.name for e in self.card.shards]
        elif require_card:
            raise DataError(
                "dataset card not found (unfinished build? pass require_card=False to read anyway)", card_path
            )
        if not paths and self.card is None:
            raise DataError("no shards found", os.fspath(spec) if isinstance(spec, str | os.PathLike) else root)
        self._entries: list[ShardEntry | None] = []
        for path in paths:
            entry = entries.get(path.name) if self.card is not None else None
            if self.card is not None and (entry is None or path.parent.resolve() != root.resolve()):
                raise DataError(f"shard is not listed in {card_path}", path)
            if not path.is_file():
                raise DataError("shard listed in the card is missing" if entry else "shard not found", path)
            if entry is not None:
                size = path.stat().st_size
                if size != entry.bytes:
                    raise DataError(f"size is {size} bytes, the card says {entry.bytes}", path, "bytes")
            self._entries.append(entry)
        self.shards: list[Path] = list(paths)
        self._shuffle_seed: int | None = None
        self._shuffle_buffer = 0
        self._sample_stride: tuple[int, int] | None = None
        self._len: int | None = None
        if verify:
            self.verify()

    # -- checks -------------------------------------------------------------------------------
    def verify(self) -> None:
        """Re-hash every shard against the card; DataError names the first shard that differs."""
        for path, entry in zip(self.shards, self._entries, strict=True):
            if entry is None:
                continue
            digest = sha256_file(path)
            if digest != entry.sha256:
                raise DataError(f"sha256 is {digest}, the card says {entry.sha256} (corrupt shard)", path, "sha256")

    # -- views --------------------------------------------------------------------------------
    def select(self, num_shards: int, shard_index: int, *, by: Literal["shard", "sample"] = "shard") -> ShardSet:
        """Part `shard_index` of a `num_shards`-way partition: tar files round-robin (`by="shard"`),
        or every `num_shards`-th sample (`by="sample"`, for fewer tars than jobs; reads all tars).
        """
        if num_shards < 1 or not 0 <= shard_index < num_shards:
            raise DataError(f"need 0 <= shard_index < num_shards, got {shard_index} of {num_shards}", field="select")
        if self._sample_stride is not None:
            raise DataError("select() was already applied by sample; select once", field="select")
        view = copy.copy(self)
        view._len = None
        if by == "shard":
            view.shards = self.shards[shard_index::num_shards]
            view._entries = self._entries[shard_index::num_shards]
        elif by == "sample":
            view._sample_stride = (num_shards, shard_index)
        else:
            raise DataError(f"by must be 'shard' or 'sample', got {by!r}", field="select")
        return view

    def shuffled(self, seed: int, buffer_size: int = 1000) -> ShardSet:
        """A view that iterates in a seeded order: tar order permuted, then a `buffer_size` sample buffer."""
        if buffer_size < 1:
            raise DataError(f"buffer_size must be >= 1, got {buffer_size}", field="shuffle")
        view = copy.copy(self)
        view._shuffle_seed = seed
        view._shuffle_buffer = buffer_size
        return view

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._len is None:
            if all(e is not None for e in self._entries):
                total = sum(e.num_samples for e in self._entries if e is not None)
            else:
                total = sum(_count_keys(p) for p in self.shards)
            if self._sample_stride is not None:
                n, i = self._sample_stride
                total = len(range(i, total, n))
            self._len = total
        return self._len

    def records(self) -> Iterator[dict[str, Any]]:
        """Raw records (bytes per member, plus `__key__` and `__url__`) in this view's order."""
        shards = list(self.shards)
        rng = random.Random(self._shuffle_seed) if self._shuffle_seed is not None else None
        if rng is not None:
            rng.shuffle(shards)
        stream: Iterator[dict[str, Any]] = (rec for path in shards for rec in iter_tar_records(path))
        if self._sample_stride is not None:
            n, i = self._sample_stride
            stream = (rec for k, rec in enumerate(stream) if k % n == i)
        if rng is not None:
            stream = _buffer_shuffle(stream, rng, self._shuffle_buffer)
        return stream

    def __iter__(self) -> Iterator[Sample]:
        for record in self.records():
            yield Sample.decode(record, where=str(record.get("__url__", "shard")))

    def __repr__(self) -> str:
        name = self.card.name if self.card is not None else "?"
        return f"ShardSet({name!r}, shards={len(self.shards)}, root={os.fspath(self.root)!r})"


def read_samples(
    spec: ShardSpec,
    *,
    require_card: bool = True,
    verify: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 1000,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Iterator[Sample]:
    """Open `spec` as a ShardSet (checked), take part `shard_index` of `num_shards`, optionally shuffle,
    and yield its Samples: the one-call entry for builders, training and tools.
    """
    shard_set = ShardSet(spec, require_card=require_card, verify=verify, revision=revision, cache_dir=cache_dir)
    if num_shards != 1 or shard_index != 0:
        shard_set = shard_set.select(num_shards, shard_index)
    if shuffle_seed is not None:
        shard_set = shard_set.shuffled(shuffle_seed, shuffle_buffer)
    return iter(shard_set)


def _buffer_shuffle(stream: Iterator[dict[str, Any]], rng: random.Random, size: int) -> Iterator[dict[str, Any]]:
    buffer: list[dict[str, Any]] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(size)
        out = buffer[j]
        buffer[j] = item
        yield out
    rng.shuffle(buffer)
    yield from buffer


def _count_keys(path: Path) -> int:
    keys = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                dirname, _, base = member.name.rpartition("/")
                key, dot, _ = base.partition(".")
                if member.isfile() and dot and key:
                    keys.add((dirname, key))
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot read tar ({exc})", path) from exc
    return len(keys)


def _resolve(
    spec: ShardSpec, *, revision: str | None, cache_dir: str | os.PathLike[str] | None
) -> tuple[list[Path], Path, bool]:
    """(tar paths, folder holding them and the card, whether the card's list should define the shards)."""
    if isinstance(spec, str | os.PathLike):
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            return sorted(path.glob("*.tar")), path, True
        if path.is_file():
            return [path], path.parent, False
        if _GLOB_CHARS.search(text):
            matches = sorted(Path(p) for p in glob.glob(text))
            if not matches:
                raise DataError("glob matches no file", text)
            return _one_folder(matches, text), matches[0].parent, False
        if _HUB_ID_RE.match(text):
            folder = resolve_hub_dataset(text, revision=revision, cache_dir=cache_dir)
            return sorted(folder.glob("*.tar")), folder, True
        raise DataError("no such shard folder, tar file, glob match or Hub dataset id", text)
    paths = [Path(p) for p in spec]
    if not paths:
        raise DataError("empty list of shards", field="shards")
    return _one_folder(paths, "shard list"), paths[0].parent, False


def _one_folder(paths: list[Path], where: str) -> list[Path]:
    parents = {p.parent.resolve() for p in paths}
    if len(parents) > 1:
        raise DataError(f"shards come from {len(parents)} folders; a ShardSet reads one dataset folder", where)
    return paths
