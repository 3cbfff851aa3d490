"""Where FAST tokens live in a VLM's vocabulary, and their text form in corpus answers.

Corpora store answers in one canonical text form, `<fast_12><fast_5>...`, whatever the VLM; the SFT stage
and the evaluation map them to the VLM's ids in one of two modes:

- `new_tokens`: every FAST id t is the added token `<fast_t>` (the SFT stage resizes the embeddings);
- `vocab_tail`: pi0-FAST style, no new tokens: t -> `base - 1 - 128 - t`, where `base` is the size of the
  tokenizer's ordinary vocabulary (`tokenizer.vocab_size`: added and special tokens excluded). It counts from the
  tokenizer, never from the embedding rows: real Qwen2.5-VL has 151936 rows for 151665 ids, with the special
  tokens at 151643..151664, so counting from the rows would put FAST ids 143..164 onto `<|image_pad|>`,
  `<|im_end|>`, `<|endoftext|>`... `for_tokenizer` refuses (one line) a range that would touch an added or
  special id or leave the embedding matrix.
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


def tail_ids(base_vocab: int, fast_vocab_size: int) -> range:
    """The VLM ids `vocab_tail` uses, lowest first (FAST id 0 is the highest)."""
    top = base_vocab - 1 - TAIL_RESERVED
    return range(top - fast_vocab_size + 1, top + 1)


def reserved_ids(tokenizer: Any) -> dict[int, str]:
    """{id: token} of every added or special token of a transformers tokenizer."""
    found = {int(i): str(getattr(t, "content", t)) for i, t in tokenizer.added_tokens_decoder.items()}
    for token, i in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=False):
        found.setdefault(int(i), str(token))
    return found


@dataclass(frozen=True)
class FastVocabMapping:
    """Maps FAST ids to a VLM's token ids and back (`mode` in MODES)."""

    mode: str
    fast_vocab_size: int
    # new_tokens: len(tokenizer) after adding the tokens; vocab_tail: the tokenizer's ordinary vocabulary
    # (`tokenizer.vocab_size`), which the tail counts down from
    vlm_vocab_size: int
    first_id: int = 0  # new_tokens: id of <fast_0> (the added tokens are contiguous)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"fast mapping: mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.fast_vocab_size < 1:
            raise ConfigError(f"fast mapping: FAST vocabulary size must be >= 1, got {self.fast_vocab_size}")
        if self.mode == "vocab_tail" and tail_ids(self.vlm_vocab_size, self.fast_vocab_size).start < 0:
            raise ConfigError(
                f"fast mapping: vocab_tail needs an ordinary vocabulary of at least "
                f"{self.fast_vocab_size + 1 + TAIL_RESERVED} ids for {self.fast_vocab_size} FAST tokens, "
                f"got {self.vlm_vocab_size}"
            )

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

    def check_ids(self, reserved: dict[int, str], embedding_rows: int | None = None) -> None:
        """One-line ConfigError when a `vocab_tail` id is an added/special token (`reserved`) or past the embedding
        matrix; `new_tokens` ids are added tokens by design and only checked against the rows."""
        ids = self.to_vlm(range(self.fast_vocab_size))
        if self.mode == "vocab_tail":
            for t, i in enumerate(ids):
                if i in reserved:
                    raise ConfigError(
                        f"fast mapping: vocab_tail would map FAST id {t} onto the added/special token "
                        f"{reserved[i]!r} (id {i}); the ordinary vocabulary ends at {self.vlm_vocab_size}"
                    )
        if embedding_rows is not None and max(ids) >= embedding_rows:
            raise ConfigError(
                f"fast mapping: FAST ids reach VLM id {max(ids)} but the embedding matrix has {embedding_rows} rows"
            )

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, fast_vocab_size: int, mode: str, embedding_rows: int | None = None) -> Any:
        """Build the mapping for a transformers tokenizer; `new_tokens` adds `<fast_t>` tokens to it if missing.

        `vocab_tail` counts from `tokenizer.vocab_size` (added tokens excluded) and is checked against every
        added or special id and against `embedding_rows` (the model's input embedding rows) when given.
        """
        if mode == "new_tokens":
            tokens = [fast_token(t) for t in range(fast_vocab_size)]
            tokenizer.add_tokens(tokens, special_tokens=False)
            ids = tokenizer.convert_tokens_to_ids(tokens)
            first = int(ids[0])
            if list(ids) != list(range(first, first + fast_vocab_size)):
                raise ConfigError("fast mapping: the tokenizer already holds some <fast_t> tokens out of order")
            return cls(mode, fast_vocab_size, len(tokenizer), first)
        mapping = cls(mode, fast_vocab_size, int(tokenizer.vocab_size))
        mapping.check_ids(reserved_ids(tokenizer), embedding_rows)
        return mapping
