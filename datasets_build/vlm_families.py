"""The paper's VLM families: backbone ids, where each family keeps its parts, and the real configurations.

One source of truth for facts both post-training (`sft`) and the policy (`vla`) need: `FAMILIES`, the nine
paper backbones (`PAPER_BACKBONES`) and their Table 9 sizes, `MODULE_PATHS` (vision tower, projector, word
embeddings, language model and lm_head per family in transformers 5, for freezing and LoRA), `LAYER_CLASSES`
(the decoder layers and vision blocks FSDP wraps), the image tokens of a 224x224 image, `family_of` (from an id
or a loaded config), `REAL_LAYOUTS` (vocabulary padding, tied heads and stored dtype of each release) and
`real_config` (the published hyper-parameters of the nine backbones, built offline with no weights, for
`python -m vla info`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from transformers import (
    Kosmos2Config,
    PaliGemmaConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen3VLConfig,
    Qwen3VLMoeConfig,
)

from datasets_build.errors import ConfigError

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "paligemma", "paligemma2", "kosmos2")

# The paper's nine backbones (paper-notes.md, "VLM4VLA policy"): the Hub id of each and its family.
PAPER_BACKBONES: dict[str, str] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": "qwen2_5_vl",
    "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5_vl",
    "Qwen/Qwen3-VL-2B-Instruct": "qwen3_vl",
    "Qwen/Qwen3-VL-4B-Instruct": "qwen3_vl",
    "Qwen/Qwen3-VL-8B-Instruct": "qwen3_vl",
    "Qwen/Qwen3-VL-30B-A3B-Instruct": "qwen3_vl_moe",
    "google/paligemma-3b-pt-224": "paligemma",
    "google/paligemma2-3b-pt-224": "paligemma2",
    "microsoft/kosmos-2-patch14-224": "kosmos2",
}

# Parameter counts printed in the paper's Table 9 (millions), for sanity checks of `real_config`.
PAPER_PARAMS_M: dict[str, int] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": 3755,
    "Qwen/Qwen2.5-VL-7B-Instruct": 8292,
    "Qwen/Qwen3-VL-2B-Instruct": 2128,
    "Qwen/Qwen3-VL-4B-Instruct": 4437,
    "Qwen/Qwen3-VL-8B-Instruct": 8767,
    "Qwen/Qwen3-VL-30B-A3B-Instruct": 31071,
    "google/paligemma-3b-pt-224": 2923,
    "google/paligemma2-3b-pt-224": 3032,
    "microsoft/kosmos-2-patch14-224": 1664,
}


@dataclass(frozen=True)
class ModulePaths:
    """Dotted paths (for `model.get_submodule`) of the parts a VLA/SFT stage freezes or adapts."""

    vision_tower: str
    projector: str
    word_embeddings: str
    language_model: str
    lm_head: str


# Checked against transformers 5.24 by tests/test_tiny_models.py. In Qwen-VL the projector (patch merger) sits
# INSIDE the vision tower module: freezing `vision_tower` freezes it too; Qwen3-VL also has
# `model.visual.deepstack_merger_list` (projectors of intermediate ViT layers injected into the first LLM layers).
MODULE_PATHS: dict[str, ModulePaths] = {
    "qwen2_5_vl": ModulePaths(
        "model.visual", "model.visual.merger", "model.language_model.embed_tokens", "model.language_model", "lm_head"
    ),
    "qwen3_vl": ModulePaths(
        "model.visual", "model.visual.merger", "model.language_model.embed_tokens", "model.language_model", "lm_head"
    ),
    "qwen3_vl_moe": ModulePaths(
        "model.visual", "model.visual.merger", "model.language_model.embed_tokens", "model.language_model", "lm_head"
    ),
    "paligemma": ModulePaths(
        "model.vision_tower",
        "model.multi_modal_projector",
        "model.language_model.embed_tokens",
        "model.language_model",
        "lm_head",
    ),
    "paligemma2": ModulePaths(
        "model.vision_tower",
        "model.multi_modal_projector",
        "model.language_model.embed_tokens",
        "model.language_model",
        "lm_head",
    ),
    # Kosmos-2 has no `.model` wrapper: the text decoder is a whole causal LM with its own lm_head.
    "kosmos2": ModulePaths(
        "vision_model",
        "image_to_text_projection",
        "text_model.model.embed_tokens",
        "text_model.model",
        "text_model.lm_head",
    ),
}

# The repeated blocks of each family, by transformers class name: the units FSDP shards (one per decoder layer and per
# vision block, the rest in the root unit). Named here, once, for both stages: the VLA wraps the VLM in its own module,
# which has no transformers `_no_split_modules`, and those of a loaded model also list embeddings and pooling heads
# (and PaliGemma's class attribute only its projector). Checked against the models by tests/test_tiny_models.py.
LAYER_CLASSES: dict[str, tuple[str, ...]] = {
    "qwen2_5_vl": ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"),
    "qwen3_vl": ("Qwen3VLTextDecoderLayer", "Qwen3VLVisionBlock"),
    "qwen3_vl_moe": ("Qwen3VLMoeTextDecoderLayer", "Qwen3VLMoeVisionBlock"),
    "paligemma": ("GemmaDecoderLayer", "SiglipEncoderLayer"),
    "paligemma2": ("Gemma2DecoderLayer", "SiglipEncoderLayer"),
    "kosmos2": ("Kosmos2TextBlock", "Kosmos2VisionEncoderLayer"),
}

# Attention kernel each family trains and runs with by default (`attn_implementation: auto`): PyTorch SDPA, except
# PaliGemma 2, whose Gemma-2 decoder soft-caps attention logits, which transformers implements only in its eager
# path (and in flash_attention_2).
DEFAULT_ATTENTION: dict[str, str] = {family: "eager" if family == "paligemma2" else "sdpa" for family in FAMILIES}

# Image tokens one 224x224 image takes in the LLM sequence, identical in the tiny builds and the real models:
# Qwen2.5-VL (14 px patches, 2x2 merge) 8x8; Qwen3-VL (16 px, 2x2) 8x8, because its image processor's
# min_pixels (65536) upsamples 224x224 to 256x256; PaliGemma (SigLIP 224/14) 16x16; Kosmos-2 64 latent queries.
IMAGE_TOKENS_224: dict[str, int] = {
    "qwen2_5_vl": 64,
    "qwen3_vl": 64,
    "qwen3_vl_moe": 64,
    "paligemma": 256,
    "paligemma2": 256,
    "kosmos2": 64,
}


# ---------------------------------------------------------------------------------------------------------
# The real backbones' hyper-parameters (no weights)
# ---------------------------------------------------------------------------------------------------------
# Values of each repo's published config.json, read from public copies found with the code search (the Hub
# itself is out of reach here), cross-checked between copies, and confirmed by the parameter counts: built on
# the meta device, every config below gives the paper's Table 9 count to the million (tests/test_tiny_models.py).
# - Qwen2.5-VL-3B: a markdown copy headed "Qwen/Qwen2.5-VL-3B-Instruct ## model config" (hidden 2048, MLP
#   11008, 36 layers, 16 heads / 2 kv, vocab 151936, tied); vision tower from the printed module tree in
#   acproject/duorou docs/qwen2.5vl_graph.md (1280 wide, 32 blocks, MLP 3420, full attention at 7/15/23/31).
# - Qwen2.5-VL-7B: the same printed tree (embeddings 152064 x 3584, 28 layers, k/v 512 = 4 kv heads of 128,
#   MLP 18944, merger 5120 -> 3584).
# - Qwen3-VL-2B / 4B / 8B: inline copies of the released config.json in public repos (a text-encoder module
#   quoting the 4B config with transformers_version 4.57.0.dev0; parser fixtures for the 2B; an mlx test and a
#   Chinese write-up of the 8B: text 4096 / 36 layers / 32 heads / 8 kv, MLP 12288, vision 27 x 1152,
#   deepstack [8, 16, 24]).
# - Qwen3-VL-30B-A3B: a parser test transcribing "Qwen/Qwen3-VL-30B-A3B-Instruct/config.json" at commit 1fc78ad
#   (48 layers, 2048, 32 heads / 4 kv, head_dim 128, 128 experts top-8, expert MLP 768, untied).
# - PaliGemma-3B-pt-224: re-implementations quoting huggingface.co/google/paligemma-3b-pt-224's config.json
#   (Gemma-2B: 2048, 18 layers, 8 heads / 1 kv, head_dim 256, MLP 16384, vocab 257216; SigLIP-So400m/14:
#   1152, 27 layers, 16 heads, MLP 4304; 256 image tokens; image_token_index 257152).
# - PaliGemma2-3B-pt-224: Gemma2-2B text (2304, 26 layers, 8 heads / 4 kv, head_dim 256, MLP 9216,
#   query_pre_attn_scalar 256, soft-capping 50 / 30, sliding window 4096) with the same SigLIP tower; no copy
#   of this file was found, so these rest on Gemma2-2B's published sizes plus the exact Table 9 count.
# - Kosmos-2: Yutong-Dai/commented_codebase kosmos-2-patch14-224/config.json (text 2048, 24 layers, 32 heads,
#   FFN 8192, vocab 65037; CLIP ViT-L/14 vision 1024, 24 layers, 16 heads, MLP 4096; 64 latent queries).

_QWEN25_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
_QWEN3_VISION_SMALL = {  # 2B and 4B
    "depth": 24,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_heads": 16,
    "patch_size": 16,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "num_position_embeddings": 2304,
    "deepstack_visual_indexes": [5, 11, 17],
    "hidden_act": "gelu_pytorch_tanh",
}
_QWEN3_VISION_LARGE = {  # 8B and 30B-A3B
    **_QWEN3_VISION_SMALL,
    "depth": 27,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "deepstack_visual_indexes": [8, 16, 24],
}
_SIGLIP_SO400M_224 = {
    "model_type": "siglip_vision_model",
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "vision_use_head": False,
}

_QWEN3_ROPE = {
    "rope_type": "default",
    "rope_theta": 5000000.0,
    "mrope_section": [24, 20, 20],
    "mrope_interleaved": True,
}
_QWEN25_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}


def _qwen_text(vocab: int, hidden: int, inter: int, layers: int, heads: int, kv: int, **extra: Any) -> dict[str, Any]:
    """A Qwen text_config dict."""
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "rms_norm_eps": 1e-6,
        **extra,
    }


def _qwen3_text(hidden: int, inter: int, layers: int, heads: int, kv: int, **extra: Any) -> dict[str, Any]:
    """A Qwen3-VL text_config dict (head_dim 128, 256K context, interleaved M-RoPE)."""
    return _qwen_text(
        151936,
        hidden,
        inter,
        layers,
        heads,
        kv,
        head_dim=128,
        max_position_embeddings=262144,
        rope_parameters=dict(_QWEN3_ROPE),
        **extra,
    )


def _gemma_text(model_type: str, hidden: int, inter: int, layers: int, kv: int, **extra: Any) -> dict[str, Any]:
    """A PaliGemma text_config dict (8 heads of 256, vocabulary 257216)."""
    return {
        "model_type": model_type,
        "vocab_size": 257216,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": kv,
        "head_dim": 256,
        "max_position_embeddings": 8192,
        "hidden_activation": "gelu_pytorch_tanh",
        **extra,
    }


_REAL: dict[str, tuple[type[PretrainedConfig], dict[str, Any]]] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": (
        Qwen2_5_VLConfig,
        {
            "text_config": _qwen_text(
                151936, 2048, 11008, 36, 16, 2, max_position_embeddings=128000, rope_parameters=dict(_QWEN25_ROPE)
            ),
            "vision_config": {**_QWEN25_VISION, "out_hidden_size": 2048},
            "tie_word_embeddings": True,
        },
    ),
    "Qwen/Qwen2.5-VL-7B-Instruct": (
        Qwen2_5_VLConfig,
        {
            "text_config": _qwen_text(
                152064, 3584, 18944, 28, 28, 4, max_position_embeddings=128000, rope_parameters=dict(_QWEN25_ROPE)
            ),
            "vision_config": {**_QWEN25_VISION, "out_hidden_size": 3584},
            "tie_word_embeddings": False,
        },
    ),
    "Qwen/Qwen3-VL-2B-Instruct": (
        Qwen3VLConfig,
        {
            "text_config": _qwen3_text(2048, 6144, 28, 16, 8),
            "vision_config": {**_QWEN3_VISION_SMALL, "out_hidden_size": 2048},
            "tie_word_embeddings": True,
        },
    ),
    "Qwen/Qwen3-VL-4B-Instruct": (
        Qwen3VLConfig,
        {
            "text_config": _qwen3_text(2560, 9728, 36, 32, 8),
            "vision_config": {**_QWEN3_VISION_SMALL, "out_hidden_size": 2560},
            "tie_word_embeddings": True,
        },
    ),
    "Qwen/Qwen3-VL-8B-Instruct": (
        Qwen3VLConfig,
        {
            "text_config": _qwen3_text(4096, 12288, 36, 32, 8),
            "vision_config": {**_QWEN3_VISION_LARGE, "out_hidden_size": 4096},
            "tie_word_embeddings": False,
        },
    ),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": (
        Qwen3VLMoeConfig,
        {
            "text_config": _qwen3_text(
                2048,
                6144,
                48,
                32,
                4,
                moe_intermediate_size=768,
                num_experts=128,
                num_experts_per_tok=8,
                decoder_sparse_step=1,
                norm_topk_prob=True,
                mlp_only_layers=[],
            ),
            "vision_config": {**_QWEN3_VISION_LARGE, "out_hidden_size": 2048},
            "tie_word_embeddings": False,
        },
    ),
    "google/paligemma-3b-pt-224": (
        PaliGemmaConfig,
        {
            "text_config": _gemma_text("gemma", 2048, 16384, 18, 1),
            "vision_config": dict(_SIGLIP_SO400M_224),
            "image_token_index": 257152,
            "projection_dim": 2048,
            "hidden_size": 2048,
        },
    ),
    "google/paligemma2-3b-pt-224": (
        PaliGemmaConfig,
        {
            "text_config": _gemma_text(
                "gemma2",
                2304,
                9216,
                26,
                4,
                query_pre_attn_scalar=256,
                sliding_window=4096,
                final_logit_softcapping=30.0,
                attn_logit_softcapping=50.0,
            ),
            "vision_config": dict(_SIGLIP_SO400M_224),
            "image_token_index": 257152,
            "projection_dim": 2304,
            "hidden_size": 2304,
        },
    ),
    "microsoft/kosmos-2-patch14-224": (
        Kosmos2Config,
        {
            "text_config": {
                "vocab_size": 65037,
                "embed_dim": 2048,
                "layers": 24,
                "attention_heads": 32,
                "ffn_dim": 8192,
                "max_position_embeddings": 2048,
                "scale_embedding": True,
                "bos_token_id": 0,
                "pad_token_id": 1,
                "eos_token_id": 2,
            },
            "vision_config": {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "image_size": 224,
                "patch_size": 14,
                "hidden_act": "quick_gelu",
            },
            "latent_query_num": 64,
        },
    ),
}


# ---------------------------------------------------------------------------------------------------------
# How each release lays out its vocabulary and weights (what the tiny models copy, what FAST and training read)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RealLayout:
    """Vocabulary and storage facts of one released checkpoint.

    `base_vocab`: ids below it are the tokenizer's ordinary vocabulary (`tokenizer.vocab_size`); from it on come
    the added and special tokens up to `tokenizer_len` (`len(tokenizer)`); the embedding matrix has
    `embedding_rows` >= `tokenizer_len` rows, a multiple of `pad_multiple`, the rows past the tokenizer being
    padding no token maps to. `tied`: the lm_head shares the input embedding matrix. `dtype`: the `torch_dtype`
    of the published config.json, which is also the dtype of its safetensors and what transformers' default
    `dtype="auto"` loads.
    """

    base_vocab: int
    tokenizer_len: int
    embedding_rows: int
    pad_multiple: int
    tied: bool
    dtype: str

    @property
    def padding_ratio(self) -> float:
        """Embedding rows per tokenizer id (1.0 = no padding rows)."""
        return self.embedding_rows / self.tokenizer_len

    def padded_rows(self, tokenizer_len: int) -> int:
        """Rows for a tokenizer of `tokenizer_len` laid out like this release: at least its padding ratio, rounded up
        to its multiple (a tiny vocabulary keeps the gap between tokenizer and embeddings, not its size)."""
        rows = -(-tokenizer_len * self.embedding_rows // self.tokenizer_len)
        return -(-rows // self.pad_multiple) * self.pad_multiple


# Sources (read from public copies of the released files; the Hub itself is out of reach here):
# - Qwen2.5-VL: tokenizer_config.json added_tokens_decoder holds ids 151643..151664 (<|endoftext|> .. <|file_sep|>),
#   so len(tokenizer) = 151665; config.json vocab_size 151936 (3B, tied) and 152064 (7B, untied); bf16.
# - Qwen3-VL (2B/4B/8B/30B-A3B): the Qwen3 tokenizer adds <tool_response>, </tool_response>, <think>, </think> at
#   151665..151668, so len(tokenizer) = 151669 (not 151665 as for Qwen2.5-VL); vocab_size 151936; "dtype":
#   "bfloat16"; 2B and 4B tied, 8B and 30B-A3B untied.
# - PaliGemma 1/2: the SentencePiece model holds 257152 pieces (Gemma's 256000 + 1024 <loc> + 128 <seg>); the HF
#   conversion adds <image> (257152) and resizes the embeddings to a multiple of 64: 257216 rows; tied (Gemma).
#   PaliGemma-3B-pt-224's main branch is float32 (a "bfloat16" revision exists beside it); PaliGemma 2 is bf16.
# - Kosmos-2: XLM-R SentencePiece (64000 pieces, fairseq-shifted by one, + <mask>: 64002) + 1035 added tag and
#   patch-index tokens = 65037 = vocab_size (no padding); tied; float32.
REAL_LAYOUTS: dict[str, RealLayout] = {
    "Qwen/Qwen2.5-VL-3B-Instruct": RealLayout(151643, 151665, 151936, 128, True, "bfloat16"),
    "Qwen/Qwen2.5-VL-7B-Instruct": RealLayout(151643, 151665, 152064, 128, False, "bfloat16"),
    "Qwen/Qwen3-VL-2B-Instruct": RealLayout(151643, 151669, 151936, 128, True, "bfloat16"),
    "Qwen/Qwen3-VL-4B-Instruct": RealLayout(151643, 151669, 151936, 128, True, "bfloat16"),
    "Qwen/Qwen3-VL-8B-Instruct": RealLayout(151643, 151669, 151936, 128, False, "bfloat16"),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": RealLayout(151643, 151669, 151936, 128, False, "bfloat16"),
    "google/paligemma-3b-pt-224": RealLayout(257152, 257153, 257216, 64, True, "float32"),
    "google/paligemma2-3b-pt-224": RealLayout(257152, 257153, 257216, 64, True, "bfloat16"),
    "microsoft/kosmos-2-patch14-224": RealLayout(64002, 65037, 65037, 1, True, "float32"),
}
assert set(REAL_LAYOUTS) == set(PAPER_BACKBONES)

# The paper id whose layout a family's tiny model takes when no id is named (`build_tiny_model(family)`).
DEFAULT_ID: dict[str, str] = {family: next(i for i, f in PAPER_BACKBONES.items() if f == family) for family in FAMILIES}


def real_layout(repo_id: str) -> RealLayout:
    """The vocabulary and storage layout of one of the paper's nine backbones."""
    if repo_id not in REAL_LAYOUTS:
        raise ConfigError(f"no stored layout for {repo_id!r}; known: {', '.join(REAL_LAYOUTS)}")
    return REAL_LAYOUTS[repo_id]


