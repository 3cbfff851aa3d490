"""`vla.Policy`: a trained VLM4VLA checkpoint as a deterministic closed-loop policy (implements `PolicyLike`).

`Policy.from_pretrained(folder_or_hub_id)` -> `act(images, instruction)` -> float32 (chunk, 7) in the project's
action convention (arm dims de-normalised with the checkpoint's statistics, gripper 1 = open from the sign of its
logit). `act_batch` serves many environments in one forward pass. No sampling anywhere: same input, same output.
`policy.metadata` (JSON-serialisable) tells an evaluation or a policy server how the checkpoint expects to be run:
chunk and image size, action convention, backbone, the training preset and its `eval_sim_options` (simulator
adapter options the evaluation side takes as defaults; options given explicitly win).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import snapshot_download

from datasets_build.actions import ACTION_CONVENTION, GRIPPER, GRIPPER_CLOSED, GRIPPER_OPEN
from datasets_build.errors import DataError
from datasets_build.precision import inference_dtype
from vla.configuration_vla import VLAConfig
from vla.modeling_vla import VLAPolicyModel
from vla.normalization import ActionNormalizer


def resolve_checkpoint(path_or_id: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a Hub id fetched into (or found in) the Hugging Face cache."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if path_or_id.count("/") != 1 or path.exists():
        raise DataError("no such checkpoint folder (nor a Hub id ORG/NAME)", path_or_id)
    try:
        return Path(snapshot_download(path_or_id, revision=revision))
    except Exception as exc:  # huggingface_hub raises several unrelated types for "not available"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot fetch checkpoint ({first})", path_or_id) from exc


def policy_metadata(config: VLAConfig, training: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint says about running it (plain JSON types only: a policy server sends it on connect)."""
    preset = training.get("preset") or {}
    metadata = {
        "backbone": config.backbone,
        "chunk_size": config.chunk_size,
        "image_size": config.image_size,
        "action_convention": ACTION_CONVENTION,
        "prompt_scheme": config.prompt_scheme,
        "preset": preset.get("name", ""),
        "preset_follow": preset.get("follow", ""),
        "benchmark": preset.get("benchmark", ""),
        "eval_sim_options": config.eval_sim_options,
    }
    return json.loads(json.dumps(metadata))


class Policy:
    """A VLM4VLA policy for rollouts: one static camera image + an instruction -> an action chunk."""

    def __init__(
        self,
        model: VLAPolicyModel,
        normalizer: ActionNormalizer,
        device: str | torch.device = "cpu",
        training: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.normalizer = normalizer
        self.device = torch.device(device)
        self.model.to(self.device)
        self.chunk_size: int = model.config.chunk_size
        self.metadata: dict[str, Any] = policy_metadata(model.config, training or {})
        self._forward: Any = self.model.predict

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        compile: bool = False,
        revision: str | None = None,
    ) -> Policy:
        """Load a VLA checkpoint folder or Hub id; `compile` wraps the forward pass in `torch.compile`.

        `dtype` of the backbone weights defaults to `datasets_build.precision.inference_dtype(device)`: bf16 on a
        GPU (as the checkpoint is saved and as training computed), fp32 on CPU (no fast bf16 matmul on most CPUs,
        and bit-stable CPU evaluation); the query and the head always run in fp32.
        """
        folder = resolve_checkpoint(str(path_or_id), revision)
        VLAConfig.load(folder)  # one-line error for a folder that is not a VLA checkpoint
        normalizer = ActionNormalizer.load(folder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = VLAPolicyModel.from_checkpoint(folder, dtype=dtype or inference_dtype(device))
        policy = cls(model, normalizer, device, training=VLAConfig.load_training(folder))
        if compile:
            policy._forward = torch.compile(policy.model.predict)
        return policy

    def reset(self) -> None:
        """VLM4VLA keeps no per-episode state; present for the `PolicyLike` contract."""

    def act(self, images: Sequence[np.ndarray], instruction: str) -> np.ndarray:
        """One observation (one uint8 (H, W, 3) image) -> float32 (chunk, 7)."""
        return self.act_batch([images], [instruction])[0]

    @torch.inference_mode()
    def act_batch(self, images: Sequence[Sequence[np.ndarray]], instructions: Sequence[str]) -> np.ndarray:
        """N observations in one forward pass -> float32 (N, chunk, 7)."""
        if isinstance(instructions, str) or len(images) != len(instructions) or not images:
            raise DataError(f"expected N image lists and N instructions, got {len(images)} and {len(instructions)}")
        frames = [self._one_image(obs, i) for i, obs in enumerate(images)]
        inputs = self.model.backbone.encode(frames, list(instructions))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        raw = self._forward(inputs).float().cpu().numpy()
        actions = self.normalizer.denormalize(raw)
        actions[..., GRIPPER] = np.where(raw[..., GRIPPER] > 0, GRIPPER_OPEN, GRIPPER_CLOSED)
        return actions.astype(np.float32)

    @staticmethod
    def _one_image(observation: Sequence[np.ndarray], index: int) -> np.ndarray:
        """Validate one observation: exactly one uint8 (H, W, 3) image (VLM4VLA uses one static view)."""
        if isinstance(observation, np.ndarray) or len(observation) != 1:
            raise DataError("pass a list holding exactly one image per observation", field=f"images[{index}]")
        image = observation[0]
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise DataError(f"expected a uint8 (H, W, 3) image, got {got}", field=f"images[{index}]")
        return image
