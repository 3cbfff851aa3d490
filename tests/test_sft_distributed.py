"""Distributed SFT: the accelerate configs parse, and two real processes (torchrun, gloo on CPU) train with
world size 2 and end with identical parameters on both ranks (testing.md: `accelerate launch --cpu
--num_processes 2` silently runs one process, so this uses torchrun)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QWEN25 = "Qwen/Qwen2.5-VL-3B-Instruct"

WORKER = """
import hashlib, json, sys
import torch.distributed as dist
from datasets_build.configs import build_config
from sft.config import SFTTrainConfig
from sft.train import build_trainer, finish

cfg = build_config(SFTTrainConfig, json.loads(sys.argv[1]), where="worker")
run = build_trainer(cfg, verbose=False)
first = next(iter(run.trainer.get_train_dataloader()))["input_ids"]
batch = hashlib.sha256(first.numpy().tobytes()).hexdigest()
run.trainer.train()
model = run.trainer.accelerator.unwrap_model(run.trainer.model)
digest = hashlib.sha256()
for name, param in sorted(model.named_parameters()):
    digest.update(name.encode() + param.detach().cpu().numpy().tobytes())
rank, world = dist.get_rank(), dist.get_world_size()
finish(run, {})
with open(sys.argv[2] + f"/rank{rank}.json", "w") as fh:
    info = {"rank": rank, "world": world, "digest": digest.hexdigest(), "batch": batch}
    json.dump({**info, "steps": run.trainer.state.global_step}, fh)
"""


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_parse(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "recipes" / "accelerate" / f"{name}.yaml"))
    expected = {"ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}[name]
    assert config.distributed_type.name == expected
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_two_process_training_keeps_ranks_identical(demo_dir, tmp_path):
    from datasets_build.corpora import BuildConfig, build_corpus
    from datasets_build.tiny_models import install_tiny_backbones

    install_tiny_backbones(ids=[QWEN25])
    for name in ("robo2vlm", "robopoint"):  # two tars: accelerate gives each rank its own
        build_corpus(BuildConfig(name=name, input=str(demo_dir), out=str(tmp_path / name), max_samples=12))
    cfg = {
        "model": QWEN25,
        "data": [{"path": str(tmp_path / "robo2vlm")}, {"path": str(tmp_path / "robopoint")}],
        "output_dir": str(tmp_path / "run"),
        "shuffle_buffer": 4,
        "trainer": {"max_steps": 2, "save_steps": 100, "per_device_train_batch_size": 1, "learning_rate": 1e-3},
    }
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    results = tmp_path / "results"
    results.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(_free_port()), str(worker), json.dumps(cfg), str(results)]
    done = subprocess.run(command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:] + done.stdout[-3000:]
    ranks = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["steps"] for r in ranks] == [2, 2]
    assert ranks[0]["batch"] != ranks[1]["batch"]  # different data on each rank ...
    assert ranks[0]["digest"] == ranks[1]["digest"]  # ... and the same weights after the all-reduced steps
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