def real_config(repo_id: str) -> PretrainedConfig:
    """The published configuration of one of the paper's nine backbones, built offline (no weights).

    Instantiate it on the meta device (`with torch.device("meta"): AutoModelForImageTextToText.from_config(c)`)
    to count parameters or read head widths without downloading anything.
    """
    if repo_id not in _REAL:
        raise ConfigError(f"no stored config for {repo_id!r}; known: {', '.join(_REAL)}")
    config_class, kwargs = _REAL[repo_id]
    return config_class(**copy.deepcopy(kwargs), dtype=REAL_LAYOUTS[repo_id].dtype)


def family_of(repo_id_or_config: str | PretrainedConfig) -> str:
    """The family (one of FAMILIES) of a paper backbone id or of a loaded config."""
    if isinstance(repo_id_or_config, str):
        if repo_id_or_config in PAPER_BACKBONES:
            return PAPER_BACKBONES[repo_id_or_config]
        raise ConfigError(f"unknown backbone {repo_id_or_config!r}; known: {', '.join(PAPER_BACKBONES)}")
    model_type = repo_id_or_config.model_type
    if model_type == "paligemma":
        return "paligemma2" if repo_id_or_config.text_config.model_type == "gemma2" else "paligemma"
    aliases = {
        "qwen2_5_vl": "qwen2_5_vl",
        "qwen3_vl": "qwen3_vl",
        "qwen3_vl_moe": "qwen3_vl_moe",
        "kosmos-2": "kosmos2",
    }
    if model_type not in aliases:
        raise ConfigError(f"model type {model_type!r} is not one of the paper's VLM families")
    return aliases[model_type]
