"""Import RoboPoint's `robopoint_1432k.json` (`{"id", "image", "conversations"}` records) as robopoint shards.

The first human turn (with its `<image>` tag removed) and the first gpt turn become one user/assistant pair
with a single image part; the answer text is kept as is (2-tuples are points, 4-tuples boxes). Samples use
task `robopoint/imported` and `meta["question_type"] = "imported"`, so `verify` checks the answer's form.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.corpora.base import frame_image
from datasets_build.corpora.importers.records import read_records
from datasets_build.corpora.robopoint import parse_tuples
from datasets_build.errors import DataError
from datasets_build.sample import Sample, assistant_turn, key_part, user_turn
from datasets_build.shards import ShardWriter


def _turns(record: dict[str, Any], where: str) -> tuple[str, str]:
    human = gpt = None
    for turn in record.get("conversations") or []:
        if not isinstance(turn, dict):
            continue
        if turn.get("from") == "human" and human is None:
            human = str(turn.get("value", ""))
        elif turn.get("from") == "gpt" and human is not None and gpt is None:
            gpt = str(turn.get("value", ""))
    if human is None or gpt is None:
        raise DataError("needs a human turn followed by a gpt turn", where, "conversations")
    return human.replace("<image>", "").strip(), gpt.strip()


def answer_kind(text: str) -> str:
    """ "points" (all 2-tuples), "boxes" (all 4-tuples) or "text"."""
    sizes = {len(t) for t in parse_tuples(text)}
    return "points" if sizes == {2} else "boxes" if sizes == {4} else "text"


def iter_robopoint_json(
    json_path: str | Path, image_root: str | Path, image_size: int | None = 224
) -> Iterator[Sample]:
    """Samples of the records in `json_path` (images under `image_root`), in file order."""
    path = Path(json_path)
    records = read_records(path)
    for row, record in enumerate(records):
        where = f"{path}:record {row}"
        if not isinstance(record, dict) or "image" not in record:
            raise DataError("record needs an image", where, "image")
        question, answer = _turns(record, where)
        image_path = Path(image_root) / str(record["image"])
        try:
            with Image.open(image_path) as opened:
                image = opened.convert("RGB")
        except OSError as exc:
            raise DataError(f"cannot open image ({exc})", image_path) from exc
        if image_size is not None:
            image = frame_image(np.asarray(image), image_size)
        ident = str(record.get("id", row))
        safe = key_part(ident, 56, "q")
        yield Sample(
            key=f"rp-{row:08d}-{safe}"[:80],
            messages=[user_turn(question), assistant_turn(answer)],
            images=[image],
            task="robopoint/imported",
            source="robopoint",
            meta={
                "corpus": "robopoint",
                "question_type": "imported",
                "id": ident,
                "image": str(record["image"]),
                "answer_kind": answer_kind(answer),
            },
        )


def import_robopoint_json(
    json_path: str | Path,
    image_root: str | Path,
    out: str | Path,
    image_size: int | None = 224,
    max_samples: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the records of `json_path` as shards in `out` (card name robopoint); return a summary."""
    config = {"name": "robopoint", "importer": "robopoint_json", "image_size": image_size, "max_samples": max_samples}
    with ShardWriter(out, "robopoint", overwrite=overwrite, build_config=config, inputs=[json_path]) as writer:
        for sample in iter_robopoint_json(json_path, image_root, image_size):
            if max_samples is not None and writer.num_samples >= max_samples:
                break
            writer.write(sample)
    assert writer.card is not None
    return {"out": str(out), "samples": writer.card.num_samples}
