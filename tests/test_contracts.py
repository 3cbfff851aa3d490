"""The checkpoint-folder contract (sft -> vla) and the Policy protocol (vla -> evaluation)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from datasets_build.checkpoint import CheckpointFolder
from datasets_build.errors import DataError
from vla.api import PolicyLike


def _checkpoint(root, recipe=True):
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    save_file({"w": torch.zeros(2)}, str(root / "model.safetensors"))
    (root / "tokenizer_config.json").write_text("{}")
    if recipe:
        (root / "recipe.yaml").write_text("stages: {}\n")
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n")
    return root


def test_checkpoint_folder_parts(tmp_path):
    ckpt = CheckpointFolder.inspect(_checkpoint(tmp_path / "ckpt"))
    assert [p.name for p in ckpt.weights] == ["model.safetensors"]
    assert ckpt.has_processor
    assert ckpt.recipe is not None
    assert ckpt.card is not None


@pytest.mark.parametrize(
    ("remove", "match"),
    [("config.json", r"config\.json"), ("model.safetensors", "weights"), ("tokenizer_config.json", "processor")],
)
def test_checkpoint_folder_names_the_missing_part(tmp_path, remove, match):
    root = _checkpoint(tmp_path / "ckpt")
    (root / remove).unlink()
    with pytest.raises(DataError, match=match):
        CheckpointFolder.inspect(root)


def test_recipe_required_unless_told(tmp_path):
    root = _checkpoint(tmp_path / "ckpt", recipe=False)
    with pytest.raises(DataError, match=r"recipe\.yaml"):
        CheckpointFolder.inspect(root)
    assert CheckpointFolder.inspect(root, require_recipe=False).recipe is None


class _HoldStill:
    """A policy in the convention that never moves and keeps the gripper open."""

    chunk_size = 4

    def reset(self) -> None:
        pass

    def act(self, images, instruction):
        out = np.zeros((self.chunk_size, 7), np.float32)
        out[:, 6] = 1.0
        return out

    def act_batch(self, images, instructions):
        return np.stack([self.act(i, t) for i, t in zip(images, instructions, strict=True)])


def test_policy_protocol_is_structural():
    assert isinstance(_HoldStill(), PolicyLike)
    assert not isinstance(object(), PolicyLike)
    batch = _HoldStill().act_batch([[np.zeros((8, 8, 3), np.uint8)]] * 3, ["a", "b", "c"])
    assert batch.shape == (3, 4, 7)
