"""VLAPolicyModel: a backbone VLM + one learnable `<ActionQuery>` + the MLP head (paper Sec. 3.2).

`action = MLP(VLM([img ... img, text ... text, <ActionQuery>]))`: the query token's last hidden state, found by
token id, decoded into `chunk_size` actions of 6 normalised end-effector dims + a gripper logit.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from datasets_build.actions import ACTION_DIM
from datasets_build.errors import DataError
from datasets_build.precision import MASTER_DTYPE, cast_parameters
from vla.action_query import ActionQuery
from vla.backbones import Backbone, load_backbone
from vla.configuration_vla import VLAConfig
from vla.head import ActionHead
from vla.loss import action_loss
from vla.normalization import ActionNormalizer

HEAD_FILE = "action_head.safetensors"


class VLAPolicyModel(nn.Module):
    """Backbone + query + head; `forward(batch)` gives the training losses, `predict(inputs)` the raw chunk."""

    def __init__(self, backbone: Backbone, query_id: int, config: VLAConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.vlm = backbone.model
        embeddings = backbone.word_embeddings
        # a new query starts at the mean word embedding; `from_checkpoint` then loads the learned one from its row
        self.query = ActionQuery(query_id, embeddings.weight.detach().float().mean(dim=0))
        self.query.attach(embeddings)
        self.head = ActionHead(backbone.hidden_size, config.chunk_size, config.head_width or None)

    @classmethod
    def build(cls, config: VLAConfig, frozen_dtype: torch.dtype | None = MASTER_DTYPE) -> VLAPolicyModel:
        """A new policy from `config.backbone` (pretrained, or random with `from_scratch`), frozen per the flags,
        ready to train: the checkpoint is loaded as stored, then every trainable parameter becomes an fp32 master
        weight and every frozen one `frozen_dtype` (None: as stored; see `datasets_build.precision`)."""
        backbone, query_id = load_backbone(
            config.backbone, config.backbone_options(), config.from_scratch, config.revision
        )
        model = cls(backbone, query_id, config)
        model.apply_freezing()
        cast_parameters(model, frozen_dtype)
        return model

    @classmethod
    def from_checkpoint(cls, folder: str | Path, dtype: torch.dtype | None = None) -> VLAPolicyModel:
        """Load a folder written by `save_pretrained` (backbone, processor, query row, head, config)."""
        folder = Path(folder)
        config = VLAConfig.load(folder)
        head_path = folder / HEAD_FILE
        if not head_path.is_file():
            raise DataError("checkpoint has no action head weights", folder, HEAD_FILE)
        backbone, query_id = load_backbone(str(folder), config.backbone_options(), dtype=dtype)
        model = cls(backbone, query_id, config)
        with torch.no_grad():
            model.query.embedding.copy_(backbone.word_embeddings.weight[query_id].float())
        model.head.load_state_dict(load_file(str(head_path)))
        model.apply_freezing()
        return model

    # --- parameters ------------------------------------------------------------------------------------------
    def apply_freezing(self) -> None:
        """Freeze the parts named by the flags; an untied lm_head is always frozen (it is never used)."""
        parts = {
            "vision_tower": self.config.freeze_vision_tower,
            "word_embeddings": self.config.freeze_word_embeddings,
            "language_model": self.config.freeze_llm,
        }
        for part, frozen in parts.items():
            if frozen:
                self.backbone.module(part).requires_grad_(False)
        embed_weight = self.backbone.word_embeddings.weight
        for param in self.backbone.module("lm_head").parameters():
            if param is not embed_weight:
                param.requires_grad_(False)

    def parameter_groups(self) -> list[tuple[str, int, bool]]:
        """(group, parameter count, trainable) rows for the table printed at the start of every run."""
        seen: set[int] = set()
        rows: list[tuple[str, int, bool]] = []
        named = {
            "vision_tower": self.backbone.module("vision_tower"),
            "word_embeddings": self.backbone.module("word_embeddings"),
            "language_model": self.backbone.module("language_model"),
            "lm_head": self.backbone.module("lm_head"),
            "backbone (other)": self.vlm,
            "action_query": self.query,
            "action_head": self.head,
        }
        for name, module in named.items():
            params = [p for p in module.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            trainable = [p for p in params if p.requires_grad]
            if params:
                rows.append((name, sum(p.numel() for p in params), len(trainable) == len(params)))
        return rows

    # --- forward ---------------------------------------------------------------------------------------------
    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoded inputs -> (B, chunk, 7): normalised arm dims and a gripper logit per step."""
        hidden = self.backbone.hidden_states(inputs)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        query_state = hidden[rows, self.query.positions(inputs["input_ids"])]
        out = self.head(query_state.to(self.head.dtype))
        return out.view(-1, self.config.chunk_size, ACTION_DIM)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: model inputs + `actions` (B, chunk, 7) normalised and `action_mask` (B, chunk) -> loss dict."""
        inputs = {k: v for k, v in batch.items() if k not in ("actions", "action_mask")}
        prediction = self.predict(inputs).float()
        return action_loss(
            prediction,
            batch["actions"].float(),
            batch["action_mask"],
            huber_delta=self.config.huber_delta,
            arm_weight=self.config.arm_loss_weight,
            gripper_weight=self.config.gripper_loss_weight,
        )

    # --- saving ----------------------------------------------------------------------------------------------
    def save_pretrained(
        self, folder: str | Path, normalizer: ActionNormalizer, recipe: str = "", atomic: bool = True
    ) -> Path:
        """Write a complete checkpoint: backbone + processor with the query token (its learned embedding in its
        vocabulary row), head safetensors, normalisation, config, recipe. `atomic`: into a temporary folder renamed
        when complete (otherwise straight into `folder`, for callers that stage the folder themselves)."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        else:
            staging = folder
            staging.mkdir(parents=True, exist_ok=True)
        try:
            embeddings = self.backbone.word_embeddings
            saved_row = embeddings.weight[self.query.token_id].detach().clone()
            self.query.write_back(embeddings)
            try:
                self.vlm.save_pretrained(staging, safe_serialization=True)
            finally:
                with torch.no_grad():
                    embeddings.weight[self.query.token_id] = saved_row
            self.backbone.processor.save_pretrained(staging)
            head = {k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()}
            save_file(head, str(staging / HEAD_FILE))
            normalizer.save(staging)
            self.config.save(staging)
            if recipe:
                (staging / "recipe.yaml").write_text(recipe)
            if atomic:
                if folder.exists():
                    shutil.rmtree(folder)
                staging.rename(folder)
        except BaseException:
            if atomic:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder
