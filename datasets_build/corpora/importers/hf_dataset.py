"""Import a Hugging Face dataset with `messages` + `images` columns (TRL's VLM SFT layout) as general-VQA shards.

The dataset is a Hub id or local folder read with `datasets.load_dataset` (parquet/json/...
folders too), or a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read
with `load_from_disk`). Each row's `messages` is HF chat format: `role` user/assistant/system
(human/gpt accepted) and `content` either a string or typed parts (`{"type": "text", "text"}`,
`{"type": "image"}`; the null fields Arrow adds to unify parts are dropped). Typed parts are kept
where they are and must number as many image parts as the row has images; string contents follow
the LLaVA rule (`<image>` tags removed, image parts at the start of the first user turn). `images`
is a list of PIL images (an `Image` feature), of `{"bytes", "path"}` structs or of paths, or a
single image; `images_column=None` imports a text-only dataset. Samples get task
`general_vqa/<dataset>` and source `<dataset>` (default: the last part of the id or path).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from datasets_build.corpora.importers.llava_json import CORPUS, ROLE_ALIASES, cap_image, chat_messages
from datasets_build.errors import ConfigError, DataError
from datasets_build.progress import progress_bar
from datasets_build.sample import Sample, key_part
from datasets_build.shards import ShardWriter


def load_rows(name_or_path: str, split: str, cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The `split` of a dataset: `load_from_disk` for a `save_to_disk` folder, else `load_dataset`."""
    import datasets

    path = Path(name_or_path)
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
        else:
            loaded = datasets.load_dataset(
                name_or_path, split=split, cache_dir=None if cache_dir is None else os.fspath(cache_dir)
            )
    except Exception as exc:  # datasets raises many classes (FileNotFoundError, ValueError, hub errors...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"cannot load dataset ({type(exc).__name__}: {first})", name_or_path) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"no split {split!r} (has {sorted(loaded)})", name_or_path, "split")
        return loaded[split]
    return loaded


def to_image(value: Any, where: str, field: str) -> Image.Image:
    """A PIL image from a decoded image, raw bytes, an `{"bytes", "path"}` struct or a file path."""
    if isinstance(value, Image.Image):
        return value
    data = value.get("bytes") if isinstance(value, dict) else value
    target: Any = None
    if isinstance(data, bytes | bytearray):
        target = io.BytesIO(data)
    elif isinstance(value, dict) and isinstance(value.get("path"), str):
        target = value["path"]
    elif isinstance(value, str):
        target = value
    if target is None:
        raise DataError(f"not an image ({type(value).__name__})", where, field)
    try:
        image = Image.open(target)
        image.load()
    except OSError as exc:
        raise DataError(f"cannot decode image ({exc})", where, field) from exc
    return image


def _images(value: Any, where: str, field: str, image_size: int | None) -> list[Image.Image]:
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    return [cap_image(to_image(item, where, f"{field}[{j}]"), image_size) for j, item in enumerate(items)]


def _typed_messages(messages: list[Any], n_images: int, where: str, field: str) -> list[dict[str, Any]]:
    """Messages with typed parts kept in place (null fields dropped); image parts must equal `n_images`."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        role = ROLE_ALIASES.get(str(message.get("role")))
        if role is None:
            raise DataError(f"unknown role {message.get('role')!r}", where, f"{field}[{i}].role")
        content = message.get("content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image":
                    parts.append({"type": "image"})
                elif kind == "text" and isinstance(part.get("text"), str):
                    parts.append({"type": "text", "text": part["text"]})
                else:
                    raise DataError(f"bad content part {part!r}", where, f"{field}[{i}].content[{j}]")
        else:
            raise DataError("content must be a string or a list of parts", where, f"{field}[{i}].content")
        out.append({"role": role, "content": parts})
    found = sum(1 for m in out for p in m["content"] if p["type"] == "image")
    if found != n_images:
        raise DataError(f"{found} image parts but {n_images} images", where, field)
    return out


def row_messages(messages: Any, n_images: int, where: str, field: str) -> list[dict[str, Any]]:
    """HF chat messages of one row: typed parts kept in place, or string contents laid out LLaVA-style."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise DataError("must be a non-empty list of {role, content} turns", where, field)
    if any(isinstance(m.get("content"), list) for m in messages):
        return _typed_messages(messages, n_images, where, field)
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message.get("content"), str):
            raise DataError("content must be a string or a list of parts", where, f"{field}[{i}].content")
        turns.append((str(message.get("role")), message["content"]))
    return chat_messages(turns, n_images, where, field)


