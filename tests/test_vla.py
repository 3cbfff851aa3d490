"""VLA backbones, prompts, head, loss and normalisation on the tiny models under the paper's real Hub ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlamaConfig

from datasets_build.errors import ConfigError, DataError
from datasets_build.tiny_models import install_tiny_backbones
from datasets_build.vlm_families import IMAGE_TOKENS_224, PAPER_BACKBONES, PAPER_PARAMS_M
from vla.action_query import ACTION_QUERY_TOKEN
from vla.backbones import BACKBONES, BackboneOptions, load_backbone
from vla.cli import main
from vla.head import ActionHead, head_width
from vla.info import TABLE9, model_info
from vla.loss import action_loss
from vla.normalization import ActionNormalizer

QWEN_IDS = ["Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-30B-A3B-Instruct"]
PALI_IDS = ["google/paligemma-3b-pt-224", "google/paligemma2-3b-pt-224"]
KOSMOS_ID = "microsoft/kosmos-2-patch14-224"
IMAGE = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _tiny_backbones() -> None:
    install_tiny_backbones()


def _ids(backbone, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return list(backbone.tokenizer(text, add_special_tokens=False)["input_ids"])


# --- prompts (paper A.2.3), instruction "pick up cube" ------------------------------------------------------


@pytest.mark.parametrize("repo_id", QWEN_IDS)
def test_qwen_full_chat_prompt_matches_the_paper(repo_id: str) -> None:
    backbone, query_id = load_backbone(repo_id)
    pads = "<|image_pad|>" * IMAGE_TOKENS_224[backbone.family]
    expected = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|>{pads}<|vision_end|>What action should the robotic arm take to pick up cube<|im_end|>\n"
        f"<|im_start|>assistant\n{ACTION_QUERY_TOKEN}"
    )
    batch = backbone.encode([IMAGE], ["pick up cube"])
    assert batch["input_ids"][0].tolist() == _ids(backbone, expected)
    assert batch["input_ids"][0, -1].item() == query_id


@pytest.mark.parametrize("repo_id", QWEN_IDS)
def test_qwen_short_prompt_matches_the_paper(repo_id: str) -> None:
    backbone, _ = load_backbone(repo_id, BackboneOptions(prompt_scheme="short"))
    pads = "<|image_pad|>" * IMAGE_TOKENS_224[backbone.family]
    expected = f"<|im_start|><|vision_start|>{pads}<|vision_end|>pick up cube\n{ACTION_QUERY_TOKEN}"
    assert backbone.encode([IMAGE], ["pick up cube"])["input_ids"][0].tolist() == _ids(backbone, expected)


@pytest.mark.parametrize("repo_id", PALI_IDS)
def test_paligemma_prefix_suffix_prompt(repo_id: str) -> None:
    backbone, query_id = load_backbone(repo_id)
    batch = backbone.encode([IMAGE], ["pick up cube"])
    ids = batch["input_ids"][0].tolist()
    expected = _ids(backbone, "<image>" * 256 + f"<bos>pick up cube\n{ACTION_QUERY_TOKEN}")
    assert ids == expected
    # the processor's own layout (image tokens, <bos>, text, "\n"), then the query after its "\n"
    reference = backbone.processor(text=["<image>pick up cube"], images=[Image.fromarray(IMAGE)])["input_ids"][0]
    assert ids == [*list(reference), query_id]
    assert backbone.tokenizer.convert_ids_to_tokens(ids[-2]) == "<0x0A>"
    image_id = backbone.tokenizer.convert_tokens_to_ids("<image>")
    types = batch["token_type_ids"][0]
    assert types[:256].eq(0).all()
    assert types[256:].eq(1).all()
    assert (batch["input_ids"][0][:256] == image_id).all()


def test_kosmos2_prompt_without_grounding_tokens() -> None:
    backbone, query_id = load_backbone(KOSMOS_ID)
    batch = backbone.encode([IMAGE], ["pick up cube"])
    tokens = backbone.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens[:2] == ["<s>", "<image>"]
    assert tokens[66] == "</image>"
    assert batch["image_embeds_position_mask"][0].nonzero().flatten().tolist() == list(range(2, 66))
    tail = tokens[67:]
    assert tail[0] == "<phrase>"
    assert tail[-2:] == ["</phrase>", ACTION_QUERY_TOKEN]
    assert "".join(tail[1:-2]).replace("▁", " ").strip() == "pick up cube"
    assert not {"<grounding>", "<object>"} & set(tokens)
    assert batch["input_ids"][0, -1].item() == query_id


@pytest.mark.parametrize("repo_id", sorted(PAPER_BACKBONES))
def test_action_query_is_found_by_id_in_padded_batches(repo_id: str) -> None:
    from vla.configuration_vla import VLAConfig
    from vla.modeling_vla import VLAPolicyModel

    model = VLAPolicyModel.build(VLAConfig(backbone=repo_id, chunk_size=3))
    batch = model.backbone.encode([IMAGE, IMAGE[::-1].copy()], ["pick up cube", "put the red block in the drawer"])
    positions = model.query.positions(batch["input_ids"])
    for row, pos in enumerate(positions.tolist()):
        assert batch["input_ids"][row, pos].item() == model.query.token_id
    assert positions[0] != positions[1]
    out = model.predict(batch)
    assert out.shape == (2, 3, 7)
    assert torch.isfinite(out).all()
    assert model.backbone.hidden_size == 128


def test_registry_covers_every_family_and_rejects_others(tmp_path: Path) -> None:
    assert set(BACKBONES) == {PAPER_BACKBONES[i] for i in PAPER_BACKBONES}
    LlamaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(ConfigError, match="not one of the paper's VLM families"):
        load_backbone(str(tmp_path))
    with pytest.raises(ConfigError, match="cannot load backbone"):
        load_backbone("no-such-org/no-such-model")


def test_instruction_and_image_errors() -> None:
    backbone, _ = load_backbone(QWEN_IDS[0])
    with pytest.raises(DataError, match="empty instruction"):
        backbone.encode([IMAGE], ["  "])
    with pytest.raises(DataError, match="uint8"):
        backbone.encode([IMAGE.astype(np.float32)], ["pick up cube"])


def test_image_size_option_changes_the_first_resize() -> None:
    small, _ = load_backbone(QWEN_IDS[0])
    large, _ = load_backbone(QWEN_IDS[0], BackboneOptions(image_size=448))
    assert small.prepare_image(IMAGE).size == (224, 224)
    n_small = (
        small.encode([IMAGE], ["go"])["input_ids"] == small.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ).sum()
    n_large = (
        large.encode([IMAGE], ["go"])["input_ids"] == large.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ).sum()
    assert n_small == 64
    assert n_large == 256


# --- head (Table 9) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("repo_id", sorted(PAPER_BACKBONES))
def test_head_widths_and_sizes_for_the_nine_real_configs(repo_id: str) -> None:
    info = model_info(repo_id, chunk_size=10)
    row = TABLE9[repo_id]
    assert info["hidden"] == row.hidden
    width = info["head_widths"][0]
    assert width == max(1024, row.hidden // 2)
    if repo_id == "google/paligemma2-3b-pt-224":
        assert (width, row.printed_width) == (1152, 1502)  # the misprint paper-notes.md explains
    else:
        assert width == row.printed_width
    assert info["head_widths"][1:] == [1024, 70]
    # every row's printed head size exceeds its two printed layers by the same ~3.43M (paper-notes.md)
    assert abs(row.head_size_m * 1e6 - info["head_table9_layers_params"] - 3.43e6) < 0.1e6
    assert abs(info["backbone_params"] / 1e6 - PAPER_PARAMS_M[repo_id]) < 1.0  # Table 9 rounds or truncates


def test_head_layers() -> None:
    head = ActionHead(2304, chunk_size=4)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert (head[0].out_features, head[2].out_features, head[4].out_features) == (1152, 1024, 28)
    assert head_width(2048) == 1024
    assert head_width(4096) == 2048


def test_info_cli_prints_the_table9_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "google/paligemma2-3b-pt-224"]) == 0
    out = capsys.readouterr().out
    assert "Linear(2304,1152)" in out
    assert "1502" in out
    assert "3032M" in out
    assert main(["info", "Qwen/Qwen2.5-VL-7B-Instruct", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["head_widths"][0] == 1792


def test_info_memory_per_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--memory", "--json"]) == 0
    rows = {row["model"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(PAPER_BACKBONES)
    for name, row in rows.items():
        assert row["per_gpu_batch"] == 16  # CALVIN's 128 over 8 GPUs
        assert row["zero3_fsdp_gib"] < row["zero2_gib"] < row["ddp_gib"], name
        # DDP: 16 bytes of fp32 master + gradient + AdamW state per trained parameter, + 2 of autocast copies
        assert row["ddp_gib"] >= 16 * row["params"] * 0.9 / 1024**3
    assert 60 < rows["Qwen/Qwen2.5-VL-3B-Instruct"]["ddp_gib"] < 80  # just fits the paper's 80 GB A100s
    assert main(["info", "Qwen/Qwen3-VL-30B-A3B-Instruct", "--memory", "--gpus", "32", "--gradient-checkpointing"]) == 0
    table = capsys.readouterr().out
    assert "32 GPUs x batch 4, gradient checkpointing" in table
    assert "| Qwen/Qwen3-VL-30B-A3B-Instruct | 31.07B |" in table
    assert main(["info"]) == 2  # neither a model nor --memory
    assert "--memory" in capsys.readouterr().err


# --- loss and normalisation -----------------------------------------------------------------------------------


def test_loss_terms_and_mask() -> None:
    target = torch.zeros(2, 3, 7)
    target[..., 6] = 1.0
    pred = torch.zeros(2, 3, 7)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = action_loss(pred, target, mask)
    assert out["huber"].item() == 0.0
    assert out["bce"].item() == pytest.approx(np.log(2), rel=1e-6)
    assert out["gripper_accuracy"].item() == 0.0
    pred2 = pred.clone()
    pred2[0, 2] = 5.0  # masked step: no effect
    pred2[1, 1:] = -5.0
    assert action_loss(pred2, target, mask)["loss"].item() == pytest.approx(out["loss"].item())
    pred3 = pred.clone()
    pred3[..., 6] = 10.0
    pred3[0, 0, 0] = 0.5  # huber in the quadratic zone: 0.5 * 0.25 / 6 dims / 3 valid steps
    out3 = action_loss(pred3, target, mask)
    assert out3["gripper_accuracy"].item() == 1.0
    assert out3["huber"].item() == pytest.approx(0.125 / 6 / 3)


def test_normalisation_q01_q99_and_mean_std(tmp_path: Path) -> None:
    stats = {
        "action": {
            "q01": [-1.0, -2.0, 0.0, -0.1, -0.1, -0.1, 0.0],
            "q99": [1.0, 2.0, 4.0, 0.1, 0.1, 0.3, 1.0],
            "mean": [0.0] * 6 + [0.5],
            "std": [2.0] * 6 + [0.5],
        }
    }
    norm = ActionNormalizer.from_stats(stats, "q01_q99")
    actions = np.array([[1.0, -2.0, 2.0, 0.0, 0.1, 0.1, 1.0], [9.0, 0.0, 0.0, 0.0, 0.0, -0.1, 0.0]], np.float32)
    n = norm.normalize(actions)
    np.testing.assert_allclose(n[0, :6], [1, -1, 0, 0, 1, 0], atol=1e-6)
    assert n[1, 0] == 1.0  # clipped
    np.testing.assert_array_equal(n[:, 6], actions[:, 6])  # gripper untouched
    np.testing.assert_allclose(norm.denormalize(n)[0], actions[0], atol=1e-6)
    ms = ActionNormalizer.from_stats(stats, "mean_std")
    np.testing.assert_allclose(ms.normalize(actions)[1, 0], 4.5)
    ms.save(tmp_path)
    loaded = ActionNormalizer.load(tmp_path)
    assert loaded.mode == "mean_std"
    np.testing.assert_array_equal(loaded.scale, ms.scale)
    np.testing.assert_array_equal(loaded.offset, ms.offset)
    (tmp_path / "stats.json").write_text(json.dumps({"state": {}}))
    with pytest.raises(DataError, match="no 'action' statistics"):
        ActionNormalizer.from_file(tmp_path / "stats.json")
    with pytest.raises(DataError, match="no normalisation statistics"):
        ActionNormalizer.load(tmp_path / "missing")
