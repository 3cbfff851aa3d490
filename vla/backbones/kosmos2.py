"""Kosmos-2 without grounding tokens: `<s><image><img>...</image><p>{instruction}\\n</p><ActionQuery>`.

The paper writes Kosmos-2's phrase tags as `<p>`/`</p>` (as the Kosmos-2 paper does); in the released tokenizer
they are `<phrase>`/`</phrase>`. No `<grounding>` prefix and no `<object>`/`<patch_index_*>` tokens. The
processor adds `<s>`, `<image>`, the 64 image-position tokens and `</image>`.
"""

from __future__ import annotations

from typing import Any

import torch

from vla.action_query import ACTION_QUERY_TOKEN
from vla.backbones.base import Backbone

PHRASE_OPEN = "<phrase>"
PHRASE_CLOSE = "</phrase>"


class Kosmos2Backbone(Backbone):
    """Kosmos-2-patch14-224 (CLIP ViT-L/14, 24-layer 2048-wide decoder, 64 latent image queries)."""

    family = "kosmos2"

    def prompt(self, instruction: str) -> str:
        """The text after the image block: phrase-tagged instruction, then the query."""
        return f"{PHRASE_OPEN}{instruction}\n{PHRASE_CLOSE}{ACTION_QUERY_TOKEN}"

    def hidden_states(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Image features -> the text decoder (no lm_head), as Kosmos2ForConditionalGeneration.forward does."""
        model: Any = self.model
        image_embeds = model.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output
        outputs = model.text_model.model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            image_embeds=image_embeds,
            image_embeds_position_mask=inputs["image_embeds_position_mask"],
            use_cache=False,
        )
        return outputs.last_hidden_state
