"""Progress reporting for every command: a tqdm bar on a terminal, a plain line every N seconds otherwise.

A bar redrawn with carriage returns turns a log file (a recipe's console, a batch job's output) into hundreds of
lines of noise; off a terminal `progress_bar` writes one ordinary line per `PROGRESS_EVERY_ENV` seconds (30 by
default) and nothing at all for work that finishes sooner. `quiet_third_party` silences the progress bars and
warnings of the libraries underneath (transformers' "Loading weights", accelerate's "Removed shared tensor")
that say nothing to a user of the toolkit.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

PROGRESS_EVERY_ENV = "VLM4VLA_PROGRESS_EVERY"  # seconds between progress lines off a terminal
DEFAULT_EVERY = 30.0
# Environment variables read by the libraries themselves at import: set them before transformers / datasets load.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' loading / writing bars follow the Hub's switch
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "ACCELERATE_LOG_LEVEL": "error",  # "[RANK 0] Removed shared tensor {...} while saving" of tied weights
}
# Loggers whose warnings describe the library's own bookkeeping, not anything the user did.
QUIET_LOGGERS = ("accelerate.utils.other",)  # "Removed shared tensor {...} while saving" of tied weights

T = TypeVar("T")


def on_terminal() -> bool:
    """Whether stderr (where progress goes) is an interactive terminal."""
    return sys.stderr.isatty()


def progress_every() -> float:
    """Seconds between progress lines off a terminal (`VLM4VLA_PROGRESS_EVERY`, default 30)."""
    try:
        return max(0.0, float(os.environ.get(PROGRESS_EVERY_ENV, DEFAULT_EVERY)))
    except ValueError:
        return DEFAULT_EVERY


class LineProgress(tqdm):
    """tqdm that writes its meter as a whole line, at most once per `every` seconds, and nothing when closing."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, every: float, **kwargs: Any) -> None:
        self._every = every
        self._last_line = time.monotonic()
        super().__init__(iterable, mininterval=min(every, 1.0), **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:  # type: ignore[override]
        """Write the meter as one line when `every` seconds passed since the last one (never while closing)."""
        now = time.monotonic()
        if getattr(self, "_closing", False) or now - self._last_line < self._every:
            return True
        self._last_line = now
        fp = self.fp
        fp.write((msg or self.__str__()) + "\n")
        fp.flush()
        return True

    def close(self) -> None:
        """Close without a final line (the command's summary says how it ended)."""
        self._closing = True
        self.fp = io.StringIO()  # tqdm ends a bar with a newline on its file: not ours
        super().close()


def progress_bar(
    iterable: Iterable[T] | None = None, *, enabled: bool = True, every: float | None = None, **kwargs: Any
) -> tqdm:
    """A tqdm bar on a terminal, a `LineProgress` otherwise, disabled when `enabled` is False; `kwargs` go to
    tqdm (desc, total, unit, initial, ...). Give `total` whenever it is known: the line shows the fraction done."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if on_terminal():
        return tqdm(iterable, **kwargs)
    interval = progress_every() if every is None else every
    return LineProgress(iterable, every=interval, dynamic_ncols=False, ncols=100, **kwargs)


def quiet_third_party() -> None:
    """Silence other libraries' progress bars and bookkeeping warnings in this process and the ones it starts."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported: its switches were read at import time
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
