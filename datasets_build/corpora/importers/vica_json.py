"""Import ViCA-322K task files (`{source}/{base,complex}/<task>.json`) as vica shards.

Each file holds LLaVA-Video records `{"id", "video", "conversations": [{"from": "human", "value":
"<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}`. `num_frames` frames evenly spaced over the
record's video (under `video_root`) are decoded with PyAV and become the image parts of the first user
turn, in time order; every human/gpt pair becomes a user/assistant turn (complex tasks are multi-turn).
Samples use task `vica/imported:<task>` and `meta["question_type"] = "imported"`, so `verify` checks
only the first answer's form (a letter, a number or text: `meta["answer_kind"]`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from datasets_build.corpora.base import frame_image
from datasets_build.corpora.importers.records import read_records
from datasets_build.corpora.vica import answer_kind
from datasets_build.errors import DataError
from datasets_build.sample import Sample, assistant_turn, key_part, user_turn
from datasets_build.shards import ShardWriter

SCENE_SOURCES = ("arkitscenes", "scannet", "scannetpp")


def task_files(input_path: str | Path) -> list[Path]:
    """The task json files of `input_path`: the file itself, or every `*.json` under the folder, sorted."""
    path = Path(input_path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if files:
            return files
        raise DataError("no .json task files found", path)
    raise DataError("no such file or folder", path)


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def read_video_frames(path: str | Path, num_frames: int) -> tuple[list[np.ndarray], list[int]]:
    """`num_frames` RGB frames (uint8 H, W, 3) evenly spaced over the video, and their frame indices."""
    video = Path(path)
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise DataError("file has no video stream", video)
            total = int(container.streams.video[0].frames or 0)
        for attempt in range(2):
            if total <= 0 or attempt == 1:
                total = _count_frames(video)
            if total <= 0:
                raise DataError("video has no frames", video)
            wanted = sorted({int(i) for i in np.linspace(0, total - 1, num_frames).round()})
            found: dict[int, np.ndarray] = {}
            with av.open(str(video)) as container:
                for index, frame in enumerate(container.decode(video=0)):
                    if index in wanted:
                        found[index] = frame.to_ndarray(format="rgb24")
                    if index >= wanted[-1]:
                        break
            if len(found) == len(wanted):
                return [found[i] for i in wanted], wanted
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"cannot decode video ({exc})", video) from exc
    raise DataError("the stream reports more frames than it decodes", video)


def _turns(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs of `conversations`, `<image>` tags removed; DataError if none."""
    turns = record.get("conversations")
    if not isinstance(turns, list):
        raise DataError("must be a list of turns", where, "conversations")
    pairs: list[tuple[str, str]] = []
    question: str | None = None
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataError("turn needs a string value", where, f"conversations[{i}].value")
        speaker = turn.get("from")
        if speaker == "human" and question is None:
            question = turn["value"].replace("<image>", "").strip()
        elif speaker == "gpt" and question is not None:
            pairs.append((question, turn["value"].strip()))
            question = None
        else:
            raise DataError(
                f"unexpected speaker {speaker!r} (turns alternate human, gpt)", where, f"conversations[{i}].from"
            )
    if not pairs or not pairs[0][0] or not pairs[0][1]:
        raise DataError("needs a non-empty human turn followed by a gpt turn", where, "conversations")
    return pairs


def _scene_source(path: Path) -> str:
    found = [part for part in path.parts if part.lower() in SCENE_SOURCES]
    return found[-1].lower() if found else ""


