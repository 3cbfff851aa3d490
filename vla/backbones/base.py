"""What every backbone adapter provides: prompt, image preparation, encoding, hidden states, module paths.

A `Backbone` wraps a loaded transformers VLM and its processor. Subclasses (one file per family) hold all that
differs between VLMs; the policy model, training and inference never branch on the family.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel, ProcessorMixin

from datasets_build.errors import ConfigError, DataError
from datasets_build.vlm_families import LAYER_CLASSES, MODULE_PATHS, ModulePaths
from vla.action_query import ACTION_QUERY_TOKEN
from vla.configuration_vla import BASE_IMAGE_SIZE, PROMPT_SCHEMES


@dataclass(frozen=True)
class BackboneOptions:
    """Per-run choices that change what the backbone sees: prompt scheme (Qwen) and first resize size."""

    prompt_scheme: str = "full"
    image_size: int = BASE_IMAGE_SIZE

    def __post_init__(self) -> None:
        if self.prompt_scheme not in PROMPT_SCHEMES:
            raise ConfigError(f"prompt_scheme must be one of {PROMPT_SCHEMES}, got {self.prompt_scheme!r}")
        if self.image_size < 28:
            raise ConfigError(f"image_size must be >= 28, got {self.image_size}")


ImageLike = np.ndarray | Image.Image


class Backbone:
    """A VLM adapted to VLM4VLA: builds the family's prompt ending in `<ActionQuery>` and returns hidden states."""

    family: ClassVar[str] = ""

    def __init__(self, model: PreTrainedModel, processor: ProcessorMixin, options: BackboneOptions) -> None:
        self.model = model
        self.processor = processor
        self.options = options
        self.tokenizer: Any = processor.tokenizer
        # Right padding for every family: with causal attention over the query, a row's query state then does not
        # depend on the other rows of its batch (act_batch == act), and positions match the unpadded prompt.
        self.tokenizer.padding_side = "right"

    def without_model(self) -> Backbone:
        """A copy that only encodes (prompt, images, processor): what DataLoader workers need, without weights."""
        clone = copy.copy(self)
        clone.model = None  # type: ignore[assignment]
        return clone

    # --- facts -------------------------------------------------------------------------------------------
    @property
    def layer_classes(self) -> tuple[str, ...]:
        """The decoder layer and vision block classes (FSDP units; datasets_build.vlm_families.LAYER_CLASSES)."""
        return LAYER_CLASSES[self.family]

    @property
    def paths(self) -> ModulePaths:
        """Where the vision tower, projector, word embeddings, LLM and lm_head live (datasets_build.vlm_families)."""
        return MODULE_PATHS[self.family]

    @property
    def hidden_size(self) -> int:
        """Width of the LLM's last hidden state (the head's input)."""
        return int(self.model.config.get_text_config().hidden_size)

    def module(self, part: str) -> nn.Module:
        """One of the parts named in `paths` (vision_tower, projector, word_embeddings, language_model, lm_head)."""
        return self.model.get_submodule(getattr(self.paths, part))

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The LLM's input embedding table."""
        module = self.module("word_embeddings")
        assert isinstance(module, nn.Embedding)
        return module

    # --- inputs ------------------------------------------------------------------------------------------
    def prepare_image(self, image: ImageLike) -> Image.Image:
        """uint8 (H, W, 3) or PIL -> RGB PIL of `image_size` squared (224 by default); the processor then resizes
        it to the model's own input size."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
                raise DataError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}", field="images")
            image = Image.fromarray(image)
        size = self.options.image_size
        return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)

    def prompt(self, instruction: str) -> str:
        """The text handed to the processor for one instruction (family format, see the subclass)."""
        raise NotImplementedError

    def encode(self, images: Sequence[ImageLike], instructions: Sequence[str]) -> dict[str, torch.Tensor]:
        """One image + one instruction per row -> padded model inputs (tensors), each row holding one query."""
        if len(images) != len(instructions):
            raise DataError(f"{len(images)} images for {len(instructions)} instructions", field="images")
        texts = [self.prompt(check_instruction(text)) for text in instructions]
        pil = [self.prepare_image(image) for image in images]
        batch = self.processor(text=texts, images=pil, padding=True, return_tensors="pt")
        return dict(batch)

    # --- forward -----------------------------------------------------------------------------------------
    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Last hidden states (B, L, hidden) of the LLM, without computing vocabulary logits."""
        outputs = self.model.model(**inputs, use_cache=False)
        return outputs.last_hidden_state


def check_instruction(instruction: str) -> str:
    """The instruction stripped; one-line DataError when it is empty or holds the query token itself."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError("empty instruction", field="instruction")
    if ACTION_QUERY_TOKEN in instruction:
        raise DataError(f"instruction must not contain {ACTION_QUERY_TOKEN}", field="instruction")
    return instruction.strip()
