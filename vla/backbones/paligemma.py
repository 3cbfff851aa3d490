"""PaliGemma 1: image tokens as the bidirectional prefix, `<bos>{instruction}\\n<ActionQuery>` as causal suffix.

Paper A.2.3: `<img>...<img><bos>pick up cube\\n<ActionQuery>`. The layout is the processor's own (image tokens,
`<bos>`, text, "\\n") with the query appended after its "\\n"; `token_type_ids` 0 marks the image prefix, which
PaliGemma attends bidirectionally, and 1 the text and query, attended causally.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from datasets_build.errors import DataError
from vla.action_query import ACTION_QUERY_TOKEN
from vla.backbones.base import Backbone, ImageLike, check_instruction


class PaliGemmaBackbone(Backbone):
    """PaliGemma-3B-pt-224 (Gemma-2B LLM, SigLIP-So400m, 256 image tokens)."""

    family = "paligemma"

    @property
    def image_token(self) -> str:
        """The processor's image placeholder token."""
        return str(getattr(self.processor, "image_token", "<image>"))

    def prompt(self, instruction: str) -> str:
        """The full token string: image placeholders, `<bos>`, instruction, "\\n", `<ActionQuery>`."""
        count = int(getattr(self.processor, "image_seq_length", 256))
        return f"{self.image_token * count}{self.tokenizer.bos_token}{instruction}\n{ACTION_QUERY_TOKEN}"

    def encode(self, images: Sequence[ImageLike], instructions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise the prompts directly (the processor would add its "\\n" after the query) and mark the prefix."""
        if len(images) != len(instructions):
            raise DataError(f"{len(images)} images for {len(instructions)} instructions", field="images")
        texts = [self.prompt(check_instruction(text)) for text in instructions]
        text = self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")
        pixels = self.processor.image_processor([self.prepare_image(image) for image in images], return_tensors="pt")
        image_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        input_ids = text["input_ids"]
        return {
            "input_ids": input_ids,
            "attention_mask": text["attention_mask"],
            "token_type_ids": (input_ids != image_id).long(),
            "pixel_values": pixels["pixel_values"],
        }
