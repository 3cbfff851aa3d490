"""The omni-generation head on a tiny Qwen2.5-VL: query tokens, joint training steps, sampling to PNG, reload."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from datasets_build.corpora import EpisodeContext, episode_rng, make_builder
from datasets_build.tiny_models import install_tiny_backbones
from sft.checkpoints import COMPLETE_FILE
from sft.omni_head import (
    OmniGenerationHead,
    OmniHeadConfig,
    add_query_tokens,
    append_queries,
    collate_targets,
    query_token,
    target_tensor,
    tensor_to_png,
)

MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
CONFIG = OmniHeadConfig(
    enabled=True,
    num_queries=4,
    image_size=16,
    cond_dim=32,
    block_out_channels=[16, 32],
    attention_head_dim=8,
    sample_steps=3,
)


@pytest.fixture(scope="module")
def omni_rows(demo_episodes):
    builder = make_builder(
        "omni_generation", {"question_types": ["depth", "segmentation", "image"], "frames_per_episode": 1}
    )
    rows = []
    for ep in demo_episodes[:2]:
        samples = builder.build(ep, EpisodeContext(episode_rng(0, ep.episode_id, ep.source))).samples
        rows += [
            {
                "images": s.images,
                "messages": s.messages,
                "target": s.target,
                "generation": s.meta["question_type"],
            }
            for s in samples
        ]
    return rows


@pytest.fixture(scope="module")
def vlm():
    install_tiny_backbones(ids=[MODEL])
    processor = AutoProcessor.from_pretrained(MODEL)
    model = AutoModelForImageTextToText.from_pretrained(MODEL)
    ids = add_query_tokens(processor.tokenizer, model, CONFIG.num_queries)
    return processor, model, ids


def prompt_inputs(processor, rows):
    prompts = [[{**rows_i["messages"][0]}] for rows_i in rows]
    texts = [processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    return dict(processor(text=texts, images=[r["images"] for r in rows], return_tensors="pt", padding=True))


def test_query_tokens_are_added_once(vlm):
    processor, model, ids = vlm
    assert processor.tokenizer.convert_ids_to_tokens(ids) == [query_token(i) for i in range(CONFIG.num_queries)]
    assert model.get_input_embeddings().weight.shape[0] > max(ids)
    assert add_query_tokens(processor.tokenizer, model, CONFIG.num_queries) == ids


def test_append_queries_places_them_after_each_rows_last_token(vlm):
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    out, positions = append_queries({"input_ids": ids, "attention_mask": mask, "labels": ids}, torch.tensor([100, 101]))
    assert out["input_ids"].tolist() == [[5, 6, 7, 100, 101], [8, 9, 100, 101, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert positions.tolist() == [[3, 4], [2, 3]]
    assert "labels" not in out


def test_targets_round_trip_through_denoiser_images(omni_rows):
    kinds = {row["generation"] for row in omni_rows}
    assert {"depth", "segmentation", "image"} <= kinds
    batch = collate_targets([*omni_rows, {"images": [], "messages": []}], CONFIG.image_size, CONFIG.depth_far)
    assert batch["omni_target"].shape == (len(omni_rows) + 1, 3, 16, 16)
    assert batch["omni_has_target"].tolist() == [True] * len(omni_rows) + [False]
    assert batch["omni_target"].min() >= -1.0
    assert batch["omni_target"].max() <= 1.0
    depth_row = next(r for r in omni_rows if r["generation"] == "depth")
    tensor = target_tensor(depth_row["target"], "depth", 16, CONFIG.depth_far)
    png = tensor_to_png(tensor, "depth", CONFIG.depth_far)
    assert png.mode == "I;16"
    small = np.asarray(depth_row["target"].resize((16, 16), Image.Resampling.NEAREST), dtype=np.float64)
    assert np.abs(np.asarray(png, dtype=np.float64) - np.minimum(small, CONFIG.depth_far * 1000)).max() <= 1.0
    seg_row = next(r for r in omni_rows if r["generation"] == "segmentation")
    seg_png = tensor_to_png(target_tensor(seg_row["target"], "segmentation", 16, 5.0) + 0.01, "segmentation", 5.0)
    assert np.array_equal(
        np.asarray(seg_png), np.asarray(seg_row["target"].convert("RGB").resize((16, 16), Image.Resampling.NEAREST))
    )


def test_joint_steps_train_the_head_and_sampling_writes_png(vlm, omni_rows, tmp_path):
    processor, model, ids = vlm
    torch.manual_seed(0)
    head = OmniGenerationHead(CONFIG, model.config.get_text_config().hidden_size, ids)
    rows = omni_rows[:3]
    inputs = prompt_inputs(processor, rows)
    before = {k: v.clone() for k, v in head.denoiser.state_dict().items()}
    query_rows_before = model.get_input_embeddings().weight[ids].detach().clone()
    optimizer = torch.optim.AdamW([*head.parameters(), *model.parameters()], lr=1e-3)
    losses = []
    for _ in range(3):
        batch = {**inputs, **collate_targets(rows, CONFIG.image_size, CONFIG.depth_far)}
        loss = head(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert any(not torch.equal(before[k], v) for k, v in head.denoiser.state_dict().items())
    assert not torch.equal(query_rows_before, model.get_input_embeddings().weight[ids].detach())  # queries learn
    # rows without targets contribute a zero loss that still reaches every head parameter
    empty = head(model, {**inputs, **collate_targets([{}] * 3, CONFIG.image_size, CONFIG.depth_far)})
    assert float(empty.detach()) == 0.0
    # save, reload, and sample identically
    head.save_pretrained(tmp_path / "omni_head", [query_token(i) for i in range(CONFIG.num_queries)])
    again = OmniGenerationHead.from_pretrained(tmp_path / "omni_head", processor.tokenizer)
    images = head.sample(model, dict(inputs), torch.Generator().manual_seed(1))
    images_again = again.sample(model, dict(inputs), torch.Generator().manual_seed(1))
    assert images.shape == (3, 3, 16, 16)
    assert torch.allclose(images, images_again, atol=1e-5)
    for image, row in zip(images, rows, strict=True):
        path = tmp_path / f"{row['generation']}.png"
        tensor_to_png(image, row["generation"], CONFIG.depth_far).save(path)
        assert Image.open(path).size == (16, 16)


@pytest.mark.slow
def test_sft_train_with_the_omni_head_and_sample_command(demo_dir, tmp_path, capsys):
    from datasets_build.checkpoint import CheckpointFolder
    from datasets_build.configs import build_config, config_to_dict
    from datasets_build.corpora import BuildConfig, build_corpus
    from sft.cli import main
    from sft.config import SFTTrainConfig
    from sft.train import train

    install_tiny_backbones(ids=[MODEL])
    omni = tmp_path / "omni"
    vqa = tmp_path / "robo2vlm"
    options = {"question_types": ["depth", "segmentation"], "frames_per_episode": 1}
    build_corpus(BuildConfig(name="omni_generation", input=str(demo_dir), out=str(omni), options=options))
    build_corpus(BuildConfig(name="robo2vlm", input=str(demo_dir), out=str(vqa), max_samples=8))
    cfg = build_config(
        SFTTrainConfig,
        {
            "model": MODEL,
            "data": [{"path": str(omni)}, {"path": str(vqa)}],
            "output_dir": str(tmp_path / "run"),
            "shuffle_buffer": 4,
            "freeze": {"word_embeddings": True},
            "trainer": {"max_steps": 2, "save_steps": 2, "logging_steps": 1, "per_device_train_batch_size": 2},
            "omni": {**vars(CONFIG), "enabled": True},
        },
        where="test",
    )
    summary = train(cfg)
    final = Path(summary["checkpoint"])
    CheckpointFolder.inspect(final)
    assert (final / "omni_head" / "omni_config.json").is_file()
    periodic = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    assert (periodic / "omni_head" / "omni_config.json").is_file()
    # the head is on disk before checkpoint_complete.json, which marks the checkpoint complete (a crash between
    # the two leaves a checkpoint resume skips, never one it fails on)
    head_written = max(p.stat().st_mtime_ns for p in (periodic / "omni_head").rglob("*") if p.is_file())
    assert head_written <= (periodic / COMPLETE_FILE).stat().st_mtime_ns
    resumed = train(
        build_config(SFTTrainConfig, {**config_to_dict(cfg), "resume": True}, {"trainer": {"max_steps": 3}})
    )
    assert resumed["steps"] == 3
    # the VLM alone still loads with plain transformers (the VLA stage uses only it)
    AutoModelForImageTextToText.from_pretrained(final)
    image = tmp_path / "in.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(image)
    args = ["sample", str(final), "--image", str(image), "--prompt", "Generate the depth map of this image."]
    assert main([*args, "--out", str(tmp_path / "depth.png")]) == 0
    generated = Image.open(tmp_path / "depth.png")
    assert generated.size == (16, 16)
    assert generated.mode in ("I;16", "I")
