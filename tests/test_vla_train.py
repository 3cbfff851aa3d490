"""VLA training on the demo sim, freezing, from-scratch, the Policy API, resume, download and the CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from datasets_build.configs import build_config
from datasets_build.errors import ConfigError, DataError
from datasets_build.inspection import source_stats
from datasets_build.sources import open_source
from datasets_build.tiny_models import build_tiny_model, install_in_hf_cache, install_tiny_backbones
from vla import Policy, PolicyLike
from vla.cli import main
from vla.configuration_vla import VLAConfig, VLATrainConfig
from vla.data import VLACollator, VLASampleStream, episode_samples
from vla.modeling_vla import VLAPolicyModel
from vla.normalization import NORMALIZATION_FILE, ActionNormalizer
from vla.train import checkpoint_dirs, train

QWEN = "Qwen/Qwen2.5-VL-3B-Instruct"


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones() -> None:
    install_tiny_backbones()


@pytest.fixture(scope="module")
def normalizer(demo_dir: Path) -> ActionNormalizer:
    return ActionNormalizer.from_stats(source_stats(open_source("demo", demo_dir), progress=False))


@pytest.fixture(scope="module")
def samples(demo_episodes: list[Any], normalizer: ActionNormalizer) -> list[Any]:
    """Eight samples: the middle step of each of the six demo episodes, and an early step of two of them."""
    per_episode = [list(episode_samples(episode, 4, normalizer)) for episode in demo_episodes]
    return [s[len(s) // 2] for s in per_episode] + [per_episode[1][3], per_episode[3][3]]


def _batch(model: VLAPolicyModel, samples: list[Any]) -> dict[str, torch.Tensor]:
    return VLACollator(model.backbone)(samples)


def _fit(model: VLAPolicyModel, batch: dict[str, torch.Tensor], steps: int, lr: float = 1e-3) -> list[float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    losses = []
    for _ in range(steps):
        loss = model(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def test_samples_carry_chunks_and_past_the_end_masks(
    samples: list[Any], demo_episodes: list[Any], normalizer: ActionNormalizer
) -> None:
    last = list(episode_samples(demo_episodes[0], 4, normalizer, camera="static"))[-2]
    assert last.mask.tolist() == [True, True, False, False]
    assert last.image.dtype == np.uint8
    assert last.image.ndim == 3
    assert last.instruction == demo_episodes[0].instruction
    assert set(np.unique(last.actions[:, 6])) <= {0.0, 1.0}
    assert np.abs(samples[0].actions[:, :6]).max() <= 1.0
    assert samples[0].mask.all()
    wrist = next(episode_samples(demo_episodes[0], 4, normalizer, camera="wrist"))
    assert wrist.image.shape == demo_episodes[0].frames["wrist"].shape[1:]
    with pytest.raises(DataError, match="no camera"):
        next(episode_samples(demo_episodes[0], 4, normalizer, camera="top"))


def test_stream_splits_episodes_over_ranks(demo_dir: Path, normalizer: ActionNormalizer) -> None:
    kwargs: dict[str, Any] = {"source": "demo", "path": str(demo_dir), "chunk": 2, "normalizer": normalizer}
    rank0 = VLASampleStream(**kwargs, rank=0, world_size=2)
    rank1 = VLASampleStream(**kwargs, rank=1, world_size=2)
    keys0, _ = rank0._my_keys()
    keys1, _ = rank1._my_keys()
    as_text = lambda keys: {json.dumps(k, sort_keys=True, default=str) for k in keys}  # noqa: E731
    assert keys0
    assert keys1
    assert not as_text(keys0) & as_text(keys1)
    assert as_text(keys0) | as_text(keys1) == as_text(rank0.keys)
    first = list(itertools.islice(iter(rank0), 6))
    again = list(itertools.islice(iter(rank0), 6))
    assert [s.instruction for s in first] == [s.instruction for s in again]  # seeded


def test_a_small_dataset_is_not_read_again_to_fill_the_shuffle_buffer(
    demo_dir: Path, normalizer: ActionNormalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A buffer larger than the whole dataset starts drawing after one pass, not after re-reading it to fill up."""
    stream = VLASampleStream(source="demo", path=str(demo_dir), chunk=2, normalizer=normalizer, shuffle_buffer=10**6)
    opened: list[Any] = []
    episode = VLASampleStream._episode
    monkeypatch.setattr(VLASampleStream, "_episode", lambda self, key: (opened.append(key), episode(self, key))[1])
    first = next(iter(stream))
    assert first.instruction
    assert len(opened) <= 2 * len(stream.keys)  # at most the first pass and the interleave of the second


