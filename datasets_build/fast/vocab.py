"""Where FAST tokens live in a VLM's vocabulary, and their text form in corpus answers.

Corpora store answers in one canonical text form, `<fast_12><fast_5>...`, whatever the VLM; the SFT stage
and the evaluation map them to the VLM's ids in one of two modes:

- `new_tokens`: every FAST id t is the added token `<fast_t>` (the SFT stage resizes the embeddings);
- `vocab_tail`: pi0-FAST style, no new tokens: t -> `vocab_size - 1 - 128 - t`, the tail of the VLM's
  vocabulary before its last 128 ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datasets_build.errors import ConfigError

MODES = ("new_tokens", "vocab_tail")
TAIL_RESERVED = 128  # last ids of the VLM vocabulary left alone in vocab_tail mode
_TOKEN = re.compile(r"<fast_(\d+)>")


def fast_token(t: int) -> str:
    """The added-token string of FAST id `t`."""
    return f"<fast_{t}>"


def answer_text(ids: Sequence[int]) -> str:
    """The canonical text form of a FAST id sequence, as written in corpus answers."""
    return "".join(fast_token(int(t)) for t in ids)


def parse_answer(text: str) -> list[int]:
    """FAST ids of every `<fast_t>` in `text`, in order (other text ignored)."""
    return [int(m.group(1)) for m in _TOKEN.finditer(text)]


@dataclass(frozen=True)
class FastVocabMapping:
    """Maps FAST ids to a VLM's token ids and back (`mode` in MODES)."""

    mode: str
    fast_vocab_size: int
    vlm_vocab_size: int  # len(tokenizer) after adding tokens (new_tokens) or the model's vocab (vocab_tail)
    first_id: int = 0  # new_tokens: id of <fast_0> (the added tokens are contiguous)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"fast mapping: mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.mode == "vocab_tail" and self.vlm_vocab_size - 1 - TAIL_RESERVED - (self.fast_vocab_size - 1) < 0:
            raise ConfigError("fast mapping: the VLM vocabulary is too small for vocab_tail")

    def to_vlm(self, ids: Sequence[int]) -> list[int]:
        """FAST ids -> VLM token ids."""
        if self.mode == "new_tokens":
            return [self.first_id + int(t) for t in ids]
        return [self.vlm_vocab_size - 1 - TAIL_RESERVED - int(t) for t in ids]

    def from_vlm(self, ids: Sequence[int]) -> list[int]:
        """VLM token ids -> FAST ids; ids outside the FAST range are dropped."""
        out = []
        for i in ids:
            if self.mode == "new_tokens":
                t = int(i) - self.first_id
            else:
                t = self.vlm_vocab_size - 1 - TAIL_RESERVED - int(i)
            if 0 <= t < self.fast_vocab_size:
                out.append(t)
        return out

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, fast_vocab_size: int, mode: str, vlm_vocab_size: int | None = None) -> Any:
        """Build the mapping for a transformers tokenizer; `new_tokens` adds `<fast_t>` tokens to it if missing.

        For `vocab_tail`, `vlm_vocab_size` should be the model's embedding rows (it may exceed len(tokenizer)).
        """
        if mode == "new_tokens":
            tokens = [fast_token(t) for t in range(fast_vocab_size)]
            tokenizer.add_tokens(tokens, special_tokens=False)
            ids = tokenizer.convert_tokens_to_ids(tokens)
            first = int(ids[0])
            if list(ids) != list(range(first, first + fast_vocab_size)):
                raise ConfigError("fast mapping: the tokenizer already holds some <fast_t> tokens out of order")
            return cls(mode, fast_vocab_size, len(tokenizer), first)
        return cls(mode, fast_vocab_size, int(vlm_vocab_size or len(tokenizer)))
