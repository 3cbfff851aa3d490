"""What a benchmark's result file says about where and how it ran (shared by the benchmark scripts)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def machine_summary() -> str:
    """One line: processor and core count."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def command_line(argv: list[str] | None) -> str:
    """The script's name and the arguments it ran with (those passed to main, else the process's)."""
    return " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])


def write_result(path: str, result: dict[str, Any], argv: list[str] | None) -> None:
    """`result` plus machine and command as indented JSON at `path` ("" = nowhere)."""
    if path:
        record = {**result, "machine": machine_summary(), "command": command_line(argv)}
        Path(path).write_text(json.dumps(record, indent=2) + "\n")
