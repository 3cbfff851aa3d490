"""`benchmarks/gpu_check.sh --cpu`: the GPU check's own code path (real-size configs replaced by tiny ones, two
training steps) runs end to end and writes its report, so the script is ready the day a GPU is available."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~115 s measured on the shared 2-core machine (three backbones, an SFT step, FAST corpus)
def test_gpu_check_cpu_dry_mode(tmp_path: Path, demo_dir: Path) -> None:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO)}
    command = ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(tmp_path / "out")]
    done = subprocess.run(
        [*command, "--demo-dir", str(demo_dir)], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_cpu-dryrun.json").read_text())
    assert [row["model"] for row in report["vla"]] == [
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen3-VL-4B-Instruct",
        "google/paligemma2-3b-pt-224",
    ]
    for row in report["vla"]:
        assert "error" not in row, row
        assert row["master_dtypes"] == ["fp32"]
        assert len(row["train"]["losses"]) == 2
        assert row["train"]["finite"]
        assert row["train"]["tokens_per_s"] > 0
        assert row["act"]["p90_ms"] >= row["act"]["p50_ms"] > 0
        assert row["act_batch_8_obs_per_s"] > 0
        assert row["act_batch_32_obs_per_s"] > 0
    sft = report["sft"]
    assert sft["fast"]["mapping"] == "vocab_tail"
    assert sft["optimizer_param_dtypes"] == ["fp32"]
    assert math.isfinite(sft["loss"])
    assert "engines" not in report  # CUDA only
    assert "Qwen/Qwen3-VL-4B-Instruct" in done.stdout  # the printed table
