"""Talking to the Hugging Face Hub: retries with backoff for transient failures, one-line errors, no token leaks.

Shared by every upload (`python -m datasets_build push` for shard folders, `python -m sft push` for checkpoints).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from huggingface_hub.errors import HfHubHTTPError

from datasets_build.errors import ToolkitError

T = TypeVar("T")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
# huggingface_hub's HTTP client raises its own transport errors (httpx in 1.x, httpx2 in 2.x): match by class name
TRANSPORT_ERRORS = ("TransportError", "TimeoutException", "NetworkError")


class PushError(ToolkitError):
    """The Hub refused the upload, or kept failing after the retries."""


def is_transient(exc: BaseException) -> bool:
    """Whether an error is worth retrying (network trouble, rate limits, server errors)."""
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status in TRANSIENT_STATUS
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ in TRANSPORT_ERRORS for cls in type(exc).__mro__)


def with_retries(call: Callable[[], T], what: str, retries: int, backoff_s: float, token: str | None) -> T:
    """Run `call`, retrying transient errors `retries` times, waiting backoff_s * 2**attempt between tries."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:  # noqa: PERF203  (one try per attempt is the point)
            message = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, token)
            if not is_transient(exc):
                raise PushError(f"{what}: {message}") from exc
            if attempt == retries:
                raise PushError(f"{what}: still failing after {retries + 1} tries ({message})") from exc
            delay = backoff_s * 2**attempt
            print(f"{what}: transient error ({message}); retrying in {delay:.1f}s", flush=True)
            time.sleep(delay)
    raise AssertionError("unreachable")


def redact(text: str, token: str | None) -> str:
    """`text` with the token masked, in case a library echoes it."""
    return text.replace(token, "hf_***") if token else text
