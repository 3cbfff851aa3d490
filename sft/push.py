"""`push`: upload a checkpoint folder to the Hugging Face Hub (`create_repo` + `upload_folder`).

The token comes from the argument, `HF_TOKEN`, or the saved `hf auth login` token (`huggingface_hub.get_token`)
and is never printed. Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with
exponential backoff; anything else fails at once with one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from datasets_build.checkpoint import CheckpointFolder
from datasets_build.errors import ConfigError, ToolkitError

T = TypeVar("T")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
# huggingface_hub's HTTP client raises its own transport errors (httpx in 1.x, httpx2 in 2.x): match by class name
TRANSPORT_ERRORS = ("TransportError", "TimeoutException", "NetworkError")


class PushError(ToolkitError):
    """The Hub refused the upload, or kept failing after the retries."""


@dataclass
class PushConfig:
    """Which checkpoint goes to which Hub model repo."""

    checkpoint: str = ""
    repo_id: str = ""
    private: bool = False
    revision: str | None = None
    commit_message: str = "Upload SFT checkpoint"
    retries: int = 4
    backoff_s: float = 2.0
    endpoint: str | None = None  # default: HF_ENDPOINT or https://huggingface.co


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
            message = _redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, token)
            if not is_transient(exc):
                raise PushError(f"{what}: {message}") from exc
            if attempt == retries:
                raise PushError(f"{what}: still failing after {retries + 1} tries ({message})") from exc
            delay = backoff_s * 2**attempt
            print(f"{what}: transient error ({message}); retrying in {delay:.1f}s", flush=True)
            time.sleep(delay)
    raise AssertionError("unreachable")


def push(cfg: PushConfig, token: str | None = None) -> str:
    """Create the repo if needed and upload the checkpoint folder; returns the commit URL."""
    if not cfg.repo_id or cfg.repo_id.count("/") != 1:
        raise ConfigError(f"push: repo_id must be ORG/NAME, got {cfg.repo_id!r}")
    folder = CheckpointFolder.inspect(cfg.checkpoint)
    token = token or get_token()
    if not token:
        raise ConfigError("push: no Hub token (set HF_TOKEN or run `hf auth login`)")
    api = HfApi(endpoint=cfg.endpoint, token=token)
    with_retries(
        lambda: api.create_repo(cfg.repo_id, private=cfg.private, repo_type="model", exist_ok=True),
        f"create_repo {cfg.repo_id}",
        cfg.retries,
        cfg.backoff_s,
        token,
    )
    commit = with_retries(
        lambda: api.upload_folder(
            repo_id=cfg.repo_id,
            folder_path=folder.root,
            repo_type="model",
            revision=cfg.revision,
            commit_message=cfg.commit_message,
        ),
        f"upload_folder {cfg.repo_id}",
        cfg.retries,
        cfg.backoff_s,
        token,
    )
    return str(getattr(commit, "commit_url", commit))


def _redact(text: str, token: str | None) -> str:
    """`text` with the token masked, in case a library echoes it."""
    return text.replace(token, "hf_***") if token else text
