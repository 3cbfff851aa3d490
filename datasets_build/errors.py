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


# The exit codes of every command (`python -m datasets_build|sft|vla|evaluation`, recipes/run.sh); the README's
# Reliability section lists this table. argparse's own usage errors also exit 2.
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_CHECK_FAILED: "the command ran, but a check it makes failed (`verify` found wrong answers, `expert-eval` "
    "below `--min-success`)",
    EXIT_BAD_INPUT: "bad input, arguments or output folder: one line `error: FILE: FIELD: what is wrong` on stderr, "
    "nothing written under a final name",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C / SIGINT); rerun to resume where resumable",
}


def one_line(exc: BaseException) -> str:
    """The error as the single line a CLI prints (whitespace runs, newlines included, folded to one space)."""
    return " ".join(str(exc).split()) or type(exc).__name__
