"""`python -m datasets_build push` against the loopback Hub (tests/fake_hub.py): one commit with the tars, the card
and a README dataset card; `datasets.load_dataset("ORG/NAME")` reads the repo back with decoded images, and
`ShardSet("ORG/NAME")` opens it from the cache offline; a folder whose shards do not match their card is refused
before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from datasets_build.cli import main
from datasets_build.corpora import BuildConfig, build_corpus
from datasets_build.corpora.mix import MixConfig, MixInput, mix_shards
from datasets_build.errors import ConfigError, DataError
from datasets_build.push import DatasetPushConfig, dataset_readme, push_dataset
from datasets_build.shards import CARD_NAME, DatasetCard, ShardSet

TOKEN = "hf_loopbackDatasetToken456"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("push")
    out = {}
    for name, n in (("vica", 8), ("robo2vlm", 8)):
        out[name] = root / name
        build_corpus(BuildConfig(name=name, input=str(demo_dir), out=str(out[name]), max_samples=n))
    out["mix"] = root / "mix"
    inputs = [MixInput(str(out["vica"]), count=8), MixInput(str(out["robo2vlm"]), count=8)]
    mix_shards(MixConfig(inputs=inputs, mode="count", out=str(out["mix"]), max_samples_per_shard=6, progress=False))
    return out


def _front_matter(readme: str) -> dict:
    _, header, _ = readme.split("---\n", 2)
    return yaml.safe_load(header)


def test_readme_declares_what_load_dataset_and_the_hub_need(folders: dict[str, Path]) -> None:
    card = DatasetCard.read(folders["mix"])
    readme = dataset_readme(card, "org/demo-mix", license="cc-by-4.0")
    meta = _front_matter(readme)
    assert meta["license"] == "cc-by-4.0"
    assert "visual-question-answering" in meta["task_categories"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "vqa_mix-*.tar"}]}]
    names = [f["name"] for f in meta["dataset_info"]["features"]]
    assert names == ["images.npy", "json", "targets.npy", "__key__", "__url__"]
    assert meta["dataset_info"]["features"][0] == {"name": "images.npy", "list": "image"}
    for task, count in card.counts_per_task.items():
        assert f"| {task} |" in readme
        assert f"| {count} |" in readme
    for shard in card.shards:
        assert shard.sha256 in readme
    for item in card.inputs:
        assert item["card_sha256"] in readme
    assert '"quotas"' in readme  # the build config
    made = readme.split("## How the answers were made and verified", 1)[1].split("##", 1)[0]
    assert "- `vica`:" in made
    assert "- `robo2vlm`:" in made
    assert "verify" in made
    assert 'load_dataset("org/demo-mix"' in readme


@pytest.mark.slow
def test_push_then_load_dataset_and_shardset_by_id(hub, folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    handler, endpoint = hub
    handler.failures.update({"commit": 1})  # transient: retried by huggingface_hub
    (folders["mix"] / "notes.txt").write_text("not part of the dataset")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", TOKEN)
        assert main(["push", str(folders["mix"]), "org/demo-mix", "--private", f"endpoint={endpoint}"]) == 0
    out = capsys.readouterr()
    assert "org/demo-mix/commit/" in out.out
    assert TOKEN not in out.out + out.err
    card = DatasetCard.read(folders["mix"])
    files = handler.repos[("datasets", "org/demo-mix")]
    assert sorted(files) == sorted(["README.md", CARD_NAME, *(s.name for s in card.shards)])
    for shard in card.shards:
        assert files[shard.name] == (folders["mix"] / shard.name).read_bytes()
    creates = [r for r in handler.log if r["kind"] == "create"]
    assert creates[0]["type"] == "dataset"
    assert creates[0]["visibility"] == "private"
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in handler.log if r["kind"] != "get")

    hf_home = tmp_path / "hf_home"
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "PYTHONPATH": str(ROOT),
    }
    for key in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        env.pop(key, None)
    online = """
import json, datasets
from datasets_build.shards import ShardSet
ds = datasets.load_dataset("org/demo-mix", split="train")
row = ds[0]
print(json.dumps({"rows": len(ds), "images": [len(r["images.npy"]) for r in ds],
                  "pil": type(row["images.npy"][0]).__name__, "meta": json.loads(row["json"]["meta"]),
                  "keys": list(ds["__key__"]), "shardset": len(ShardSet("org/demo-mix", verify=True))}))
"""
    done = subprocess.run(
        [sys.executable, "-c", online], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    samples = list(ShardSet(folders["mix"]))
    assert got["rows"] == got["shardset"] == len(samples)
    assert got["keys"] == [s.key for s in samples]
    assert got["images"] == [len(s.images) for s in samples]
    assert got["pil"].endswith("ImageFile")
    assert got["meta"] == samples[0].meta
    offline = "from datasets_build.shards import ShardSet; print(len(ShardSet('org/demo-mix')))"
    env_offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", offline], env=env_offline, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(len(samples))


def test_a_folder_that_does_not_match_its_card_is_refused_before_any_upload(
    hub, folders: dict[str, Path], tmp_path: Path, capsys
) -> None:
    handler, endpoint = hub
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in folders["vica"].iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    tar = next(copy.glob("*.tar"))
    data = bytearray(tar.read_bytes())
    data[2048] ^= 0x01
    tar.write_bytes(bytes(data))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", TOKEN)
        assert main(["push", str(copy), "org/broken", f"endpoint={endpoint}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert str(tar) in err
    assert "sha256" in err
    assert handler.log == []  # nothing was sent, not even create_repo
    (copy / CARD_NAME).unlink()
    with pytest.raises(DataError, match="dataset card not found"):
        push_dataset(DatasetPushConfig(str(copy), "org/broken", endpoint=endpoint), token=TOKEN)
    with pytest.raises(ConfigError, match="ORG/NAME"):
        push_dataset(DatasetPushConfig(str(folders["vica"]), "no-slash", endpoint=endpoint), token=TOKEN)
    assert handler.log == []
