"""Two processes on CPU (`torchrun --nproc_per_node 2`, gloo): world size 2 and identical parameters per rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datasets_build.tiny_models import install_tiny_backbones


@pytest.mark.slow
def test_two_process_training_keeps_ranks_in_sync(tmp_path: Path, demo_dir: Path) -> None:
    install_tiny_backbones(ids=["Qwen/Qwen3-VL-2B-Instruct"])
    config = {
        "out": str(tmp_path / "run"),
        "steps": 3,
        "batch_size": 4,
        "lr": 1e-3,
        "save_every": 3,
        "log_every": 1,
        "progress": False,
        "model": {"backbone": "Qwen/Qwen3-VL-2B-Instruct", "chunk_size": 2},
        "data": {"source": "demo", "path": str(demo_dir), "num_workers": 0, "shuffle_buffer": 8},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561"]
    result = subprocess.run(
        [*command, "-m", "vla", "train", str(tmp_path / "train.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    first, second = summary["rank_parameter_checksums"]
    assert first == second
    assert (tmp_path / "run" / "checkpoint-000003" / "action_head.safetensors").is_file()