def iter_hf_dataset(
    name_or_path: str,
    split: str = "train",
    messages_column: str = "messages",
    images_column: str | None = "images",
    dataset: str | None = None,
    image_size: int | None = None,
    skipped: dict[str, int] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Iterator[Sample]:
    """Samples of the rows of `split`, in row order.

    A bad row raises DataError naming the dataset, split, row index and field, unless `skipped` is
    given: then it is counted there under "bad_record:<field>" and left out.
    """
    rows = load_rows(name_or_path, split, cache_dir)
    columns = list(getattr(rows, "column_names", None) or [])
    for column in (messages_column, images_column):
        if column is not None and column not in columns:
            raise DataError(f"no column {column!r} (has {columns})", f"{name_or_path}[{split}]", column)
    name = key_part(dataset or Path(name_or_path.rstrip("/")).name, 40, "hf")
    for row, record in enumerate(progress_bar(rows, desc=f"import {name}", unit="row", enabled=progress)):
        where = f"{name_or_path}[{split}]:row {row}"
        try:
            images = [] if images_column is None else _images(record[images_column], where, images_column, image_size)
            messages = row_messages(record[messages_column], len(images), where, messages_column)
            ident = record.get("id")
            yield Sample(
                key=f"{key_part(name, 24, 'hf')}-{row:08d}",
                messages=messages,
                images=images,
                task=f"{CORPUS}/{name}",
                source=name,
                meta={
                    "corpus": CORPUS,
                    "question_type": name,
                    "dataset": name,
                    "split": split,
                    "record_index": row,
                    "id": None if ident is None else str(ident),
                    "turns": sum(1 for m in messages if m["role"] == "user"),
                },
            )
        except DataError as exc:
            if skipped is None:
                raise
            reason = f"bad_record:{(exc.field or 'record').split('[')[0]}"
            skipped[reason] = skipped.get(reason, 0) + 1


def import_hf_dataset(
    name_or_path: str,
    split: str,
    out: str | Path,
    messages_column: str = "messages",
    images_column: str | None = "images",
    *,
    dataset: str | None = None,
    name: str = CORPUS,
    image_size: int | None = None,
    max_samples: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the rows of `name_or_path`'s `split` as shards named `name` in `out`; return a summary."""
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"import hf-dataset: max_samples must be >= 1, got {max_samples}")
    dataset_name = key_part(dataset or Path(name_or_path.rstrip("/")).name, 40, "hf")
    config = {
        "name": name,
        "importer": "hf_dataset",
        "dataset": dataset_name,
        "split": split,
        "messages_column": messages_column,
        "images_column": images_column,
        "image_size": image_size,
        "max_samples": max_samples,
        "skip_bad": skip_bad,
    }
    local = Path(name_or_path).exists()
    card_input: str | dict[str, Any] = name_or_path if local else {"hub_id": name_or_path, "split": split}
    skipped: dict[str, int] = {}
    with ShardWriter(out, name, overwrite=overwrite, build_config=config, inputs=[card_input]) as writer:
        samples = iter_hf_dataset(
            name_or_path,
            split,
            messages_column,
            images_column,
            dataset_name,
            image_size,
            skipped if skip_bad else None,
            cache_dir,
            progress,
        )
        for sample in samples:
            writer.write(sample)
            if max_samples is not None and writer.num_samples >= max_samples:
                break
        for reason, count in sorted(skipped.items()):
            writer.skip(reason, count)
    assert writer.card is not None
    return {"out": str(out), "samples": writer.card.num_samples, "skipped": dict(sorted(skipped.items()))}