@pytest.mark.slow  # ~10 s on an idle 2-core machine, 40 s when shared
def test_loss_decreases_on_a_tiny_overfit_set(samples: list[Any]) -> None:
    torch.manual_seed(0)
    model = VLAPolicyModel.build(VLAConfig(backbone=QWEN, chunk_size=4))
    losses = _fit(model, _batch(model, samples), steps=40, lr=5e-4)
    assert losses[-1] < 0.4 * losses[0]
    metrics = model(_batch(model, samples))
    assert metrics["gripper_accuracy"].item() >= 0.75


def test_freeze_flags_keep_frozen_weights_bit_identical(samples: list[Any]) -> None:
    config = VLAConfig(backbone=QWEN, chunk_size=4, freeze_vision_tower=True, freeze_word_embeddings=True)
    model = VLAPolicyModel.build(config)
    before = {k: v.clone() for k, v in model.vlm.state_dict().items()}
    query_before = model.query.embedding.detach().clone()
    _fit(model, _batch(model, samples), steps=3)
    after = model.vlm.state_dict()
    vision = [k for k in before if k.startswith("model.visual.")]
    embed = [k for k in before if "embed_tokens" in k]
    assert vision
    assert embed
    assert all(torch.equal(before[k], after[k]) for k in vision + embed)
    llm = [k for k in before if k.startswith("model.language_model.layers.")]
    assert any(not torch.equal(before[k], after[k]) for k in llm)
    assert not torch.equal(query_before, model.query.embedding)  # the query stays learnable
    rows = {row.group: row for row in model.parameter_groups()}
    assert rows["vision_tower"].trainable == 0
    assert rows["projector"].trainable == 0  # Qwen's merger sits inside the frozen tower
    assert rows["word_embeddings"].trainable == 0
    assert rows["action_query"].trainable == rows["action_query"].parameters > 0
    assert rows["language_model"].stored == "fp32"  # trained: fp32 masters


