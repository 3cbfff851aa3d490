"""Shard folders as Hugging Face `datasets`: the features of a record, loading, and the rows TRL's SFT takes.

`datasets.load_dataset("webdataset", data_files=...)` names each column after a tar member, so a record
(`datasets_build.sample`) loads as `json` (messages, task, source, meta as a JSON string, ...), `images.npy`
and `targets.npy`. Inferred, the image lists are binary; with `FEATURES` (passed here, and declared in the
README of a pushed Hub repo) they decode to PIL images. TRL's `SFTTrainer` wants top-level `images` and
`messages` columns, which no member name can produce: `to_trl` renames (zero-copy on an Arrow-backed
`Dataset`, lazily on an `IterableDataset`).
"""

from __future__ import annotations

import os
from typing import Any

import datasets

from datasets_build.errors import DataError
from datasets_build.sample import IMAGES_MEMBER, JSON_MEMBER, SCHEMA_VERSION, TARGETS_MEMBER
from datasets_build.shards.reader import ShardSet, ShardSpec

_TEXT = datasets.Value("string")
MESSAGES = datasets.List({"role": _TEXT, "content": datasets.List({"type": _TEXT, "text": _TEXT})})
FEATURES = datasets.Features(
    {
        IMAGES_MEMBER: datasets.List(datasets.Image()),
        JSON_MEMBER: {
            "image_format": _TEXT,
            "messages": MESSAGES,
            "meta": _TEXT,
            "schema_version": datasets.Value("int64"),
            "source": _TEXT,
            "task": _TEXT,
        },
        TARGETS_MEMBER: datasets.List(datasets.Image()),
        "__key__": _TEXT,
        "__url__": _TEXT,
    }
)
TRL_COLUMNS = ("images", "messages", "task")
TRL_FEATURES = datasets.Features(
    {"images": datasets.List(datasets.Image()), "messages": MESSAGES, "task": _TEXT, "__key__": _TEXT}
)


def load_shards(
    spec: ShardSpec,
    *,
    split: str = "train",
    streaming: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """`datasets.load_dataset("webdataset")` over the tars of a checked `ShardSet` (folder, glob or Hub id),
    with `FEATURES`: images decode to PIL, `json.meta` is a JSON string."""
    shard_set = ShardSet(spec)
    version = shard_set.card.schema_version if shard_set.card is not None else SCHEMA_VERSION
    if version != SCHEMA_VERSION:
        raise DataError(
            f"shards in record layout {version}: datasets needs layout {SCHEMA_VERSION} (ShardSet reads both; "
            "`python -m datasets_build mix --input DIR --out NEW` rewrites them)",
            shard_set.root,
            "schema_version",
        )
    files = [os.fspath(path) for path in shard_set.shards]
    return datasets.load_dataset(
        "webdataset",
        data_files={split: files},
        split=split,
        features=FEATURES,
        streaming=streaming,
        cache_dir=None if cache_dir is None else os.fspath(cache_dir),
    )


def trl_row(record: dict[str, Any]) -> dict[str, Any]:
    """One loaded record as TRL's vision-SFT row: `images`, `messages`, `task` (and `__key__`)."""
    payload = record[JSON_MEMBER]
    return {
        "images": record[IMAGES_MEMBER],
        "messages": payload["messages"],
        "task": payload["task"],
        "__key__": record["__key__"],
    }


def to_trl(dataset: datasets.Dataset | datasets.IterableDataset) -> datasets.Dataset | datasets.IterableDataset:
    """The loaded shards with the columns `SFTTrainer` reads (`images`, `messages`) plus `task` and `__key__`."""
    missing = {IMAGES_MEMBER, JSON_MEMBER, "__key__"} - set(dataset.column_names or [])
    if missing:
        raise DataError(f"not a shard dataset: no {sorted(missing)} column", field="columns")
    if isinstance(dataset, datasets.Dataset):
        flat = dataset.flatten()
        renamed = flat.rename_columns(
            {IMAGES_MEMBER: "images", f"{JSON_MEMBER}.messages": "messages", f"{JSON_MEMBER}.task": "task"}
        )
        return renamed.select_columns([*TRL_COLUMNS, "__key__"])
    return dataset.map(trl_row, remove_columns=list(dataset.column_names or []), features=TRL_FEATURES)
