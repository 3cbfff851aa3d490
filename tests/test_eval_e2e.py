"""End to end with a trained tiny VLM4VLA policy: vla train -> evaluation run / sweep -> report with a valid PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evaluation.cli import main

pytest.importorskip("vla.policy", reason="needs vla.Policy")

OPTIONS = ["sim_options.tasks=[pick_block]", "sim_options.max_steps=4"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Path:
    from datasets_build.configs import build_config
    from datasets_build.tiny_models import install_tiny_backbones
    from vla.configuration_vla import VLATrainConfig
    from vla.train import train

    install_tiny_backbones()
    out = tmp_path_factory.mktemp("vla") / "run"
    flags = {
        "out": str(out), "steps": 2, "batch_size": 4, "lr": 1e-3, "save_every": 1, "log_every": 1, "progress": False,
        "model": {"backbone": "microsoft/kosmos-2-patch14-224", "chunk_size": 2, "freeze_vision_tower": True},
        "data": {"source": "demo", "path": str(demo_dir), "num_workers": 1, "shuffle_buffer": 16},
    }  # fmt: skip
    train(build_config(VLATrainConfig, flags))
    return out


@pytest.mark.slow
def test_trained_policy_run_sweep_report(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoint-000002"
    out = tmp_path / "run"
    assert (
        main(["run", "--sim", "demo", "--policy", str(checkpoint), "--out", str(out), "--trials", "1", *OPTIONS]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True
    assert summary["metrics"]["per_task"]["pick_block"]["episodes"] == 1
    (record,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert 1 <= record["steps"] <= 4

    sweep_out = tmp_path / "sweep"
    args = ["sweep", "--sim", "demo", "--run", str(trained_run), "--out", str(sweep_out), "--trials", "1"]
    assert main([*args, "--chunk-modes", "full", "one", *OPTIONS]) == 0
    sweep = json.loads((sweep_out / "sweep.json").read_text())
    assert len(sweep["results"]) == 4  # 2 checkpoints x 2 chunk modes

    report_out = tmp_path / "report"
    assert main(["report", f"tiny-kosmos={sweep_out}", f"single={out}", "--out", str(report_out),
                 "--baseline", "single"]) == 0  # fmt: skip
    png = report_out / "checkpoints_boxplot.png"
    with Image.open(png) as image:
        image.verify()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tiny-kosmos" in (report_out / "table.md").read_text()
