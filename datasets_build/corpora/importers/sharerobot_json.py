"""Import ShareRobot's planning, affordance and trajectory JSON files (FlagOpen/ShareRobot) as sharerobot shards.

Record layouts (ShareRobot README; the HF dataset BAAI/ShareRobot holds the files):

- planning: `{"id", "task", "selected_step", "conversations": [{"from": "human", "value": "<image 0-25> ..."},
  {"from": "gpt", "value": "<...>"}], "image": [paths]}`: the turns are kept as a chat (image tags removed),
  with every listed image as an image part of the first user turn;
- affordance: `{"id", "meta_data": {"original_dataset", "original_width", "original_height"}, "instruction",
  "affordance": {"x", "y", "width", "height"}}` in pixels, (x, y) the top-left corner: the answer is the box
  `[x1, y1, x2, y2]` normalised by the original size (else the image's), RoboBrain's format;
- trajectory: `{"id", "meta_data", "instruction", "points": [[x, y], ...]}` in pixels (also read from
  `trajectory`): the answer is robopoint's point list normalised the same way.

Affordance and trajectory records name their image by `image`, `image_path` or (as the README's
visualisation code does) a string `id`, relative to `image_root`. Samples use task `sharerobot/imported`,
`meta["question_type"] = "imported"` and `meta["answer_kind"]`, so `verify` checks the answer's form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datasets_build.answers import format_points
from datasets_build.corpora.base import frame_image
from datasets_build.corpora.importers.records import read_records
from datasets_build.corpora.sharerobot import BOX_NOTE, POINTS_NOTE, format_box, rounded_points
from datasets_build.errors import ConfigError, DataError
from datasets_build.sample import Sample, assistant_turn, key_part, user_turn
from datasets_build.shards import ShardWriter

KINDS = ("auto", "planning", "affordance", "trajectory")
_IMAGE_TAG = re.compile(r"<image(?:\s[^>]*)?>\s*")
_AFFORDANCE_PROMPT = 'The task is "{instruction}". Where should the end effector act? Predict the affordance area.'
_TRAJECTORY_PROMPT = 'The task is "{instruction}". Predict the key points of the end effector\'s trajectory.'


def record_kind(record: dict[str, Any]) -> str:
    """Which ShareRobot layout a record has: planning, affordance or trajectory ("" when none)."""
    if "conversations" in record:
        return "planning"
    if "affordance" in record:
        return "affordance"
    if "points" in record or "trajectory" in record:
        return "trajectory"
    return ""


def _load_image(image_root: Path, name: str, where: str, image_size: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """The RGB image (resized so its longer side is `image_size`) and its original (width, height)."""
    path = image_root / name
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except OSError as exc:
        raise DataError(f"cannot open image {path} ({exc})", where, "image") from exc
    original = image.size
    if image_size is not None:
        image = frame_image(np.asarray(image), image_size)
    return image, original


def _image_name(record: dict[str, Any], where: str) -> str:
    for key in ("image", "image_path"):
        value = record.get(key)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and value:
            return value
    if isinstance(record.get("id"), str) and record["id"]:
        return str(record["id"])
    raise DataError("needs an image path (image, image_path or a string id)", where, "image")


def _original_size(record: dict[str, Any], image_size: tuple[int, int], where: str) -> tuple[float, float]:
    """(width, height) the pixel coordinates refer to: meta_data's original size, else the image's."""
    meta = record.get("meta_data")
    if isinstance(meta, dict) and "original_width" in meta and "original_height" in meta:
        try:
            width, height = float(meta["original_width"]), float(meta["original_height"])
        except (TypeError, ValueError) as exc:
            raise DataError("original_width/height must be numbers", where, "meta_data") from exc
        if width <= 0 or height <= 0:
            raise DataError("original_width/height must be > 0", where, "meta_data")
        return width, height
    return float(image_size[0]), float(image_size[1])


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise DataError(f"expected a number, got {value!r}", where, name)
    return float(value)


def _instruction(record: dict[str, Any], where: str) -> str:
    text = record.get("instruction")
    if not isinstance(text, str) or not text.strip():
        raise DataError("needs a non-empty instruction", where, "instruction")
    return text.strip()


def _planning(record: dict[str, Any], where: str, image_root: Path, image_size: int | None) -> dict[str, Any]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2:
        raise DataError("needs a list of at least two turns", where, "conversations")
    messages: list[dict[str, Any]] = []
    for i, turn in enumerate(turns):
        role = {"human": "user", "gpt": "assistant"}.get(turn.get("from", "") if isinstance(turn, dict) else "")
        value = turn.get("value") if isinstance(turn, dict) else None
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected or not isinstance(value, str):
            raise DataError(
                f"turn {i} must be a {'human' if i % 2 == 0 else 'gpt'} turn with a value", where, f"conversations[{i}]"
            )
        messages.append({"role": role, "text": _IMAGE_TAG.sub("", value).strip()})
    if messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    names = record.get("image", [])
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise DataError("must be a path or a list of paths", where, "image")
    images = [_load_image(image_root, n, where, image_size)[0] for n in names]
    chat = [
        user_turn(m["text"], n_images=len(images) if i == 0 else 0)
        if m["role"] == "user"
        else assistant_turn(m["text"])
        for i, m in enumerate(messages)
    ]
    meta = {"task_family": str(record.get("task", "")), "selected_step": record.get("selected_step")}
    return {"messages": chat, "images": images, "meta": meta, "image": names}


def _affordance(record: dict[str, Any], where: str, image_root: Path, image_size: int | None) -> dict[str, Any]:
    instruction = _instruction(record, where)
    box = record.get("affordance")
    if not isinstance(box, dict):
        raise DataError("must be an object with x, y, width, height", where, "affordance")
    x, y, w, h = (_number(box.get(k), where, f"affordance.{k}") for k in ("x", "y", "width", "height"))
    if w < 0 or h < 0:
        raise DataError("width and height must be >= 0", where, "affordance")
    name = _image_name(record, where)
    image, size = _load_image(image_root, name, where, image_size)
    width, height = _original_size(record, size, where)
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        raise DataError(f"box outside the {width:g}x{height:g} image", where, "affordance")
    norm = [min(1.0, max(0.0, v)) for v in (x / width, y / height, (x + w) / width, (y + h) / height)]
    text = _AFFORDANCE_PROMPT.format(instruction=instruction) + " " + BOX_NOTE
    return {
        "messages": [user_turn(text), assistant_turn(format_box(norm))],
        "images": [image],
        "meta": {"instruction": instruction, "box_pixels": [x, y, w, h], "original_size": [width, height]},
        "image": name,
    }


def _trajectory(record: dict[str, Any], where: str, image_root: Path, image_size: int | None) -> dict[str, Any]:
    instruction = _instruction(record, where)
    key = "points" if "points" in record else "trajectory"
    raw = record.get(key)
    if not isinstance(raw, list) or not raw:
        raise DataError("must be a non-empty list of [x, y]", where, key)
    points: list[tuple[float, float]] = []
    for i, p in enumerate(raw):
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise DataError("expected [x, y]", where, f"{key}[{i}]")
        points.append((_number(p[0], where, f"{key}[{i}]"), _number(p[1], where, f"{key}[{i}]")))
    name = _image_name(record, where)
    image, size = _load_image(image_root, name, where, image_size)
    width, height = _original_size(record, size, where)
    for i, (px, py) in enumerate(points):
        if not (-1 <= px <= width + 1 and -1 <= py <= height + 1):
            raise DataError(f"point outside the {width:g}x{height:g} image", where, f"{key}[{i}]")
    norm = rounded_points([(px / width, py / height) for px, py in points])
    text = _TRAJECTORY_PROMPT.format(instruction=instruction) + " " + POINTS_NOTE
    return {
        "messages": [user_turn(text), assistant_turn(format_points(norm))],
        "images": [image],
        "meta": {
            "instruction": instruction,
            "points_pixels": [list(p) for p in points],
            "original_size": [width, height],
        },
        "image": name,
    }


_CONVERTERS = {"planning": _planning, "affordance": _affordance, "trajectory": _trajectory}


def json_files(input_path: str | Path) -> list[Path]:
    """The JSON file itself, or every `*.json` under a folder (sorted); DataError when there are none."""
    path = Path(input_path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise DataError("no .json files in this folder", path)
        return files
    if not path.is_file():
        raise DataError("no such file or folder", path)
    return [path]


def iter_sharerobot_json(
    json_path: str | Path, image_root: str | Path, kind: str = "auto", image_size: int | None = 224
) -> Iterator[tuple[str, Sample | DataError]]:
    """(where, sample) per record of one file in order; a bad record yields (where, DataError) instead."""
    if kind not in KINDS:
        raise ConfigError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    path = Path(json_path)
    records = read_records(path, allow_single=True)
    root = Path(image_root)
    for row, record in enumerate(records):
        where = f"{path}:record {row}"
        try:
            yield where, _convert(record, row, path, root, kind, image_size, where)
        except DataError as exc:
            yield where, exc


def _convert(record: Any, row: int, path: Path, root: Path, kind: str, image_size: int | None, where: str) -> Sample:
    if not isinstance(record, dict):
        raise DataError("expected an object", where)
    found = record_kind(record)
    wanted = found if kind == "auto" else kind
    if not found or found != wanted:
        field = {"planning": "conversations", "affordance": "affordance", "trajectory": "points"}.get(wanted, "")
        raise DataError(f"not a ShareRobot {wanted} record".replace("  ", " "), where, field or None)
    parts = _CONVERTERS[wanted](record, where, root, image_size)
    ident = str(record.get("id", row))
    return Sample(
        key=f"sr-{key_part(path.stem, 16, 'f')}-{row:08d}-{key_part(ident, 40, 'q')}"[:80],
        messages=parts["messages"],
        images=parts["images"],
        task="sharerobot/imported",
        source="sharerobot",
        meta={
            "corpus": "sharerobot",
            "question_type": "imported",
            "answer_kind": wanted,
            "id": ident,
            "file": path.name,
            "image": parts["image"],
            **parts["meta"],
        },
    )


def import_sharerobot_json(
    input: str | Path,
    image_root: str | Path,
    out: str | Path,
    kind: str = "auto",
    image_size: int | None = 224,
    max_samples: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Write the records of a ShareRobot JSON file (or a folder of them) as shards in `out`; return a summary.

    A bad record raises DataError naming the file, record and field (the output folder is left untouched),
    or with `skip_bad` is counted in the card as "bad_record:<field>".
    """
    if kind not in KINDS:
        raise ConfigError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if max_samples is not None and max_samples < 1:
        raise ConfigError(f"max_samples: must be >= 1, got {max_samples}")
    files = json_files(input)
    config = {
        "name": "sharerobot",
        "importer": "sharerobot_json",
        "kind": kind,
        "image_size": image_size,
        "max_samples": max_samples,
        "skip_bad": skip_bad,
    }
    per_kind: dict[str, int] = {}
    with ShardWriter(
        out, "sharerobot", overwrite=overwrite, build_config=config, inputs=[str(f) for f in files]
    ) as writer:
        for path in files:
            if max_samples is not None and writer.num_samples >= max_samples:
                break
            for _where, item in iter_sharerobot_json(path, image_root, kind, image_size):
                if max_samples is not None and writer.num_samples >= max_samples:
                    break
                if isinstance(item, DataError):
                    if not skip_bad:
                        raise item
                    writer.skip(f"bad_record:{item.field or 'record'}")
                    continue
                writer.write(item)
                answer_kind = str(item.meta["answer_kind"])
                per_kind[answer_kind] = per_kind.get(answer_kind, 0) + 1
    assert writer.card is not None
    return {
        "out": str(out),
        "samples": writer.card.num_samples,
        "per_kind": dict(sorted(per_kind.items())),
        "skipped": dict(sorted(writer.card.skipped.items())),
    }