def _record_sample(
    record: Any,
    row: int,
    path: Path,
    relative: str,
    video_root: Path,
    num_frames: int,
    image_size: int | None,
    cache: dict[Path, tuple[list[np.ndarray], list[int]]],
) -> Sample:
    where = f"{path}:record {row}"
    if not isinstance(record, dict):
        raise DataError("record must be an object", where)
    video_name = record.get("video")
    if not isinstance(video_name, str) or not video_name:
        raise DataError("record needs a video path", where, "video")
    pairs = _turns(record, where)
    video = video_root / video_name
    if video not in cache:
        if not video.is_file():
            raise DataError(f"video not found: {video}", where, "video")
        cache.clear()  # records of one video come together: keep only the latest
        try:
            cache[video] = read_video_frames(video, num_frames)
        except DataError as exc:
            raise DataError(str(exc), where, "video") from exc
    frames, indices = cache[video]
    images = [
        frame_image(f, image_size) if image_size is not None else frame_image(f, max(f.shape[:2])) for f in frames
    ]
    messages: list[dict[str, Any]] = []
    for i, (question, answer) in enumerate(pairs):
        messages.append(user_turn(question, n_images=len(images) if i == 0 else 0))
        messages.append(assistant_turn(answer))
    task = path.stem
    ident = str(record.get("id", row))
    key = f"vica-{key_part(task, 24, 't')}-{row:08d}-{key_part(ident, 32, 'q')}"[:80]
    return Sample(
        key=key,
        messages=messages,
        images=images,
        task=f"vica/imported:{task}",
        source="vica",
        meta={
            "corpus": "vica",
            "question_type": "imported",
            "task": task,
            "id": ident,
            "video": video_name,
            "source_file": relative,
            "record_index": row,
            "scene_source": _scene_source(path),
            "frame_indices": indices,
            "answer_kind": answer_kind(pairs[0][1]),
            "turns": len(pairs),
        },
    )


def _try_record(*args: Any) -> Sample | DataError:
    """`_record_sample(*args)`, or the DataError it raised."""
    try:
        return _record_sample(*args)
    except DataError as exc:
        return exc


def iter_vica_json(
    input_path: str | Path,
    video_root: str | Path,
    num_frames: int = 8,
    image_size: int | None = 224,
    skipped: dict[str, int] | None = None,
) -> Iterator[Sample]:
    """Samples of every record of the task file(s) at `input_path`, in file then record order.

    A bad record raises DataError naming the file, record index and field, unless `skipped` is given:
    then it is counted there under "bad_record:<field>" and left out.
    """
    if num_frames < 1:
        raise DataError(f"num_frames must be >= 1, got {num_frames}")
    root = Path(input_path)
    cache: dict[Path, tuple[list[np.ndarray], list[int]]] = {}
    for path in task_files(root):
        relative = str(path.relative_to(root)) if root.is_dir() else path.name
        records = read_records(path)
        for row, record in enumerate(records):
            made = _try_record(record, row, path, relative, Path(video_root), num_frames, image_size, cache)
            if isinstance(made, Sample):
                yield made
            elif skipped is None:
                raise made
            else:
                reason = f"bad_record:{made.field or 'video'}"
                skipped[reason] = skipped.get(reason, 0) + 1


def import_vica_json(
    input: str | Path,
    video_root: str | Path,
    out: str | Path,
    num_frames: int = 8,
    image_size: int | None = 224,
    max_samples: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Write the records of `input` (a task json or a folder of them) as shards in `out`; return a summary."""
    config = {
        "name": "vica",
        "importer": "vica_json",
        "num_frames": num_frames,
        "image_size": image_size,
        "max_samples": max_samples,
        "skip_bad": skip_bad,
    }
    skipped: dict[str, int] = {}
    with ShardWriter(out, "vica", overwrite=overwrite, build_config=config, inputs=[input]) as writer:
        for sample in iter_vica_json(input, video_root, num_frames, image_size, skipped if skip_bad else None):
            if max_samples is not None and writer.num_samples >= max_samples:
                break
            writer.write(sample)
        for reason, count in sorted(skipped.items()):
            writer.skip(reason, count)
    assert writer.card is not None
    return {"out": str(out), "samples": writer.card.num_samples, "skipped": dict(sorted(skipped.items()))}
