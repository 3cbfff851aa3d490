"""`vla train` with the paper presets end to end on tiny models: CALVIN-format data with `calvin_abc_d` (global
shuffle, drop_last windows, random shift, +-0.65 tanh head, an epoch schedule, exact resume) and Bridge RLDS
data with `simpler_bridge` (stream, OpenVLA's labels and augmentation); what the checkpoints record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datasets_build.configs import build_config
from datasets_build.tiny_models import install_tiny_backbones
from tests import rlds_fixtures as fx
from tests.calvin_fixtures import write_calvin
from vla import Policy
from vla.configuration_vla import VLAConfig, VLATrainConfig
from vla.train import checkpoint_dirs, train
from vla.train_data import TrainingData, image_size_check


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones() -> None:
    install_tiny_backbones()


def _train(**flags: Any) -> dict[str, Any]:
    return train(build_config(VLATrainConfig, flags))


def test_calvin_abc_d_preset_trains_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calvin = write_calvin(tmp_path / "task_ABC_D")
    flags: dict[str, Any] = {
        "preset": "calvin_abc_d",
        "out": str(tmp_path / "run"),
        "batch_size": 4,
        "epochs": 0.25,  # 26 samples under drop_last: ceil(0.25 * 26 / 4) = 2 steps
        "log_every": 1,
        "progress": False,
        "data": {"path": str(calvin.root), "num_workers": 1},
    }
    summary = _train(**flags)
    assert (summary["steps"], summary["warmup_steps"], summary["samples_per_epoch"]) == (2, 2, 26)
    ckpt = checkpoint_dirs(tmp_path / "run")[-1]
    training = VLAConfig.load_training(ckpt)
    assert training["preset"]["name"] == "calvin_abc_d"
    assert training["preset"]["overridden"]["batch_size"] == {"preset": 128, "run": 4}
    data = training["data"]
    assert (data["sampler"], data["window_rule"], data["augment"]["shift_pad"]) == ("global", "drop_last", 10)
    assert data["normalization"]["mode"] == "none"
    assert data["normalization"]["action_clip"] == pytest.approx(0.65)
    assert training["schedule"]["grad_clip"] == 0.0
    assert any("bf16" in d for d in training["deviations"])
    assert "calvin_abc_d" in (ckpt / "README.md").read_text()
    assert (tmp_path / "run" / "episode_index" / "layouts.npz").is_file()
    assert json.loads((ckpt / "step.json").read_text())["data"] == {
        "batches": 2,
        "world_size": 1,
        "num_workers": 1,
        "batch_size": 4,
    }

    policy = Policy.from_pretrained(ckpt, device="cpu")
    assert policy.metadata["preset"] == "calvin_abc_d"
    assert (policy.metadata["chunk_size"], policy.metadata["image_size"]) == (10, 224)
    assert policy.metadata["eval_sim_options"] == {}
    json.dumps(policy.metadata)

    def no_augmentation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("augmentation ran at evaluation")

    monkeypatch.setattr("vla.augment.augment_image", no_augmentation)
    monkeypatch.setattr("vla.data.augment_image", no_augmentation)
    frame = calvin.frame_path(calvin.annotations[0][0])
    image = np.load(frame)["rgb_static"]
    first = policy.act([image], "push the red block to the left")
    assert first.shape == (10, 7)
    assert np.abs(first[:, :6]).max() <= 0.65 + 1e-6  # tanh head x 0.65: inside the clip bound
    assert np.array_equal(first, policy.act([image], "push the red block to the left"))
    monkeypatch.undo()

    resumed = _train(**{**flags, "epochs": 0.5, "resume": True})  # continues the same permutation at step 3
    assert resumed["steps"] == 4
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["history"]
    assert [h["step"] for h in history] == [3, 4]


def test_simpler_bridge_preset_streams_paper_labels(tmp_path: Path) -> None:
    root = fx.write_rlds(
        tmp_path, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(16, 16), fx.many_bridge_episodes(12, 8, 16, 16), [6, 6]
    )
    summary = _train(
        preset="simpler_bridge",
        out=str(tmp_path / "run"),
        batch_size=2,
        steps=2,
        save_every=2,
        warmup_steps=1,
        progress=False,
        model={"backbone": "google/paligemma-3b-pt-224"},
        data={"path": str(root), "num_workers": 0, "shuffle_buffer": 16},
    )
    assert summary["steps"] == 2
    ckpt = checkpoint_dirs(tmp_path / "run")[-1]
    training = VLAConfig.load_training(ckpt)
    data = training["data"]
    assert (data["sampler"], data["bridge_labels"], data["samples_per_epoch"]) == ("stream", "paper", 12 * 6)
    assert data["augment"]["crop_area"] == pytest.approx(0.9)
    assert data["normalization"]["mode"] == "q01_q99"
    assert training["preset"]["resolved"]["lr"] == 5e-5  # PaliGemma's learning rate in the code
    policy = Policy.from_pretrained(ckpt, device="cpu")
    assert policy.metadata["eval_sim_options"] == {"simpler": {"late_close_gripper": 2}}
    assert policy.metadata["benchmark"] == "simpler"


def test_libero_10_notes_training_images_that_are_not_256() -> None:
    cfg = build_config(VLATrainConfig, {"out": "runs/x", "preset": "libero_10"})
    data = TrainingData(dataset=None, normalizer=None, sampler="stream", samples=0, episodes=0)  # type: ignore[arg-type]
    data.record["image_shape"] = [128, 128, 3]
    assert "128x128" in image_size_check(cfg, data)
    data.record["image_shape"] = [256, 256, 3]
    assert image_size_check(cfg, data) == ""
