"""Paper-style reports from real result folders: tables with deltas, box plots, capability correlation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from datasets_build.errors import ConfigError, DataError
from evaluation.cli import main
from evaluation.policies import ConstantPolicy
from evaluation.protocol import EpisodeRecord, summarize
from evaluation.report import ReportConfig, collect, report
from evaluation.results import write_json
from evaluation.run import RunConfig, run


def _calvin_result(folder: Path, completed: list[int], policy: str) -> Path:
    """A CALVIN results folder whose summary comes from episode records through the real metric code."""
    records = [
        EpisodeRecord(f"chain/{i:04d}", "chain", i, 0, "x", c == 5, 100, {"completed": c})
        for i, c in enumerate(completed)
    ]
    folder.mkdir(parents=True)
    write_json(
        folder / "summary.json",
        {"sim": "calvin", "policy": policy, "metric": "chain", "metrics": summarize("chain", records)},
    )
    return folder


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "zero"
    run(
        RunConfig(
            sim="demo",
            policy="zero",
            out=str(out),
            trials=1,
            progress=False,
            sim_options={"tasks": ["pick_block", "push_block"], "max_steps": 2},
        ),
        policy=ConstantPolicy(),
    )
    return out


def test_tables_plots_and_correlation(tmp_path: Path, demo_result: Path) -> None:
    rows = {
        "base": [5, 4, 3, 2, 1],
        "robopoint": [5, 5, 3, 2, 0],
        "bridgevqa": [2, 2, 2, 2, 2],
        "vqamix": [5, 5, 5, 4, 4],
    }
    specs = [f"{name}={_calvin_result(tmp_path / name, c, name)}" for name, c in rows.items()]
    # a second checkpoint of "base": best-of in the table, both in the box plot
    specs.append(f"base={_calvin_result(tmp_path / 'base-ckpt2', [1, 1, 1, 1, 1], 'base')}")
    specs.append(f"base={demo_result}")
    capability = tmp_path / "capability.csv"
    capability.write_text("model,score\nbase,50\nrobopoint,55\nbridgevqa,40\nvqamix,70\n")
    written = report(
        ReportConfig(results=specs, out=str(tmp_path / "report"), baseline="base", capability=str(capability))
    )
    names = {p.name for p in written}
    assert {
        "table.md",
        "table.csv",
        "table.tex",
        "checkpoints_boxplot.png",
        "checkpoints_boxplot.svg",
        "capability_correlation.png",
        "correlation.json",
    } <= names

    markdown = (tmp_path / "report" / "table.md").read_text().splitlines()
    assert markdown[0].startswith("| Model | CALVIN ABC-D 1 |")
    assert "CALVIN ABC-D Avg. Len." in markdown[0]
    base_row = next(line for line in markdown if line.startswith("| base |"))
    assert "| 3.000 |" in base_row  # best of 3.0 and 1.0
    vqamix_row = next(line for line in markdown if line.startswith("| vqamix |"))
    assert "4.600 (+1.600)" in vqamix_row
    bridge_row = next(line for line in markdown if line.startswith("| bridgevqa |"))
    assert "2.000 (-1.000)" in bridge_row
    assert "Demo pick_block" in markdown[0]
    assert "Demo Avg." in markdown[0]
    csv_lines = (tmp_path / "report" / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("Model,CALVIN ABC-D 1")
    assert len(csv_lines) == 5
    tex = (tmp_path / "report" / "table.tex").read_text()
    assert r"\toprule" in tex
    assert r"Demo pick\_block" in tex

    for png in ("checkpoints_boxplot.png", "capability_correlation.png"):
        path = tmp_path / "report" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
    fits = json.loads((tmp_path / "report" / "correlation.json").read_text())
    xs, ys = [50, 55, 40, 70], [3.0, 3.0, 2.0, 4.6]
    expected = stats.pearsonr(xs, ys)[0]
    assert fits["calvin"]["r"] == pytest.approx(expected)
    assert fits["calvin"]["r2"] == pytest.approx(expected**2)
    assert "demo" not in fits  # only one model has a demo score


def test_cli_report_and_bad_inputs(tmp_path: Path, demo_result: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(demo_result), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "table.md").read_text().startswith("| Model |")
    table = collect([str(demo_result)])
    assert list(table) == ["zero"]
    assert np.isclose(table["zero"]["demo"].best, 0.0)
    with pytest.raises(ConfigError, match="no row named 'nope'"):
        report(ReportConfig(results=[str(demo_result)], out=str(tmp_path / "x"), baseline="nope"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "summary.json").write_text("{not json")
    with pytest.raises(DataError, match="malformed JSON"):
        collect([str(tmp_path / "junk")])
    bad = tmp_path / "cap.csv"
    bad.write_text("name,value\nx,1\n")
    code = main(["report", str(demo_result), "--out", str(tmp_path / "y"), "--capability", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "model,score" in err
    assert "\n" not in err


def test_sft_table_shows_chance_beside_the_scores() -> None:
    """Choice tasks get a chance column; `all` gets one only when every task has a chance to average."""
    from evaluation.readme import sft_table

    base = {
        "mc/a": {"accuracy": 0.0, "parsed": 0.0, "chance": 0.5, "count": 4.0},
        "all": {"accuracy": 0.0, "count": 4.0},
    }
    tuned = {
        "mc/a": {"accuracy": 0.75, "parsed": 1.0, "chance": 0.5, "count": 4.0},
        "all": {"accuracy": 0.75, "parsed": 1.0, "chance": 0.5, "count": 4.0},
    }
    header, rows = sft_table([("before", base), ("after", tuned)])
    assert header == ["Task", "before", "after", "chance"]
    assert rows == [["mc/a", "0 % (n=4)", "75 % (n=4)", "50 %"], ["all", "0 % (n=4)", "75 % (n=4)", "50 %"]]
    mixed = {**tuned, "points/b": {"point_accuracy": 0.5, "parsed": 1.0, "count": 2.0}}
    assert sft_table([("after", mixed)])[1][-1] == ["all", "75 % (n=4)", "-"]  # a chance over part of `all`: none
    assert sft_table([("after", {"points/b": {"point_accuracy": 0.5, "count": 2.0}})])[0] == ["Task", "after"]
