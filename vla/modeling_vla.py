"""VLAPolicyModel: a backbone VLM + one learnable `<ActionQuery>` + the MLP head (paper Sec. 3.2).

`action = MLP(VLM([img ... img, text ... text, <ActionQuery>]))`: the query token's last hidden state, found by
token id, decoded into `chunk_size` actions of 6 normalised end-effector dims + a gripper logit.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from datasets_build.actions import ACTION_DIM
from datasets_build.checkpoint import CARD_FILE, RECIPE_FILE
from datasets_build.errors import DataError, OutputExistsError, one_line
from datasets_build.outputs import refuse_protected
from datasets_build.parameter_groups import GroupRow, backbone_prefixes, parameter_groups
from datasets_build.precision import MASTER_DTYPE, cast_parameters, save_pretrained_as
from vla.action_query import ActionQuery
from vla.backbones import Backbone, load_backbone
from vla.configuration_vla import VLA_CONFIG_FILE, VLAConfig
from vla.head import bound_arm, build_head
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
        with _gathered(embeddings.weight):
            init = embeddings.weight.detach().float().mean(dim=0)
        self.query = ActionQuery(query_id, init)
        self.query.attach(embeddings)
        self._tied = getattr(backbone.module("lm_head"), "weight", None) is embeddings.weight
        self.head = build_head(
            config.head_type,
            backbone.hidden_size,
            config.chunk_size,
            config.head_width or None,
            config.head_input_norm,
        )
        # FSDP units when accelerate wraps this module by its own policy (vla.engines shards by the same classes)
        self._no_split_modules = list(backbone.layer_classes)

    @classmethod
    def build(
        cls,
        config: VLAConfig,
        frozen_dtype: torch.dtype | None = MASTER_DTYPE,
        masters: bool = True,
    ) -> VLAPolicyModel:
        """A new policy from `config.backbone` (pretrained, or random with `from_scratch`), frozen per the flags,
        ready to train: the checkpoint is loaded as stored, then every trainable parameter becomes an fp32 master
        weight and every frozen one `frozen_dtype` (None: as stored; see `datasets_build.precision`). `masters`
        False leaves every dtype as loaded (DeepSpeed keeps its own fp32 masters)."""
        backbone, query_id = load_backbone(
            config.backbone,
            config.backbone_options(),
            config.from_scratch,
            config.revision,
            attn_implementation=config.attn_implementation,
        )
        model = cls(backbone, query_id, config)
        model.apply_freezing()
        if masters:
            cast_parameters(model, frozen_dtype)
        if config.gradient_checkpointing:
            model.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    @classmethod
    def from_checkpoint(
        cls, folder: str | Path, dtype: torch.dtype | None = MASTER_DTYPE, attn_implementation: str = "auto"
    ) -> VLAPolicyModel:
        """Load a folder written by `save_pretrained` (backbone, processor, query row, head, config) for inference:
        the backbone in `dtype` (None: as saved), the query and the head in fp32."""
        folder = Path(folder)
        config = VLAConfig.load(folder)
        head_path = folder / HEAD_FILE
        if not head_path.is_file():
            raise DataError("checkpoint has no action head weights", folder, HEAD_FILE)
        backbone, query_id = load_backbone(
            str(folder), config.backbone_options(), dtype=dtype, attn_implementation=attn_implementation
        )
        model = cls(backbone, query_id, config)
        with torch.no_grad():
            model.query.embedding.copy_(backbone.word_embeddings.weight[query_id].float())
        try:
            model.head.load_state_dict(load_file(str(head_path)))
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # truncated, or another head size
            raise DataError(f"unreadable action head weights ({one_line(exc)})", head_path) from exc
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

    def parameter_groups(self, compute: torch.dtype | None = None) -> list[GroupRow]:
        """The table printed at the start of every run: per group (the backbone's parts as `sft` groups them, then
        the query and the head) parameters, trainable count, stored dtype and compute dtype (`compute`: autocast)."""
        prefixes = [
            *backbone_prefixes(self.backbone.paths, root="vlm."),
            ("action_query", "query"),
            ("action_head", "head"),
        ]
        return parameter_groups(self, prefixes, compute)

    # --- forward ---------------------------------------------------------------------------------------------
    def query_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoded inputs -> (B, hidden): the `<ActionQuery>` token's last hidden state, in the head's dtype."""
        hidden = self.backbone.hidden_states(inputs)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, self.query.positions(inputs["input_ids"])].to(next(self.head.parameters()).dtype)

    def predict(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Encoded inputs -> (B, chunk, 7): normalised arm dims and a gripper logit per step."""
        out = self.head(self.query_states(inputs))
        chunk = out.view(-1, self.config.chunk_size, ACTION_DIM)
        return bound_arm(chunk, self.config.arm_activation, self.config.arm_scale)

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
        self,
        folder: str | Path,
        normalizer: ActionNormalizer,
        recipe: str = "",
        atomic: bool = True,
        training: dict[str, Any] | None = None,
        card: str = "",
        state_dict: dict[str, torch.Tensor] | None = None,
        save_dtype: torch.dtype | None = None,
    ) -> Path:
        """Write a complete checkpoint: backbone + processor with the query token (its learned embedding in its
        vocabulary row), head safetensors (fp32), normalisation, config (with the `training` record), recipe and
        model card (README.md). `state_dict`: this module's full weights when they live elsewhere (gathered from
        FSDP / ZeRO-3 shards; default: `self.state_dict()`). `save_dtype`: the backbone's weights dtype on disk
        (None: as held; config.json records it). `atomic`: into a temporary folder renamed when complete
        (otherwise straight into `folder`, for callers that stage it)."""
        folder = Path(folder)
        if atomic and folder.exists():  # replaced below: only a checkpoint, never a protected folder
            refuse_protected(folder, "replace")
            if folder.is_dir() and any(folder.iterdir()) and not (folder / VLA_CONFIG_FILE).is_file():
                raise OutputExistsError(f"{folder}: not a VLA checkpoint folder ({VLA_CONFIG_FILE}); not replaced")
        folder.parent.mkdir(parents=True, exist_ok=True)
        if atomic:
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
        else:
            staging = folder
            staging.mkdir(parents=True, exist_ok=True)
        try:
            vlm_state, head_state = self._split_state(state_dict if state_dict is not None else self.state_dict())
            save_pretrained_as(self.vlm, staging, save_dtype, state_dict=vlm_state)
            self.backbone.processor.save_pretrained(staging)
            head = {k: v.detach().float().cpu().contiguous() for k, v in head_state.items()}
            save_file(head, str(staging / HEAD_FILE))
            normalizer.save(staging)
            self.config.save(staging, training)
            if recipe:
                (staging / RECIPE_FILE).write_text(recipe)
            if card:
                (staging / CARD_FILE).write_text(card, encoding="utf-8")
            if atomic:
                if folder.exists():
                    shutil.rmtree(folder)
                staging.rename(folder)
        except BaseException:
            if atomic:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    def _split_state(self, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """This module's state dict -> (backbone weights with the query written into its vocabulary row, head)."""
        vlm = {k.removeprefix("vlm."): v.detach() for k, v in state.items() if k.startswith("vlm.")}
        head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        key = f"{self.backbone.paths.word_embeddings}.weight"
        updated = vlm[key].clone()
        updated[self.query.token_id] = state["query.embedding"].to(updated.device, updated.dtype)
        vlm[key] = updated
        if self._tied:  # one tensor under both names, as transformers expects of tied weights when saving
            vlm[f"{self.backbone.paths.lm_head}.weight"] = updated
        return vlm, head


def _gathered(*params: torch.Tensor) -> AbstractContextManager[object]:
    """DeepSpeed ZeRO-3 partitions parameters at load: gather them to read their values, else nothing to do."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        gathered: AbstractContextManager[object] = deepspeed.zero.GatheredParameters(list(params))
        return gathered
    return contextlib.nullcontext()
