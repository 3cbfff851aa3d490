"""Reading the record lists of published corpora (`.json` lists, `.jsonl` files), one error style for all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets_build.errors import DataError


def read_records(path: Path, allow_single: bool = False) -> list[Any]:
    """The records of a `.json` list or a `.jsonl` file (one object a line, blank lines ignored).

    `allow_single` takes a file holding one record object as a list of one.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read ({exc})", path) from exc
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError as exc:
                    raise DataError(f"invalid JSON ({exc})", f"{path}:line {n}") from exc
        return records
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise DataError(f"invalid JSON ({exc})", path) from exc
    if allow_single and isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise DataError("expected a list of records", path)
    return records
