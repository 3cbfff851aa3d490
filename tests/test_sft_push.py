"""`python -m sft push` against a loopback HTTP server that answers the Hub API calls huggingface_hub makes
(create_repo, preupload, commit): the real client code runs end to end; transient 503s are retried; the
token reaches the server in the Authorization header and never the console."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from datasets_build.errors import ConfigError
from sft.push import PushConfig, PushError, push

TOKEN = "hf_loopbackSecretToken123"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (folder / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "recipe.yaml").write_text("model: x\n")
    (folder / "README.md").write_text("---\nbase_model: x\n---\n# card\n")
    return folder


def test_push_creates_the_repo_and_commits_every_file(hub, checkpoint, capsys):
    handler, endpoint = hub
    handler.failures.update({"create": 1, "commit": 1})  # transient: retried by us / by huggingface_hub
    cfg = PushConfig(str(checkpoint), "org/sft-demo", private=True, endpoint=endpoint, backoff_s=0.01)
    url = push(cfg, token=TOKEN)
    assert url.endswith("org/sft-demo/commit/" + "a" * 40)
    kinds = [r["kind"] for r in handler.log]
    assert kinds[:2] == ["create", "create"]
    assert kinds.count("commit") == 2
    assert "preupload" in kinds
    assert "base_model: x" in next(r["readme"] for r in handler.log if r["kind"] == "validate")
    assert handler.log[1]["visibility"] == "private"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in handler.log)
    assert handler.committed == {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    out = capsys.readouterr()
    assert "retrying" in out.out
    assert TOKEN not in out.out + out.err


def test_push_gives_up_after_the_retries_and_never_prints_the_token(hub, checkpoint, capsys):
    from sft.cli import main

    handler, endpoint = hub
    handler.failures["create"] = 10
    args = ["push", str(checkpoint), "org/sft-demo", f"endpoint={endpoint}", "retries=1", "backoff_s=0.01"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", TOKEN)
        assert main(args) == 2
    out = capsys.readouterr()
    assert "still failing after 2 tries" in out.err
    assert TOKEN not in out.out + out.err
    assert [r["kind"] for r in handler.log] == ["create", "create"]
    with socket.socket() as sock:  # a port nobody listens on: connection refused is transient, retried
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(PushError, match="still failing after 2 tries"):
        push(PushConfig(str(checkpoint), "org/x", endpoint=closed, retries=1, backoff_s=0.01), token=TOKEN)
    with pytest.raises(ConfigError, match="ORG/NAME"):
        push(PushConfig(str(checkpoint), "no-slash", endpoint=endpoint), token=TOKEN)
    handler.failures.clear()
    handler.failures["create"] = 0
    checkpoint.joinpath("model.safetensors").unlink()
    from datasets_build.errors import DataError

    with pytest.raises(DataError, match="safetensors"):
        push(PushConfig(str(checkpoint), "org/x", endpoint=endpoint), token=TOKEN)
    assert PushError.__mro__[1].__name__ == "ToolkitError"
