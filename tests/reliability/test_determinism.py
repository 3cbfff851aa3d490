"""Same seed, same bytes: demo episodes and corpus shards built twice are byte-identical, a different seed changes
them, and a policy's `act` gives bit-identical actions in two separate processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets_build.corpora import BuildConfig, build_corpus
from datasets_build.demo_episodes import DemoEpisodesConfig, record_demo_episodes

ROOT = Path(__file__).resolve().parents[2]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_demo_episodes_with_one_seed_are_byte_identical(tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("other", 4)):
        record_demo_episodes(DemoEpisodesConfig(out=str(tmp_path / name), episodes=2, seed=seed, image_size=48))
        runs[name] = digests(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert any(path.startswith("data/") for path in runs["a"])
    assert runs["a"] != runs["other"]


@pytest.mark.parametrize("corpus", ["robo2vlm", "vica", "bridgevqa"])
def test_corpus_shards_with_one_seed_are_byte_identical(corpus: str, demo_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("other", 2)):
        build_corpus(BuildConfig(name=corpus, input=str(demo_dir), out=str(tmp_path / name), max_samples=6, seed=seed))
        runs[name] = digests(tmp_path / name)
    assert runs["a"] == runs["b"]
    assert any(path.endswith(".tar") for path in runs["a"])
    assert runs["a"] != runs["other"]  # the seed reaches the samples (and the card records it)


_ACT = """
import sys
import numpy as np
from tests.serve_fixtures import frames
from vla import Policy

policy = Policy.from_pretrained(sys.argv[1], device="cpu")
images = frames(3, size=64, seed=7)
actions = np.stack([policy.act([image], "put the red block on the blue one") for image in images])
np.save(sys.argv[2], actions)
"""


@pytest.mark.slow  # two fresh interpreters load torch + transformers: ~60 s on 2 busy cores
def test_act_is_bit_identical_across_processes(tmp_path: Path) -> None:
    from tests.serve_fixtures import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "ckpt")
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"act{hash_seed}.npy"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-c", _ACT, str(checkpoint), str(out)],
            check=False,
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(np.load(out))
    assert outputs[0].shape[0] == 3
    assert np.isfinite(outputs[0]).all()
    assert outputs[0].tobytes() == outputs[1].tobytes()
    assert not np.array_equal(outputs[0][0], outputs[0][1])  # the images reach the actions
