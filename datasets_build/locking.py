"""An exclusive lock on an output folder, so two jobs never write into one folder at once.

`with output_lock(folder, "evaluation run"):` holds an advisory `fcntl.flock` on `folder/.lock`
for the block; a second holder fails at once with one line naming the first (pid, host, command).
The kernel drops the lock when its process dies (kill -9 included), so a crash never leaves a
stale lock behind; the small `.lock` file itself stays and is harmless. flock works across
processes of one machine and, on most cluster file systems (NFS v4, Lustre with flock enabled),
across nodes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datasets_build.errors import ConfigError, DataError
from datasets_build.outputs import is_empty, make_marked_folder

LOCK_FILE = ".lock"


@contextmanager
def output_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold the exclusive lock of `folder` (created if missing) for the block; ConfigError when another holds it.

    A folder this call created gets the output marker of `what` (datasets_build.outputs) and is removed again
    when the block leaves nothing else in it (a command that failed on its arguments leaves no empty folder).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError("output path exists and is not a folder", folder)
    created = not folder.exists()
    make_marked_folder(folder, what)
    path = folder / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise ConfigError(
                f"{folder}: locked by {_describe(handle.read())}; two jobs must not write one output folder "
                "(wait for it, or use another folder)"
            ) from None
        handle.seek(0)
        handle.truncate()
        argv = " ".join(sys.argv[:4])
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what, "argv": argv}))
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the descriptor releases the lock
        if created and is_empty(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _describe(text: str) -> str:
    """'evaluation run (pid 12, host node3)' from the holder's lock record."""
    try:
        holder = json.loads(text)
        return f"{holder['what']} (pid {holder['pid']}, host {holder['host']})"
    except (ValueError, TypeError, KeyError):
        return "another process"
