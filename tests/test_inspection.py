import json

import numpy as np
import pytest

from datasets_build.cli import main
from datasets_build.stats import QUANTILES, RunningStats, feature_stats
from tests.helpers import synthetic_episode
from tests.test_lerobot import _write


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    eps = [synthetic_episode(length=4 + i, seed=i, episode_id=f"e{i}") for i in range(3)]
    return _write(tmp_path_factory.mktemp("ds") / "demo", eps), eps


def test_inspect_json_keys_and_values(dataset, capsys):
    root, eps = dataset
    assert main(["inspect", "demo", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == "demo"
    assert info["episodes"] == 3
    assert info["steps"] == 4 + 5 + 6
    assert info["episode_lengths"] == [4, 5, 6]
    assert info["cameras"] == {"static": [32, 32, 3], "wrist": [16, 16, 3]}
    allact = np.concatenate([e.actions for e in eps])
    np.testing.assert_allclose(info["action"]["min"], allact.min(0), atol=1e-7)
    np.testing.assert_allclose(info["action"]["mean"], allact.mean(0), atol=1e-7)
    assert info["instructions"] == ["pick up the red block"]
    assert info["geometry"] == ["depth", "segmentation", "camera", "objects"]


def test_inspect_partition_and_max(dataset, capsys):
    root, _ = dataset
    assert main(["inspect", "demo", str(root), "--json", "--num-shards", "2", "--shard-index", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["episode_lengths"] == [5]
    assert main(["inspect", "demo", str(root), "--json", "--max-episodes", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 2


def test_stats_file_matches_numpy(dataset, tmp_path):
    root, eps = dataset
    out = tmp_path / "stats.json"
    assert main(["stats", "demo", str(root), "--out", str(out)]) == 0
    stats = json.loads(out.read_text())
    allact = np.concatenate([e.actions for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["std"], allact.std(0), atol=1e-7)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(allact, 0.99, axis=0), atol=1e-9)
    state = np.concatenate([e.state for e in eps]).astype(np.float64)
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(0), atol=1e-6)
    assert stats["action"]["count"] == [15]


def test_bad_source_inputs_are_one_line(tmp_path, capsys):
    assert main(["inspect", "demo", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["inspect", "lerobot", str(tmp_path)]) == 2
    assert "not a LeRobot dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", "nonsense", str(tmp_path)])


def test_running_stats_exact_then_reservoir():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5000, 3))
    small = RunningStats(3)
    for chunk in np.array_split(values, 7):
        small.update(chunk)
    exact = feature_stats(values)
    got = small.result()
    for key in ("min", "max", "mean", "std", *QUANTILES):
        np.testing.assert_allclose(got[key], exact[key], atol=1e-9)
    capped = RunningStats(3, reservoir=1000)
    for chunk in np.array_split(values, 9):
        capped.update(chunk)
    approx = capped.result()
    np.testing.assert_allclose(approx["mean"], exact["mean"], atol=1e-9)  # moments stay exact
    np.testing.assert_allclose(approx["q50"], exact["q50"], atol=0.15)  # quantiles from a 1000-row sample
    np.testing.assert_allclose(approx["q99"], exact["q99"], atol=0.4)


def test_skip_bad_through_the_cli(tmp_path, capsys):
    from tests.calvin_fixtures import write_calvin

    fixture = write_calvin(tmp_path / "calvin")
    bad = fixture.split_dir / fixture.name_format.format(fixture.frames[3])  # inside the first annotation
    bad.write_bytes(bad.read_bytes()[:100])
    assert main(["inspect", "calvin", str(fixture.root), "--json"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar: one error line
    assert last.startswith("error: ")
    assert bad.name in last
    assert main(["inspect", "calvin", str(fixture.root), "--json", "--skip-bad"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sum(info["skipped"].values()) == 1
    assert info["episodes"] == len(fixture.annotations) - 1
