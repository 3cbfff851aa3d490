"""The FAST action tokenizer (DCT + BPE) and its mapping into VLM vocabularies."""

from datasets_build.fast.tokenizer import DecodedChunk, FastConfig, FastTokenizer, action_chunks, quantile_bounds
from datasets_build.fast.vocab import FastVocabMapping, answer_text, fast_token, parse_answer

__all__ = [
    "DecodedChunk",
    "FastConfig",
    "FastTokenizer",
    "FastVocabMapping",
    "action_chunks",
    "answer_text",
    "fast_token",
    "parse_answer",
    "quantile_bounds",
]
