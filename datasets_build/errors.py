"""Errors that name the file and field at fault, so every CLI can print one line and exit non-zero."""

from __future__ import annotations

from pathlib import Path


class ToolkitError(Exception):
    """Base class for every expected, user-facing error of the toolkit (printed as one line, exit 2)."""


class DataError(ToolkitError, ValueError):
    """Bad input data: `where` names the file (and record/key), `field` the offending field."""

    def __init__(self, message: str, where: str | Path | None = None, field: str | None = None) -> None:
        self.where = str(where) if where is not None else None
        self.field = field
        parts = [p for p in (self.where, field) if p]
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(ToolkitError, ValueError):
    """A malformed recipe or config: unknown key, wrong type, missing value."""


class OutputExistsError(ToolkitError, FileExistsError):
    """Refusing to write into an existing non-empty output folder without `overwrite`."""
