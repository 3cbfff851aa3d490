"""Full tracebacks of unexpected failures (model bugs, OOMs, simulator crashes), kept in a log file inside the output
folder so that the one-line error a command prints can name it instead of dropping the traceback."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

CRASH_DIR = "logs"  # under the command's output folder


def first_line(exc: BaseException) -> str:
    """`Type: first line of the message` (library errors are often many lines)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def write_traceback(folder: str | os.PathLike[str] | None, label: str, text: str) -> Path:
    """Write `text` to `folder/logs/LABEL-UTCTIME-PID.traceback` (the system temp folder when `folder` is None or
    cannot be written) under a temporary name, renamed when complete; return its path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = f"{label}-{stamp}-{os.getpid()}.traceback"
    for base in ([Path(folder) / CRASH_DIR] if folder else []) + [Path(tempfile.gettempdir()) / "vlm4vla-logs"]:
        try:
            base.mkdir(parents=True, exist_ok=True)
            target = base / name
            tmp = base / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(target)
        except OSError:
            continue
        return target
    raise OSError(f"cannot write a traceback log for {label}")