def test_freeze_llm_and_from_scratch() -> None:
    pretrained = VLAPolicyModel.build(VLAConfig(backbone=QWEN, chunk_size=2, freeze_llm=True))
    assert not any(p.requires_grad for p in pretrained.backbone.module("language_model").parameters())
    assert all(p.requires_grad for p in pretrained.head.parameters())
    scratch = VLAPolicyModel.build(VLAConfig(backbone=QWEN, chunk_size=2, from_scratch=True))
    a, b = pretrained.vlm.state_dict(), scratch.vlm.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    assert not torch.equal(a["model.visual.patch_embed.proj.weight"], b["model.visual.patch_embed.proj.weight"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, samples: list[Any], normalizer: ActionNormalizer) -> Path:
    """A briefly trained PaliGemma policy saved as a checkpoint (PaliGemma: the "\\n" after the text)."""
    torch.manual_seed(0)
    model = VLAPolicyModel.build(VLAConfig(backbone="google/paligemma-3b-pt-224", chunk_size=4))
    _fit(model, _batch(model, samples), steps=3)
    folder = tmp_path_factory.mktemp("policy") / "ckpt"
    model.save_pretrained(folder, normalizer)
    model.eval()
    with torch.inference_mode():
        raw = model.predict(_batch(model, samples[:2])).numpy()
    np.save(folder.parent / "raw.npy", raw)
    return folder


def test_policy_reload_gives_identical_actions(trained: Path, samples: list[Any], normalizer: ActionNormalizer) -> None:
    policy = Policy.from_pretrained(trained, device="cpu")
    assert isinstance(policy, PolicyLike)
    assert policy.chunk_size == 4
    raw = np.load(trained.parent / "raw.npy")
    actions = policy.act_batch([[s.image] for s in samples[:2]], [s.instruction for s in samples[:2]])
    assert actions.dtype == np.float32
    assert actions.shape == (2, 4, 7)
    np.testing.assert_allclose(actions[..., :6], normalizer.denormalize(raw)[..., :6], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(actions[..., 6], (raw[..., 6] > 0).astype(np.float32))
    install_in_hf_cache(trained, "vlm4vla-test/tiny-paligemma-vla")  # a pushed checkpoint, by Hub id
    by_id = Policy.from_pretrained("vlm4vla-test/tiny-paligemma-vla", device="cpu")
    np.testing.assert_array_equal(
        by_id.act_batch([[s.image] for s in samples[:2]], [s.instruction for s in samples[:2]]), actions
    )


def test_policy_is_deterministic_and_batch_equals_single(trained: Path, samples: list[Any]) -> None:
    policy = Policy.from_pretrained(trained, device="cpu")
    policy.reset()
    one = policy.act([samples[0].image], samples[0].instruction)
    assert one.shape == (4, 7)
    assert one.dtype == np.float32
    np.testing.assert_array_equal(one, policy.act([samples[0].image], samples[0].instruction))
    batch = policy.act_batch(
        [[samples[0].image], [samples[5].image]], [samples[0].instruction, "put the red block in the drawer now"]
    )
    np.testing.assert_allclose(batch[0], one, atol=1e-5)
    np.testing.assert_allclose(
        batch[1], policy.act([samples[5].image], "put the red block in the drawer now"), atol=1e-5
    )


def test_policy_bad_input_is_a_one_line_error(trained: Path, tmp_path: Path, samples: list[Any]) -> None:
    policy = Policy.from_pretrained(trained, device="cpu")
    image = samples[0].image
    with pytest.raises(DataError, match="uint8"):
        policy.act([image.astype(np.float32)], "pick up cube")
    with pytest.raises(DataError, match="uint8"):
        policy.act([image[..., 0]], "pick up cube")
    with pytest.raises(DataError, match="exactly one image"):
        policy.act([image, image], "pick up cube")
    with pytest.raises(DataError, match="empty instruction"):
        policy.act([image], "")
    broken = tmp_path / "no-stats"
    import shutil

    shutil.copytree(trained, broken)
    (broken / NORMALIZATION_FILE).unlink()
    with pytest.raises(DataError, match="no normalisation statistics"):
        Policy.from_pretrained(broken)


def test_train_saves_every_k_steps_and_resumes(tmp_path: Path, demo_dir: Path) -> None:
    flags = {
        "out": str(tmp_path / "run"),
        "steps": 4,
        "batch_size": 4,
        "lr": 1e-3,
        "save_every": 2,
        "log_every": 1,
        "progress": False,
        "model": {"backbone": "microsoft/kosmos-2-patch14-224", "chunk_size": 2, "freeze_vision_tower": True},
        "data": {"source": "demo", "path": str(demo_dir), "num_workers": 1, "shuffle_buffer": 16},
    }
    summary = train(build_config(VLATrainConfig, flags))
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["checkpoint-000002", "checkpoint-000004"]
    assert {"huber", "bce", "gripper_accuracy", "lr", "samples_per_s"} <= set(summary["last"])
    assert summary["world_size"] == 1
    ckpt = tmp_path / "run" / "checkpoint-000004"
    assert (ckpt / "recipe.yaml").is_file()
    assert (ckpt / "train_state").is_dir()
    assert Policy.from_pretrained(ckpt, device="cpu").act(
        [np.zeros((64, 64, 3), np.uint8)], "open the drawer"
    ).shape == (
        2,
        7,
    )
    with pytest.raises(Exception, match="not empty"):
        train(build_config(VLATrainConfig, flags))
    resumed = train(build_config(VLATrainConfig, flags, {"steps": 6, "resume": True}))
    history = json.loads((tmp_path / "run" / "train_summary.json").read_text())["history"]
    assert [h["step"] for h in history] == [5, 6]
    assert resumed["checkpoints"][-1].endswith("checkpoint-000006")
    assert json.loads((tmp_path / "run" / "checkpoint-000006" / "step.json").read_text())["step"] == 6
    assert not list((tmp_path / "run").glob(".tmp-*"))


def test_sft_folder_and_post_trained_hub_id_are_backbones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = build_tiny_model("qwen2_5_vl", tmp_path / "sft-out", seed=3)  # a plain transformers checkpoint
    model = VLAPolicyModel.build(VLAConfig(backbone=str(folder), chunk_size=2))
    assert model.backbone.family == "qwen2_5_vl"
    install_in_hf_cache(folder, "BAAI/RoboBrain2.0-7B")
    assert main(["download", "BAAI/RoboBrain2.0-7B"]) == 0
    out = capsys.readouterr().out
    assert "GB at" in out
    assert "qwen2_5_vl backbone" in out
    assert main(["download", "BAAI/not-in-the-cache"]) == 2


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", f"out={tmp_path}/x", "model.no_such_key=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["train", f"out={tmp_path}/x", "model.normalization=minmax"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "normalization" in err
    with pytest.raises(ConfigError):
        build_config(VLATrainConfig, {"out": ""})


def test_standardised_head_input_learns_where_the_plain_head_barely_moves(samples: list[Any]) -> None:
    """A random tiny backbone's query state is nearly the same vector for every input: the paper's head fits an
    8-sample set slowly; with `head_input_norm: batch` it sees the varying part at unit scale and fits it."""
    final = {}
    for norm in ("none", "batch"):
        torch.manual_seed(0)
        model = VLAPolicyModel.build(VLAConfig(backbone=QWEN, chunk_size=4, image_size=112, head_input_norm=norm))
        batch = _batch(model, samples)
        states = model.query_states({k: v for k, v in batch.items() if k not in ("actions", "action_mask")})
        spread = (states.std(0).norm() / states.norm(dim=-1).mean()).item()
        assert spread < 0.2  # the premise: most of the query state is shared
        final[norm] = _fit(model, batch, 40, lr=3e-4)[-1]
    assert final["batch"] < 0.5 * final["none"]


def test_standardised_head_statistics_refresh_save_and_reload(
    tmp_path: Path, samples: list[Any], normalizer: ActionNormalizer
) -> None:
    from vla.head import StandardizedInputHead, refresh_input_statistics

    model = VLAPolicyModel.build(VLAConfig(backbone=QWEN, chunk_size=4, image_size=112, head_input_norm="batch"))
    assert isinstance(model.head, StandardizedInputHead)
    batch = _batch(model, samples)
    inputs = {k: v for k, v in batch.items() if k not in ("actions", "action_mask")}
    with torch.no_grad():
        states = model.query_states(inputs)
    assert refresh_input_statistics(model.head, [states[:4], states[4:]])
    norm = model.head.norm
    torch.testing.assert_close(norm.running_mean, states.mean(0), rtol=1e-5, atol=1e-6)
    # the plain average of the two batches' unbiased variances, as BatchNorm's cumulative mode keeps them
    expected_var = (states[:4].var(0) + states[4:].var(0)) / 2
    torch.testing.assert_close(norm.running_var, expected_var, rtol=1e-4, atol=1e-7)
    assert norm.momentum == 0.1
    assert norm.training
    model.eval()
    with torch.no_grad():
        raw = model.predict(inputs).numpy()
    folder = model.save_pretrained(tmp_path / "ckpt", normalizer)
    reloaded = VLAPolicyModel.from_checkpoint(folder).eval()
    assert VLAConfig.load(folder).head_input_norm == "batch"
    with torch.no_grad():
        np.testing.assert_allclose(reloaded.predict(inputs).numpy(), raw, rtol=1e-5, atol=1e-5)
    plain = VLAPolicyModel.build(VLAConfig(backbone=QWEN, chunk_size=4))
    assert not refresh_input_statistics(plain.head, [states])
    with pytest.raises(ConfigError, match="head_input_norm"):
        VLAConfig(head_input_norm="layer")


def test_train_with_a_standardised_head_refreshes_before_saving(tmp_path: Path, demo_dir: Path) -> None:
    flags = {
        "out": str(tmp_path / "run"),
        "steps": 2,
        "batch_size": 4,
        "lr": 1e-3,
        "save_every": 2,
        "progress": False,
        "model": {"backbone": QWEN, "chunk_size": 2, "image_size": 112, "head_input_norm": "batch"},
        "data": {"source": "demo", "path": str(demo_dir), "num_workers": 0},
    }
    train(build_config(VLATrainConfig, flags))
    ckpt = tmp_path / "run" / "checkpoint-000002"
    model = VLAPolicyModel.from_checkpoint(ckpt)
    norm = model.head.norm
    assert int(norm.num_batches_tracked) > 0  # the refresh pass ran (not a fresh BatchNorm)
    assert float(norm.running_var.min()) > 0.0
    assert Policy.from_pretrained(ckpt).act([np.zeros((64, 64, 3), np.uint8)], "open the drawer").shape == (2, 7)
    with pytest.raises(ConfigError, match="head_input_norm batch needs >= 2"):
        train(build_config(VLATrainConfig, flags, {"out": str(tmp_path / "one"), "batch_size": 1}))
