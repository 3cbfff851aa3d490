"""The paper's tables as data, and reports laid out like them: paper columns, Table 4's grid, Fig. 4 and Fig. 3."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from datasets_build.errors import ConfigError
from evaluation.cli import main
from evaluation.paper import TABLES, paper_table
from evaluation.protocol import EpisodeRecord, summarize
from evaluation.report import ReportConfig, collect, figure4_values, per_checkpoint, report
from evaluation.results import write_json

QWEN3B = "Qwen/Qwen2.5-VL-3B-Instruct"


def _summary(folder: Path, sim: str, policy: str, completed: list[int] | None = None, rate: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if sim == "calvin":
        records = [
            EpisodeRecord(f"chain/{i}", "chain", i, 0, "x", c == 5, 10, {"completed": c})
            for i, c in enumerate(completed or [])
        ]
        metric = "chain"
    else:
        n = 10
        records = [EpisodeRecord(f"t/{i}", "widowx_carrot_on_plate", i, 0, "x", i < rate * n, 10) for i in range(n)]
        metric = "success"
    write_json(
        folder / "summary.json", {"sim": sim, "policy": policy, "metric": metric, "metrics": summarize(metric, records)}
    )
    return folder


def _sweep(root: Path, completed_per_ckpt: dict[int, dict[str, list[int]]]) -> Path:
    """A sweep folder (sweep.json + checkpoint-N/<mode>/summary.json) over CALVIN."""
    results = []
    for step, modes in completed_per_ckpt.items():
        for mode, completed in modes.items():
            name = f"checkpoint-{step:06d}"
            _summary(root / name / mode, "calvin", f"/runs/vla/{name}", completed)
            results.append({"checkpoint": name, "chunk_mode": mode, "path": f"{name}/{mode}", "score": 0.0})
    write_json(root / "sweep.json", {"sim": "calvin", "run": "/runs/vla", "metric": "chain", "results": results})
    return root


def test_paper_tables_are_consistent():
    from datasets_build.vlm_families import PAPER_BACKBONES

    ids = {key.split("|")[0].split("@")[0] for t in TABLES.values() for key in t.rows}
    assert ids - {
        "openvla",
        "pi0",
        "thinkact",
        "baseline",
        "fast_tokens_freeze_vision",
        "fast_tokens_unfreeze_vision",
    } <= set(PAPER_BACKBONES)
    # the same baseline number wherever the paper repeats it
    t1, t3, t10 = paper_table("table1"), paper_table("table3"), paper_table("table10")
    assert t1.value(QWEN3B, "calvin:headline") == t3.value(QWEN3B, "calvin:headline") == 3.856
    assert t10.value(QWEN3B, "calvin:after:1") == t1.value(QWEN3B, "calvin:after:1") == 92.2
    assert paper_table("table4").value("fast_tokens_unfreeze_vision", "simpler:headline", "vla_freeze_vision") == 45.7
    assert paper_table("table2").value("microsoft/kosmos-2-patch14-224", "libero:headline") == 55.0
    with pytest.raises(ConfigError, match="unknown table 'table9'"):
        paper_table("table9")


def test_rows_with_the_paper_beside_them(tmp_path):
    base = _summary(tmp_path / "base", "calvin", "b", [5, 4, 3, 2, 1])
    aux = _summary(tmp_path / "aux", "calvin", "a", [5, 5, 3, 2, 0])
    report(
        ReportConfig(
            results=[f"{QWEN3B}={base}", f"robopoint={aux}"],
            out=str(tmp_path / "r"),
            baseline=QWEN3B,
            paper="table10",
            paper_rows={"robopoint": f"{QWEN3B}|robopoint"},
            caption="tiny profile: the numbers mean nothing",
        )
    )
    lines = (tmp_path / "r" / "table.md").read_text().splitlines()
    assert "CALVIN ABC-D Avg. Len. (paper)" in lines[0]
    robopoint = next(line for line in lines if line.startswith("| robopoint |"))
    assert "3.783 (-0.073)" in robopoint  # the paper's row and its delta against the paper's baseline
    assert "3.000 (+0.000)" in robopoint
    assert "tiny profile: the numbers mean nothing" in lines[-1]


def test_table4_grid(tmp_path):
    specs = []
    for row, rates in (("baseline", (0.3, 0.6)), ("fast_tokens_unfreeze_vision", (0.5, 0.6))):
        for column, rate in zip(("vla_freeze_vision", "vla_unfreeze_vision"), rates, strict=True):
            specs.append(f"{row}@{column}={_summary(tmp_path / row / column, 'simpler', row, rate=rate)}")
    report(ReportConfig(results=specs, out=str(tmp_path / "r"), baseline="baseline", layout="grid", paper="table4"))
    lines = (tmp_path / "r" / "table.md").read_text().splitlines()
    assert lines[0] == (
        "| VLM | Freeze vision encoder during VLA training | Freeze vision encoder during VLA training (paper) "
        "| Unfreeze vision encoder during VLA training | Unfreeze vision encoder during VLA training (paper) |"
    )
    assert lines[2] == "| Baseline | 30.0 | 27.6 | 60.0 | 56.3 |"
    assert lines[3] == "| Unfreeze Vision FT | 50.0 (+20.0) | 45.7 (+18.1) | 60.0 (+0.0) | 59.4 (+3.1) |"
    with pytest.raises(ConfigError, match="not named ROW@COLUMN"):
        report(
            ReportConfig(
                results=[str(tmp_path / "baseline" / "vla_freeze_vision")], out=str(tmp_path / "x"), layout="grid"
            )
        )


def test_figure4_takes_each_checkpoints_best_mode_from_a_step(tmp_path):
    sweep = _sweep(
        tmp_path / "sweep",
        {
            5000: {"full": [0, 0, 0, 0]},  # before from_step: left out
            10000: {"full": [1, 1, 1, 1], "one": [5, 5, 5, 5]},  # best mode: one (avg len 5)
            15000: {"full": [2, 2, 2, 2], "one": [1, 1, 1, 1]},  # best mode: full (avg len 2)
        },
    )
    cell = collect([f"vica={sweep}"])["vica"]["calvin"]
    kept = per_checkpoint(cell, from_step=10000)
    assert [m["avg_len"] for m in kept] == [5.0, 2.0]
    assert figure4_values(kept[1]) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.4]
    assert main(["report", f"vica={sweep}", f"base={sweep}", "--out", str(tmp_path / "r"), "--from-step", "10000"]) == 0
    for name in ("figure4_calvin.png", "checkpoints_boxplot.png"):
        with Image.open(tmp_path / "r" / name) as image:
            image.verify()
