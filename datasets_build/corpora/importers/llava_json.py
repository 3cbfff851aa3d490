"""Import LLaVA-style instruction data (`{"id", "image", "conversations"}` records) as general-VQA shards.

`image` is one path, a list of paths (multi-image) or absent (text-only record), relative to
`image_root`. Every turn is kept (multi-turn): `human` -> user, `gpt` -> assistant, a leading
`system` -> system; turns must alternate user/assistant and end with an answer. `<image>` tags are
removed from the text and all image parts go, in order, at the start of the first user turn (the
layout Qwen-VL and TRL expect); if any tags are present there must be one per image. Images keep
their size unless `image_size` caps the longer side. Samples get task `general_vqa/<dataset>` and
source `<dataset>` (default: the json file's stem); `meta` records where each came from (file,
record index, id, image paths). Bad records raise DataError naming file, record and field, or with
`skip_bad` are counted in the card as "bad_record:<field>".
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.corpora.base import frame_image
from datasets_build.corpora.importers.records import read_records
from datasets_build.errors import ConfigError, DataError
from datasets_build.progress import progress_bar
from datasets_build.sample import Sample, key_part
from datasets_build.shards import ShardWriter

CORPUS = "general_vqa"
IMAGE_TAG = "<image>"
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_TAG_RE = re.compile(r"[ \t]*<image>[ \t]*\n?")


def strip_image_tags(text: str) -> str:
    """`text` without its `<image>` tags (and the spaces and line break around each)."""
    return _TAG_RE.sub("", text).strip()


def cap_image(image: Image.Image, image_size: int | None) -> Image.Image:
    """RGB `image`, shrunk so its longer side is at most `image_size` (None: unchanged); never enlarged."""
    image = image.convert("RGB")
    if image_size is not None and max(image.size) > image_size:
        image = frame_image(np.asarray(image), image_size)
    return image


def chat_messages(turns: Sequence[tuple[str, str]], n_images: int, where: str, field: str) -> list[dict[str, Any]]:
    """HF chat messages from (role, text) turns, `n_images` image parts at the start of the first user turn.

    Roles are normalised with ROLE_ALIASES; a system turn may only come first; user and assistant
    alternate, starting with user and ending with assistant. `<image>` tags must number 0 or `n_images`.
    """
    tags = sum(text.count(IMAGE_TAG) for _, text in turns)
    if tags and tags != n_images:
        raise DataError(f"{tags} {IMAGE_TAG} tags but {n_images} images", where, field)
    messages: list[dict[str, Any]] = []
    expected = "user"
    for i, (raw_role, text) in enumerate(turns):
        role = ROLE_ALIASES.get(raw_role)
        if role is None:
            raise DataError(f"unknown speaker {raw_role!r}", where, f"{field}[{i}]")
        if role == "system" and not messages:
            messages.append({"role": "system", "content": [{"type": "text", "text": strip_image_tags(text)}]})
            continue
        if role != expected:
            raise DataError(f"expected a {expected} turn, got {raw_role!r} (turns alternate)", where, f"{field}[{i}]")
        clean = strip_image_tags(text)
        parts: list[dict[str, Any]] = []
        if role == "user" and not any(m["role"] == "user" for m in messages):
            parts = [{"type": "image"} for _ in range(n_images)]
        if clean:
            parts.append({"type": "text", "text": clean})
        if not parts or (role == "assistant" and not clean):
            raise DataError(f"empty {role} turn", where, f"{field}[{i}]")
        messages.append({"role": role, "content": parts})
        expected = "assistant" if role == "user" else "user"
    if expected != "user":
        raise DataError("must end with an assistant turn", where, field)
    return messages


def _conversation(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError("must be a non-empty list of turns", where, "conversations")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataError("turn needs a string value", where, f"conversations[{i}].value")
        out.append((str(turn.get("from", "")), turn["value"]))
    return out


def _image_names(record: dict[str, Any], where: str) -> list[str]:
    value = record.get("image")
    if value is None or value == "":
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError("must be a path or a list of paths", where, "image")
    return names


def _load_image(path: Path, where: str, image_size: int | None) -> Image.Image:
    try:
        with Image.open(path) as opened:
            return cap_image(opened, image_size)
    except OSError as exc:
        raise DataError(f"cannot open image {path} ({exc})", where, "image") from exc


def record_sample(
    record: Any, row: int, where: str, image_root: Path, dataset: str, source_file: str, image_size: int | None
) -> Sample:
    """The Sample of one LLaVA record (DataError naming `where` and the field on a bad record)."""
    if not isinstance(record, dict):
        raise DataError("record must be an object", where)
    names = _image_names(record, where)
    messages = chat_messages(_conversation(record, where), len(names), where, "conversations")
    images = [_load_image(image_root / name, where, image_size) for name in names]
    ident = str(record.get("id", row))
    return Sample(
        key=f"{key_part(dataset, 24, 'vqa')}-{row:08d}-{key_part(ident, 40, 'q')}"[:80],
        messages=messages,
        images=images,
        task=f"{CORPUS}/{dataset}",
        source=dataset,
        meta={
            "corpus": CORPUS,
            "question_type": dataset,
            "dataset": dataset,
            "id": ident,
            "image": names,
            "source_file": source_file,
            "record_index": row,
            "turns": sum(1 for m in messages if m["role"] == "user"),
        },
    )


def iter_llava_json(
    json_path: str | Path,
    image_root: str | Path,
    dataset: str | None = None,
    image_size: int | None = None,
    skipped: dict[str, int] | None = None,
    progress: bool = False,
) -> Iterator[Sample]:
    """Samples of the records of `json_path`, in file order.

    A bad record raises DataError naming the file, record index and field, unless `skipped` is given:
    then it is counted there under "bad_record:<field>" and left out.
    """
    path = Path(json_path)
    name = key_part(dataset or path.stem, 40, "llava")
    records = read_records(path)
    for row, record in enumerate(progress_bar(records, desc=f"import {name}", unit="rec", enabled=progress)):
        where = f"{path}:record {row}"
        try:
            yield record_sample(record, row, where, Path(image_root), name, path.name, image_size)
        except DataError as exc:
            if skipped is None:
                raise
            reason = f"bad_record:{(exc.field or 'record').split('[')[0]}"
            skipped[reason] = skipped.get(reason, 0) + 1


def import_llava_json(
    json_path: str | Path,
    image_root: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    name: str = CORPUS,
    image_size: int | None = None,
    max_samples: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the records of `json_path` (images under `image_root`) as shards named `name` in `out`; summary."""
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"import llava-json: max_samples must be >= 1, got {max_samples}")
    dataset_name = key_part(dataset or Path(json_path).stem, 40, "llava")
    config = {
        "name": name,
        "importer": "llava_json",
        "dataset": dataset_name,
        "image_size": image_size,
        "max_samples": max_samples,
        "skip_bad": skip_bad,
    }
    skipped: dict[str, int] = {}
    with ShardWriter(out, name, overwrite=overwrite, build_config=config, inputs=[json_path]) as writer:
        samples = iter_llava_json(
            json_path, image_root, dataset_name, image_size, skipped if skip_bad else None, progress
        )
        for sample in samples:
            writer.write(sample)
            if max_samples is not None and writer.num_samples >= max_samples:
                break
        for reason, count in sorted(skipped.items()):
            writer.skip(reason, count)
    assert writer.card is not None
    return {"out": str(out), "samples": writer.card.num_samples, "skipped": dict(sorted(skipped.items()))}
