"""Writers that commit on a clean exit and roll back on any exception, so bad input never leaves partial output."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TypeVar

_W = TypeVar("_W", bound="CommitOrAbort")


class CommitOrAbort:
    """Context-manager base: `with W(...) as w:` calls `w.close()` on success and `w.abort()` on any exception."""

    def close(self) -> Any:
        """Finish and move the output into place."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop everything this writer produced."""
        raise NotImplementedError

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
