"""The single learnable `<ActionQuery>` token: added to the tokenizer, embedded by its own parameter.

The token is a real vocabulary entry (so a saved processor tokenises prompts with no project code), but its
embedding is a separate `nn.Parameter` substituted at every position holding the token's id, by a forward hook on
the word-embedding module. This keeps the query learnable when the word embeddings are frozen (and leaves the
frozen rows bit-identical, which a masked gradient under AdamW weight decay would not). Before saving, the
parameter is written back into its vocabulary row; on load it is read from that row. Positions are always found
by token id, never by index (PaliGemma's processor appends "\\n", batches are padded).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import ProcessorMixin
from transformers.tokenization_utils_base import AddedToken

ACTION_QUERY_TOKEN = "<ActionQuery>"


def add_action_query_token(processor: ProcessorMixin) -> int:
    """Add `<ActionQuery>` to the processor's tokenizer as one special token (idempotent); returns its id."""
    tokenizer = processor.tokenizer
    tokenizer.add_tokens([AddedToken(ACTION_QUERY_TOKEN, special=True, normalized=False)], special_tokens=True)
    token_id = tokenizer.convert_tokens_to_ids(ACTION_QUERY_TOKEN)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise RuntimeError(f"{type(tokenizer).__name__} did not register {ACTION_QUERY_TOKEN}")
    return token_id


class ActionQuery(nn.Module):
    """The query's embedding (hidden,) and the hook that places it wherever `token_id` occurs."""

    def __init__(self, token_id: int, init: torch.Tensor) -> None:
        super().__init__()
        self.token_id = token_id
        self.embedding = nn.Parameter(init.detach().clone().float())
        self._handle: Any = None

    def attach(self, embeddings: nn.Embedding) -> None:
        """Substitute the query embedding in `embeddings`' output at the token's positions."""
        if self._handle is not None:
            self._handle.remove()
        self._handle = embeddings.register_forward_hook(self._substitute)

    def _substitute(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        input_ids = args[0] if args else None
        if not isinstance(input_ids, torch.Tensor):
            return output
        is_query = (input_ids == self.token_id).unsqueeze(-1)
        return torch.where(is_query, self.embedding.to(output.dtype), output)

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index (B,) of the one query token in each row; ValueError unless every row holds exactly one."""
        hits = input_ids == self.token_id
        counts = hits.sum(dim=1)
        if not bool((counts == 1).all()):
            raise ValueError(f"every prompt must hold exactly one {ACTION_QUERY_TOKEN}, got counts {counts.tolist()}")
        return hits.int().argmax(dim=1)

    @torch.no_grad()
    def write_back(self, embeddings: nn.Embedding) -> None:
        """Copy the learned query into its vocabulary row (before `save_pretrained`)."""
        embeddings.weight[self.token_id] = self.embedding.to(embeddings.weight.dtype)
