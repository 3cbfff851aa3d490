"""`push`: upload a checkpoint folder to the Hugging Face Hub (`create_repo` + `upload_folder`).

The token comes from the argument, `HF_TOKEN`, or the saved `hf auth login` token (`huggingface_hub.get_token`)
and is never printed. Transient failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with
exponential backoff; anything else fails at once with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from huggingface_hub import HfApi, get_token

from datasets_build.checkpoint import CheckpointFolder
from datasets_build.errors import ConfigError
from datasets_build.hub import PushError, is_transient, with_retries

__all__ = ["PushConfig", "PushError", "is_transient", "push", "with_retries"]


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
