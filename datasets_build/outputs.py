"""Output folders a command may write, replace and delete: one set of rules for every command.

- A command writes a marker file (`.vlm4vla-output.json`, holding the command's kind) into every output
  folder it creates, so a later `overwrite` can tell its own folders from anything else.
- `overwrite` deletes a non-empty folder only when it carries the marker of the same kind; never the
  file-system root, $HOME, the working folder or a folder above it (whatever the marker says).
- A folder that a command created and then failed in before writing anything is removed again
  (`claim_output_folder`'s `cleanup`), so bad arguments never leave an empty `--out` behind.
- A single-file output (`stats --out`, a report file) is written to a temporary name in its folder and
  renamed when complete (`write_text_atomic`).
- `OVERWRITE_HINT` is the one wording of "how to replace it" every command prints.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datasets_build.errors import ConfigError, DataError, OutputExistsError

MARKER_FILE = ".vlm4vla-output.json"
OVERWRITE_HINT = "pass --overwrite (overwrite=true in a config or recipe) to replace it"
_IGNORED = {MARKER_FILE, ".lock"}  # files that do not make a folder "non-empty"


def protected_folders() -> set[Path]:
    """Folders no command ever deletes: /, $HOME, the working folder and every folder above it."""
    cwd = Path.cwd().resolve()
    return {Path("/"), Path.home().resolve(), cwd, *cwd.parents, *Path.home().resolve().parents}


def refuse_protected(folder: Path, what: str = "delete") -> None:
    """ConfigError when `folder` is one no command may delete or replace (see `protected_folders`)."""
    if folder.resolve() in protected_folders():
        raise ConfigError(f"{folder}: refusing to {what} the root, home, working folder or a folder above it")


def marker_kind(folder: Path) -> str | None:
    """The kind recorded in `folder`'s marker file, or None (no marker, or an unreadable one)."""
    try:
        record = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = record.get("kind") if isinstance(record, dict) else None
    return kind if isinstance(kind, str) else None


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` as written by a command of `kind`."""
    (folder / MARKER_FILE).write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")


def is_empty(folder: Path) -> bool:
    """True when `folder` holds nothing but a marker and a lock file."""
    return all(p.name in _IGNORED for p in folder.iterdir())


def remove_output(folder: Path, kind: str) -> None:
    """Delete `folder` for `overwrite`: only a folder marked by a command of `kind`, never a protected one."""
    refuse_protected(folder)
    found = marker_kind(folder)
    if found != kind:
        what = f"was written by `{found}`" if found else f"has no {MARKER_FILE}, so this command did not write it"
        raise OutputExistsError(f"{folder}: not replaced: it {what}; choose another output folder")
    shutil.rmtree(folder)


def check_output_folder(folder: str | Path, kind: str, overwrite: bool, *, resume: bool = False) -> Path:
    """Check, before any work, that `folder` may become `kind`'s output; nothing is created or deleted."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError("output path exists and is not a folder", folder)
    if folder.is_dir() and not is_empty(folder):
        if resume and marker_kind(folder) in (kind, None):
            return folder
        if not overwrite:
            raise OutputExistsError(f"{folder}: output folder exists and is not empty ({OVERWRITE_HINT})")
        refuse_protected(folder, "replace")
        found = marker_kind(folder)
        if found != kind:
            what = f"was written by `{found}`" if found else f"has no {MARKER_FILE}, so this command did not write it"
            raise OutputExistsError(f"{folder}: not replaced: it {what}; choose another output folder")
    _check_writable_ancestor(folder, "output folder")
    return folder


def _check_writable_ancestor(path: Path, what: str) -> None:
    """The nearest existing folder above `path` must be a writable folder (DataError naming it otherwise)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(f"is not a folder, so the {what} cannot be created there", ancestor)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise DataError("folder is not writable", ancestor)


def prepare_output_folder(folder: str | Path, kind: str, overwrite: bool, *, resume: bool = False) -> Path:
    """Check `folder`, delete it for `overwrite` (see `remove_output`), create it and write the marker."""
    folder = check_output_folder(folder, kind, overwrite, resume=resume)
    if folder.is_dir() and not is_empty(folder) and not (resume and marker_kind(folder) in (kind, None)):
        remove_output(folder, kind)
    return make_marked_folder(folder, kind)


def make_marked_folder(folder: Path, kind: str) -> Path:
    """Create `folder` (and parents) and give it the marker of `kind` unless it has one (DataError on OS errors)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if marker_kind(folder) is None:
            write_marker(folder, kind)
    except OSError as exc:
        raise DataError(f"cannot create output folder ({exc.strerror or exc})", folder) from exc
    return folder


@contextmanager
def cleaned_if_unused(folder: str | Path) -> Iterator[None]:
    """On an exception in the block, remove `folder` when it did not exist before and holds nothing but its
    marker and lock (a command that failed before writing anything leaves no empty output folder)."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and folder.is_dir() and is_empty(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextmanager
def claim_output_folder(folder: str | Path, kind: str, overwrite: bool, *, resume: bool = False) -> Iterator[Path]:
    """`prepare_output_folder` for the block, removed again by `cleaned_if_unused` when the block fails
    before writing anything into it."""
    with cleaned_if_unused(folder):
        yield prepare_output_folder(folder, kind, overwrite, resume=resume)


def partial_folder(folder: Path) -> Path:
    """The hidden sibling a staged output is built in (`.NAME.partial`)."""
    return folder.parent / f".{folder.name}.partial"


def commit_folder(tmp: Path, folder: Path, kind: str) -> Path:
    """Mark the finished `tmp` as `kind`'s and move it to `folder`, replacing an empty folder there or one
    `remove_output` may delete."""
    write_marker(tmp, kind)
    if folder.is_dir():
        if is_empty(folder):
            shutil.rmtree(folder)
        else:
            remove_output(folder, kind)
    tmp.rename(folder)
    return folder


@contextmanager
def staged_output_folder(folder: str | Path, kind: str, overwrite: bool) -> Iterator[Path]:
    """Check `folder` (before any work), yield a fresh partial folder to build in, and move it into place
    when the block ends cleanly (`commit_folder`); on any exception the partial folder is removed."""
    folder = check_output_folder(folder, kind, overwrite)
    tmp = partial_folder(folder)
    shutil.rmtree(tmp, ignore_errors=True)  # a killed run's partial folder: ours by its name
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder ({exc.strerror or exc})", tmp) from exc
    try:
        yield tmp
        commit_folder(tmp, folder, kind)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_file(path: str | Path) -> Path:
    """Check that a single-file output may be written at `path` (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise DataError("output path is a folder, not a file", path)
    _check_writable_ancestor(path, "output file")
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary name in the same folder, renamed when complete."""
    path = check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write ({exc.strerror or exc})", path) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path
