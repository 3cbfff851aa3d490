"""Two processes on CPU (`torchrun --nproc_per_node 2`, gloo): DDP and FSDP2 (sharded by the family's layer classes)
train with world size 2, keep every rank's parameters identical, follow the same loss curve, save loadable
checkpoints and resume from their train state (FSDP: a sharded torch.distributed.checkpoint) to the same result."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from datasets_build.tiny_models import install_tiny_backbones

BACKBONE = "Qwen/Qwen3-VL-2B-Instruct"
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}  # what `accelerate launch` sets from fsdp.yaml


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _launch(config: Path, env: dict[str, str], *overrides: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    result = subprocess.run(
        [*command, str(_free_port()), "-m", "vla", "train", str(config), *overrides],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> dict[str, dict[str, Any]]:
    """DDP and FSDP runs of 3 steps (checkpoints at 2 and 3), each resumed to step 4: {name: summary}."""
    install_tiny_backbones(ids=[BACKBONE])
    root = tmp_path_factory.mktemp("distributed")
    summaries = {}
    for name, env in (("ddp", {}), ("fsdp", FSDP_ENV)):
        config = {
            "out": str(root / name),
            "steps": 3,
            "batch_size": 4,
            "lr": 1e-3,
            "save_every": 2,
            "log_every": 1,
            "progress": False,
            "mixed_precision": "no",  # fp32 on both: the curves must agree to rounding
            "model": {"backbone": BACKBONE, "chunk_size": 2},
            "data": {"source": "demo", "path": str(demo_dir), "num_workers": 0, "shuffle_buffer": 8},
        }
        (root / f"{name}.yaml").write_text(yaml.safe_dump(config))
        _launch(root / f"{name}.yaml", env)
        summaries[name] = json.loads((root / name / "train_summary.json").read_text())
        _launch(root / f"{name}.yaml", env, "steps=4", "resume=true")
        summaries[f"{name}_resumed"] = json.loads((root / name / "train_summary.json").read_text())
    return summaries


@pytest.mark.slow
def test_two_process_training_keeps_ranks_in_sync(runs: dict[str, dict[str, Any]]) -> None:
    for name in ("ddp", "fsdp"):
        summary = runs[name]
        assert summary["world_size"] == 2
        assert summary["engine"] == name
        first, second = summary["rank_parameter_checksums"]
        assert first == second, name  # FSDP: every rank all-gathers the same unsharded parameters
        assert (Path(summary["checkpoints"][-1]) / "action_head.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_follows_the_ddp_loss_curve(runs: dict[str, dict[str, Any]]) -> None:
    ddp, fsdp = runs["ddp"], runs["fsdp"]
    for key in ("loss", "grad_norm"):
        expected = [h[key] for h in ddp["history"]]
        assert [h[key] for h in fsdp["history"]] == pytest.approx(expected, rel=1e-4), key
    assert fsdp["rank_parameter_checksums"][0] == pytest.approx(ddp["rank_parameter_checksums"][0], rel=1e-6)
    # The FSDP checkpoint folder is gathered from the shards: the same weights as DDP's, file for file.
    weights = [load_file(Path(run["checkpoints"][-1]) / "model.safetensors") for run in (ddp, fsdp)]
    assert weights[0].keys() == weights[1].keys()
    for key, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][key], tensor, rtol=1e-3, atol=1e-3, msg=key)


@pytest.mark.slow
def test_fsdp_resumes_from_its_sharded_train_state(runs: dict[str, dict[str, Any]]) -> None:
    ddp, fsdp = runs["ddp_resumed"], runs["fsdp_resumed"]
    assert [h["step"] for h in fsdp["history"]] == [4]  # resumed at 3, one more step
    assert fsdp["history"][0]["loss"] == pytest.approx(ddp["history"][0]["loss"], rel=1e-4)
    assert fsdp["rank_parameter_checksums"][0] == pytest.approx(ddp["rank_parameter_checksums"][0], rel=1e-6)
