"""FAST action tokens in the VLM vocabulary: `new_tokens` (add `<fast_t>`, resize the embeddings) or
`vocab_tail` (no resize: `<fast_t>` is tokenised as a placeholder id, then remapped to the tail of the tokenizer's
ordinary vocabulary, clear of every added and special id and of the padding rows past the tokenizer).

Corpora store answers as `<fast_12><fast_5>...` (`datasets_build.fast.vocab`); the mapping itself lives there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, ProcessorMixin

from datasets_build.errors import ConfigError
from datasets_build.fast import FastTokenizer
from datasets_build.fast.vocab import MODES, FastVocabMapping
from sft.collator import IdRemap
from sft.config import FastSettings
from sft.freezing import embedding_rows


@dataclass
class FastSetup:
    """What the FAST mapping changed: the mapping, the first new embedding row (new_tokens), the collator's
    processor (vocab_tail: a copy with placeholder tokens) and its id remap."""

    mapping: FastVocabMapping
    first_new_row: int | None
    collate_processor: ProcessorMixin
    remap: IdRemap | None

    def describe(self) -> dict[str, object]:
        """The card entry: mode, FAST vocabulary size and where its ids live."""
        first = self.mapping.to_vlm([0])[0]
        last = self.mapping.to_vlm([self.mapping.fast_vocab_size - 1])[0]
        return {"mapping": self.mapping.mode, "fast_vocab_size": self.mapping.fast_vocab_size, "ids": [first, last]}


def prepare_fast(model: PreTrainedModel, processor: ProcessorMixin, settings: FastSettings) -> FastSetup | None:
    """Apply `settings` to `model` and `processor` (None when no FAST tokenizer is configured)."""
    if not settings.tokenizer:
        return None
    if settings.mapping not in MODES:
        raise ConfigError(f"fast.mapping: {settings.mapping!r} is not one of {', '.join(MODES)}")
    fast_vocab = FastTokenizer.from_pretrained(settings.tokenizer).vocab_size
    rows = embedding_rows(model)
    if settings.mapping == "new_tokens":
        mapping = FastVocabMapping.for_tokenizer(processor.tokenizer, fast_vocab, "new_tokens")
        first = mapping.first_id
        if len(processor.tokenizer) > rows:
            model.resize_token_embeddings(len(processor.tokenizer))
        return FastSetup(mapping, first, processor, None)
    mapping = FastVocabMapping.for_tokenizer(processor.tokenizer, fast_vocab, "vocab_tail", embedding_rows=rows)
    placeholder = copy.deepcopy(processor)
    added = FastVocabMapping.for_tokenizer(placeholder.tokenizer, fast_vocab, "new_tokens")
    table = torch.arange(max(len(placeholder.tokenizer), rows), dtype=torch.long)
    table[added.first_id : added.first_id + fast_vocab] = torch.tensor(mapping.to_vlm(range(fast_vocab)))

    def remap(ids: torch.Tensor) -> torch.Tensor:
        return table.to(ids.device)[ids]

    return FastSetup(mapping, None, placeholder, remap)
