"""`merge`: join the shard folders of one corpus built as a job array (`--num-shards N --shard-index I`).

Each input is a finished build (its card present) of the same corpus, source fingerprints, record layout,
toolkit version and build config except `shard_index`; together they hold every index 0..N-1 exactly
once. The tars are copied in shard-index order (then card order) to `NAME-000000.tar`, `NAME-000001.tar`,
... under temporary names, each hashed on the way and checked against its input card's sha256 and size;
keys must stay unique. The one card sums the counts and skip reasons, lists every shard with its sha256,
keeps the inputs' fingerprints, and holds the build config without `shard_index`. The output depends
only on the inputs (not on the order they are given in). A failure deletes what the merge wrote.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.outputs import cleaned_if_unused
from datasets_build.progress import progress_bar
from datasets_build.shards.card import CARD_NAME, DatasetCard, ShardEntry
from datasets_build.shards.writer import prepare_output_folder, shard_file_name, tar_keys

_COPY_BLOCK = 8 << 20
_GLOB_CHARS = ("*", "?", "[")


@dataclass
class MergeConfig:
    """Shard folders of one job-array build (`inputs`, globs allowed) -> one folder `out` with one card."""

    inputs: list[str] = field(default_factory=list)
    out: str = "runs/corpora/merged"
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class _Part:
    path: Path
    card: DatasetCard
    index: int


def expand_inputs(inputs: list[str]) -> list[Path]:
    """The input folders, globs expanded (sorted); a glob that matches nothing is an error."""
    found: list[Path] = []
    for text in inputs:
        if any(c in text for c in _GLOB_CHARS):
            matches = sorted(Path(p) for p in glob.glob(text) if Path(p).is_dir())
            if not matches:
                raise ConfigError(f"merge: inputs: {text!r} matches no folder")
            found.extend(matches)
        else:
            found.append(Path(text))
    return found


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _open_parts(paths: list[Path]) -> list[_Part]:
    """Each input's card, checked to be one part of one partitioned build; sorted by shard index."""
    parts = []
    for path in paths:
        if not (path / CARD_NAME).is_file():
            raise DataError(
                "incomplete shard folder (no dataset_card.json: its build did not finish; resume it first)", path
            )
        card = DatasetCard.read(path)
        config = card.build_config
        index, total = config.get("shard_index"), config.get("num_shards")
        if not isinstance(index, int) or not isinstance(total, int) or isinstance(index, bool):
            raise DataError("not a partitioned build (no num_shards / shard_index in its build_config)", path)
        parts.append(_Part(path, card, index))
    if not parts:
        raise ConfigError("merge: give at least one shard folder")
    first = parts[0]
    reference = _identity(first.card)
    for part in parts[1:]:
        mine = _identity(part.card)
        for what in reference:
            if mine[what] != reference[what]:
                raise DataError(
                    f"{what} differs from {first.path}'s: not parts of one build", part.path, what.replace(" ", "_")
                )
    by_index: dict[int, _Part] = {}
    for part in parts:
        if part.index in by_index:
            raise DataError(f"shard index {part.index} is given twice (also {by_index[part.index].path})", part.path)
        by_index[part.index] = part
    total = int(first.card.build_config["num_shards"])
    missing = sorted(set(range(total)) - set(by_index))
    extra = sorted(set(by_index) - set(range(total)))
    if extra:
        raise DataError(f"shard index {extra[0]} is outside 0..{total - 1}", by_index[extra[0]].path, "shard_index")
    if missing:
        listed = ", ".join(str(i) for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise DataError(f"shard index {listed} of num_shards={total} missing", "merge inputs", "shard_index")
    return [by_index[i] for i in range(total)]


def _identity(card: DatasetCard) -> dict[str, str]:
    """What every part of one build shares."""
    config = {k: v for k, v in card.build_config.items() if k != "shard_index"}
    return {
        "name": card.name,
        "build config": _canonical(config),
        "inputs": _canonical(card.inputs),
        "schema version": str(card.schema_version),
        "package version": card.package_version,
    }


def _copy_checked(src: Path, tmp: Path, entry: ShardEntry) -> None:
    """Copy `src` to `tmp`, hashing on the way; DataError if size or sha256 differ from `entry`."""
    digest = hashlib.sha256()
    size = 0
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while block := fin.read(_COPY_BLOCK):
                digest.update(block)
                fout.write(block)
                size += len(block)
    except FileNotFoundError as exc:
        raise DataError("shard listed in the card is missing", src) from exc
    except OSError as exc:
        raise DataError(f"cannot copy shard ({exc.strerror or exc})", src) from exc
    if size != entry.bytes or digest.hexdigest() != entry.sha256:
        raise DataError("size or sha256 differs from its card (corrupt shard)", src, "sha256")


def merge_corpus(cfg: MergeConfig) -> dict[str, Any]:
    """Merge `cfg.inputs` into `cfg.out` (see the module docstring); returns a summary."""
    parts = _open_parts(expand_inputs(cfg.inputs))
    out = Path(cfg.out)
    if any(out.resolve() == part.path.resolve() for part in parts):
        raise ConfigError(f"merge: out: {out} is one of the inputs")
    keys: dict[str, Path] = {}
    for part in parts:  # keys first: refuse before writing anything
        for entry in part.card.shards:
            for key in tar_keys(part.path / entry.name):
                if key in keys:
                    raise DataError(f"key {key} is also in {keys[key]}", part.path / entry.name, "__key__")
                keys[key] = part.path / entry.name
    with cleaned_if_unused(out):  # refused mid-way: no output folder left holding only its marker
        prepare_output_folder(out, cfg.overwrite)
        name = parts[0].card.name
        written: list[Path] = []
        entries: list[ShardEntry] = []
        jobs = [(part, entry) for part in parts for entry in part.card.shards]
        try:
            for number, (part, entry) in enumerate(
                progress_bar(jobs, desc=f"merge {name}", unit="tar", enabled=cfg.progress)
            ):
                final = out / shard_file_name(name, number)
                tmp = out / f".{final.name}.tmp"
                written.append(tmp)
                _copy_checked(part.path / entry.name, tmp, entry)
                os.replace(tmp, final)
                written.append(final)
                entries.append(ShardEntry(final.name, entry.num_samples, entry.bytes, entry.sha256))
            card = _merged_card(parts, entries)
            card.write(out / CARD_NAME)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
    return {
        "name": name,
        "out": str(out),
        "parts": len(parts),
        "samples": card.num_samples,
        "shards": len(entries),
        "per_task": dict(sorted(card.counts_per_task.items())),
        "skipped": dict(sorted(card.skipped.items())),
    }


def _merged_card(parts: list[_Part], entries: list[ShardEntry]) -> DatasetCard:
    tasks: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    per: dict[str, Counter[str]] = {}
    for part in parts:
        tasks.update(part.card.counts_per_task)
        sources.update(part.card.counts_per_source)
        skipped.update(part.card.skipped)
        for task, counts in part.card.counts_per_task_source.items():
            per.setdefault(task, Counter()).update(counts)
    first = parts[0].card
    return DatasetCard(
        name=first.name,
        schema_version=first.schema_version,
        package_version=first.package_version,
        num_samples=sum(e.num_samples for e in entries),
        counts_per_task=dict(tasks),
        counts_per_source=dict(sources),
        counts_per_task_source={task: dict(counts) for task, counts in per.items()},
        build_config={k: v for k, v in first.build_config.items() if k != "shard_index"},
        inputs=list(first.inputs),
        skipped=dict(skipped),
        shards=entries,
    )
