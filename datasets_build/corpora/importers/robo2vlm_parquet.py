"""Import Robo2VLM-1 parquet files (`id`, `question`, `choices`, `correct_answer`, `image`) as robo2vlm shards.

`choices` may be a list or a serialized list (JSON or Python literal); `correct_answer` is the index of the
right choice; `image` is raw bytes or a Hugging Face image struct `{"bytes", "path"}`. Samples use the same
layout as built robo2vlm questions (task `robo2vlm/imported`), so `verify` checks their letter and options.
"""

from __future__ import annotations

import ast
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from datasets_build.corpora.base import LETTERS, format_options, frame_image
from datasets_build.errors import DataError
from datasets_build.sample import Sample, assistant_turn, key_part, user_turn
from datasets_build.shards import ShardWriter

COLUMNS = ("id", "question", "choices", "correct_answer", "image")


def parse_choices(value: Any, where: str) -> list[str]:
    """A list of option strings from a list or its JSON / Python-literal serialization."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError) as exc:
                raise DataError("choices is not a serialized list", where, "choices") from exc
    if not isinstance(value, list | tuple) or not 2 <= len(value) <= len(LETTERS):
        raise DataError(f"choices must be a list of 2-{len(LETTERS)} options", where, "choices")
    return [str(v) for v in value]


def _image(value: Any, where: str) -> Image.Image:
    data = value.get("bytes") if isinstance(value, dict) else value
    if not isinstance(data, bytes | bytearray):
        raise DataError("image has no bytes", where, "image")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except OSError as exc:
        raise DataError(f"cannot decode image ({exc})", where, "image") from exc
    return image.convert("RGB")


def iter_robo2vlm_parquet(path: str | Path, image_size: int | None = None) -> Iterator[Sample]:
    """Samples of one parquet file or of every `*.parquet` under a folder (sorted), in row order."""
    import numpy as np
    import pyarrow.parquet as pq

    root = Path(path)
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else [root]
    if not files or not files[0].exists():
        raise DataError("no parquet files", root)
    for file in files:
        table = pq.read_table(file)
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"missing columns {missing}", file)
        for row, record in enumerate(table.to_pylist()):
            where = f"{file}:row {row}"
            options = parse_choices(record["choices"], where)
            correct = record["correct_answer"]
            if not isinstance(correct, int) or not 0 <= correct < len(options):
                raise DataError(f"correct_answer must be an index into {len(options)} choices", where, "correct_answer")
            image = _image(record["image"], where)
            if image_size is not None:
                image = frame_image(np.asarray(image), image_size)
            text = f"{str(record['question']).strip()}\n{format_options(options)}\nAnswer with the option's letter."
            safe = key_part(str(record["id"]), 48, "q")
            yield Sample(
                key=f"r2v-{file.stem[:12]}-{row:07d}-{safe}"[:80],
                messages=[user_turn(text), assistant_turn(LETTERS[correct])],
                images=[image],
                task="robo2vlm/imported",
                source="robo2vlm-1",
                meta={
                    "corpus": "robo2vlm",
                    "question_type": "imported",
                    "id": str(record["id"]),
                    "options": options,
                    "correct_index": correct,
                    "answer": LETTERS[correct],
                },
            )


def import_robo2vlm_parquet(
    input: str | Path,
    out: str | Path,
    *,
    image_size: int | None = None,
    max_samples: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the parquet rows at `input` as shards in `out` (card name robo2vlm); return a summary."""
    config = {"name": "robo2vlm", "importer": "robo2vlm_parquet", "image_size": image_size, "max_samples": max_samples}
    with ShardWriter(out, "robo2vlm", overwrite=overwrite, build_config=config, inputs=[input]) as writer:
        for sample in iter_robo2vlm_parquet(input, image_size):
            if max_samples is not None and writer.num_samples >= max_samples:
                break
            writer.write(sample)
    assert writer.card is not None
    return {"out": str(out), "samples": writer.card.num_samples}
