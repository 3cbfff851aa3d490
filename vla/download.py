"""`python -m vla download REPO_ID [--revision R]`: fetch a backbone's weights + processor into the HF cache.

Resumable `snapshot_download` restricted to what `from_pretrained` needs (configs, safetensors, tokenizer and
processor files, chat templates); prints the size, then loads it as a VLM4VLA backbone to prove it is usable.
Post-trained backbones (e.g. `BAAI/RoboBrain2.0-7B`, a Qwen2.5-VL fine-tune) take the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets_build.errors import DataError

ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.jinja",
    "*.model",  # SentencePiece (Gemma, XLM-R)
    "*.txt",  # BPE merges
    "*.tiktoken",
]


def folder_size(folder: str | Path) -> int:
    """Bytes of every file under `folder` (cache symlinks followed)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def download(repo_id: str, revision: str | None = None, check: bool = True) -> dict[str, Any]:
    """Download (or find in the cache) `repo_id`; returns {path, bytes, family, hidden} after a load check."""
    from huggingface_hub import snapshot_download

    from vla.backbones import load_backbone

    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=ALLOW_PATTERNS)
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, gated, bad revision)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"download failed ({first})", repo_id) from exc
    info: dict[str, Any] = {"repo_id": repo_id, "path": path, "bytes": folder_size(path)}
    if check:
        backbone, query_id = load_backbone(path)
        info.update(family=backbone.family, hidden=backbone.hidden_size, action_query_id=query_id)
    return info


@dataclass
class DownloadConfig:
    """Recipe stage `download`: a backbone by Hub id (e.g. BAAI/RoboBrain2.0-7B) into the HF cache."""

    repo_id: str = ""
    revision: str | None = None
    check: bool = True  # load it as a VLM4VLA backbone once downloaded


def download_stage(cfg: DownloadConfig) -> dict[str, Any]:
    """`download` as a recipe stage."""
    if not cfg.repo_id:
        raise DataError("a Hub model id ORG/NAME is required", field="repo_id")
    return download(cfg.repo_id, revision=cfg.revision, check=cfg.check)
