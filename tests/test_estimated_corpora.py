"""The estimated-geometry path end to end: Bridge RLDS episodes (no depth, no masks) -> spatial corpora.

Tiny random OWLv2 / SAM / Depth Anything models sit in the offline HF cache under their real ids, so the
builders run the real `from_pretrained` + model calls. Random weights find arbitrary boxes: the tests check
the plumbing (geometry estimated, samples written, answers verified against their recorded facts, skip
reasons counted), not the semantics of the detections.
"""

import json

import pytest

from datasets_build.cli import main
from datasets_build.corpora import verify_corpus
from datasets_build.shards import ShardSet
from tests import rlds_fixtures as fx
from tests.geometry_models import install_tiny_geometry_models

H, W = 96, 128


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    install_tiny_geometry_models()
    root = tmp_path_factory.mktemp("rlds")
    episodes = fx.bridge_v2_episodes((6, 6, 6), height=H, width=W)
    for i, ep in enumerate(episodes):
        ep["steps/language_instruction"] = [f"put the red spoon in the blue pot {i}"] * ep["_length"]
    return fx.write_rlds(root, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(H, W), episodes, [2, 1])


@pytest.mark.parametrize(
    ("corpus", "options"),
    [
        ("bridgevqa", ["units=metric", "question_types=[distance,width,height,horizontal_distance]"]),
        ("robopoint", ["camera=image_0", "question_types=[object,left,right]"]),
        ("omni_generation", ["camera=image_0", "question_types=[depth]"]),
    ],
)
def test_corpus_from_estimated_geometry(bridge, tmp_path, corpus, options, capsys):
    out = tmp_path / corpus
    camera = [] if corpus != "bridgevqa" else ["camera=image_0"]
    args = ["build", corpus, "--source", "rlds", "--input", str(bridge), "--out", str(out), *camera, *options]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    card = ShardSet(out).card
    assert card.build_config["options"]["geometry"]["mode"] == "auto"
    assert summary["samples"] > 0, summary["skipped"]
    report = verify_corpus(out)
    assert report["errors"] == 0, report["failed_keys"]
    for sample in ShardSet(out):
        if corpus == "bridgevqa":
            assert sample.meta["geometry"]["origin"] == "estimated"
