"""Tiny, randomly initialised VLMs of every paper backbone family, installable under the real Hub ids.

The demo chain (`recipes/run.sh demo`) and the SFT/VLA tests must run on a fresh machine with no downloads.
This module builds each family's REAL transformers classes (model, processor, tokenizer class, image
processor, chat template) from small configs: hidden 128, 2 decoder layers, a 2-layer vision tower of width
64, 4 experts top-2 for the MoE. Tokenizers are trained here with the `tokenizers` library on a small English
corpus of robot instructions and VQA words, then wrapped in the family's tokenizer class with the family's
real special tokens. Weights are random but seeded: the same seed gives the same tensors and the same bytes.

Each build copies the storage layout of one real release (`datasets_build.vlm_families.REAL_LAYOUTS`): the
dtype of its safetensors and config.json (bf16 for Qwen-VL and PaliGemma 2), embedding rows padded past the
tokenizer by the release's ratio and multiple (Qwen: 151936 rows for 151665 ids), and the lm_head tied or untied
as there (untied for Qwen2.5-VL-7B, Qwen3-VL-8B and 30B-A3B), so that code assuming fp32 weights, rows ==
len(tokenizer) or a tied head fails a test here rather than on the real checkpoints.

`install_in_hf_cache` places a built folder in the Hugging Face cache layout so that
`from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct")` resolves offline; `install_tiny_backbones` does this for the
paper's nine backbone ids (`PAPER_BACKBONES`), one build per id in that id's layout.

The family facts (ids, module paths, real configurations) live in `datasets_build.vlm_families`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import (
    CLIPImageProcessor,
    GemmaTokenizer,
    GenerationConfig,
    Kosmos2Config,
    Kosmos2ForConditionalGeneration,
    Kosmos2Processor,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen2VLVideoProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
    SiglipImageProcessor,
    XLMRobertaTokenizer,
)
from transformers.tokenization_utils_base import AddedToken

from datasets_build.errors import ConfigError, OutputExistsError
from datasets_build.outputs import staged_output_folder
from datasets_build.vlm_families import (
    DEFAULT_ID,
    FAMILIES,
    IMAGE_TOKENS_224,
    PAPER_BACKBONES,
    RealLayout,
    real_config,
    real_layout,
)

TINY_MARKER = "tiny_model.json"

# ---------------------------------------------------------------------------------------------------------
# Tokenizer corpus: robot instructions (CALVIN / Bridge / LIBERO style) and VQA vocabulary.
# ---------------------------------------------------------------------------------------------------------

_CORPUS = [
    "What action should the robotic arm take to pick up the red block?",
    "pick up the blue cube and place it in the drawer",
    "put the carrot on the plate",
    "put the eggplant in the basket",
    "put the spoon on the towel",
    "stack the green cube on the yellow cube",
    "open the drawer, then close the drawer",
    "push the pink block to the left",
    "push the red block to the right",
    "lift the purple block from the table",
    "rotate the blue block clockwise, then counterclockwise",
    "turn on the light bulb and turn off the led",
    "move the slider to the left and the right",
    "put the black bowl on the top of the cabinet",
    "turn on the stove and put the moka pot on it",
    "put both the alphabet soup and the cream cheese box in the basket",
    "pick up the book and place it in the back compartment of the caddy",
    "put the white mug on the left plate and put the yellow and white mug on the right plate",
    "You are a helpful assistant.",
    "Which object is closer to the camera, the bowl or the cup?",
    "Is the gripper open or closed? Answer yes or no.",
    "How far is the robot gripper from the target object, in centimeters?",
    "Where is the mug relative to the plate: left, right, in front of or behind?",
    "Point to the handle of the drawer. Answer with a list of (x, y) points.",
    "Will the robot succeed at the task? Choose one option: A, B, C or D.",
    "The arm moves up, down, forward and backward; the gripper rotates and opens.",
    "Which direction does the end effector move next?",
    "How many objects are on the table? There are 3 objects: 1, 2, 3, 4, 5, 6, 7, 8, 9, 0.",
    "Describe the scene in the image. Count the objects and name their colors.",
    "What is the distance between the spoon and the towel? About 0.25 meters.",
    "Is the block bigger or smaller than the cup? Which one is taller, wider, higher, lower?",
    "the robot arm is holding a sponge above the sink near the faucet",
    "a kitchen counter with a knife, a fork, a pan, a pot, a lid and a cloth",
    "first, second, third, then, next, finally, done, success, failure",
    "system user assistant image picture video",
    "the user asks the assistant; the system prompt sets the role of the assistant",
    "user",
    "assistant",
    "system",
]


def _corpus(repeat: int = 4) -> list[str]:
    """The training text, repeated so that frequent words merge into whole-word pieces."""
    return [line for _ in range(repeat) for line in _CORPUS]


# Ordinary (non-added) vocabulary of the tiny Qwen tokenizers (real: 151643). Large enough that FAST's `vocab_tail`
# fits a 1024-token FAST vocabulary and its 128 reserved ids above the 256 byte-level pieces; and sized so that,
# as in the real releases (151936 - 151665 = 271 rows), the padding rows past the tokenizer outnumber those 128
# reserved ids: 2160 + 22 added ids = 2182, padded by the release ratio to the next multiple of 128 = 2304 rows.
QWEN_BASE_VOCAB = 2160


def _qwen_corpus() -> list[str]:
    """The corpus plus its upper- and title-case forms and inflected words, so that byte-level BPE reaches
    `QWEN_BASE_VOCAB` pieces (the plain corpus saturates at ~730)."""
    lines = _corpus()
    words = sorted({w.strip(".,?!;:()").lower() for line in _CORPUS for w in line.split()})
    inflected = [" ".join(w + suffix for w in words) for suffix in ("s", "ed", "ing", "er", "ly")]
    return lines + [line.upper() for line in lines] + [line.title() for line in lines] + inflected


# Qwen2 / Qwen2.5 / Qwen3 pre-tokenisation regex (the one transformers' Qwen2Tokenizer applies).
_QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen special tokens in their real order (Qwen2.5-VL / Qwen3-VL tokenizer_config.json added_tokens_decoder);
# the first 14 are special, the tool/fim/think tokens are plain added tokens as in the real files.
_QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_ADDED = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
_QWEN3_ADDED = ["<tool_response>", "</tool_response>", "<think>", "</think>"]


def _qwen_tokenizer(qwen3: bool) -> Qwen2Tokenizer:
    """A byte-level BPE trained on the corpus, wrapped in Qwen2Tokenizer with the Qwen special tokens."""
    trainer_tok = Tokenizer(BPE())
    trainer_tok.normalizer = normalizers.NFC()
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = BpeTrainer(vocab_size=QWEN_BASE_VOCAB, initial_alphabet=alphabet, show_progress=False)
    trainer_tok.train_from_iterator(_qwen_corpus(), trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    if len(model["vocab"]) != QWEN_BASE_VOCAB:
        raise RuntimeError(f"tiny Qwen BPE reached {len(model['vocab'])} pieces, expected {QWEN_BASE_VOCAB}")
    merges: Any = [tuple(pair) for pair in model["merges"]]  # transformers 5 takes (a, b) tuples
    # as the real Qwen tokenizer_config.json (byte-level: no unknowns); eos/pad are named once they exist (below)
    no_unk: dict[str, Any] = {"unk_token": None, "eos_token": None, "pad_token": None}
    tokenizer = Qwen2Tokenizer(
        vocab=dict(model["vocab"]),
        merges=merges,
        **no_unk,
        bos_token=None,
        errors="replace",
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
        split_special_tokens=False,
    )
    # The special tokens in their real order right after the ordinary vocabulary (<|endoftext|> first, as at
    # 151643), then named as eos/pad (naming them in the constructor would add <|im_end|> first).
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in _QWEN_SPECIAL])
    extra = _QWEN_ADDED + (_QWEN3_ADDED if qwen3 else [])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra])
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


# Gemma's first ids (real Gemma vocabulary): pad 0, eos 1, bos 2, unk 3, mask 4; then byte-fallback pieces.
_GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
_GEMMA_BYTES = [f"<0x{b:02X}>" for b in range(256)]


def _gemma_tokenizer() -> GemmaTokenizer:
    """A BPE with byte fallback (SentencePiece-style "▁" pieces), wrapped in GemmaTokenizer."""
    trainer_tok = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True))
    trainer_tok.normalizer = normalizers.Replace(" ", "▁")
    # Train on "▁word" pieces so that no merge spans two words (as SentencePiece); GemmaTokenizer then applies
    # the merges to the whole normalised string, which yields the same pieces.
    trainer_tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = BpeTrainer(vocab_size=900, special_tokens=_GEMMA_SPECIAL + _GEMMA_BYTES, show_progress=False)
    trainer_tok.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    merges: Any = [tuple(pair) for pair in model["merges"]]  # transformers 5 takes (a, b) tuples
    return GemmaTokenizer(
        vocab=dict(model["vocab"]),
        merges=merges,
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=1000000000000000019884624838656,
    )


def _xlmr_tokenizer() -> XLMRobertaTokenizer:
    """A SentencePiece-style Unigram (XLM-R special ids: <s> 0, <pad> 1, </s> 2, <unk> 3) for Kosmos-2.

    The `tokenizers` UnigramTrainer keeps only ~250 character-level pieces on a corpus this small, so the pieces
    come from a BPE trained on the same "▁word" split and their Unigram log-probabilities from how often each
    piece occurs when the BPE encodes the corpus (one EM step from SentencePiece's seed vocabulary).
    """
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    split = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    bpe = Tokenizer(BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = split
    bpe.train_from_iterator(
        _corpus(), trainer=BpeTrainer(vocab_size=1000, special_tokens=specials, show_progress=False)
    )
    counts = Counter(piece for line in _corpus() for piece in bpe.encode(line).tokens)
    pieces = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    total = sum(counts.values()) + 0.5 * len(pieces)
    vocab = [(p, 0.0) if p in specials else (p, math.log((counts[p] + 0.5) / total)) for p, _ in pieces]
    vocab.append(("<mask>", 0.0))
    return XLMRobertaTokenizer(vocab=vocab, add_prefix_space=True, model_max_length=2048)


def _chat_template(name: str) -> str:
    """One of TRL's stored chat templates: the real Qwen-VL ones, which TRL recognises and swaps for its
    `{% generation %}`-tagged training versions under `assistant_only_loss=True`."""
    return (resources.files("trl") / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Processors (built first: they add tokens, and the config's vocab_size is len(tokenizer) afterwards)
# ---------------------------------------------------------------------------------------------------------

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _qwen_processor(family: str) -> ProcessorMixin:
    """Qwen2.5-VL (patch 14) or Qwen3-VL (patch 16) processor with the real chat template."""
    if family == "qwen2_5_vl":
        tokenizer = _qwen_tokenizer(qwen3=False)
        template = _chat_template("qwen2_5_vl")
        tokenizer.chat_template = template
        image = Qwen2VLImageProcessor(
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
            min_pixels=3136,
            max_pixels=12845056,
            image_mean=_CLIP_MEAN,
            image_std=_CLIP_STD,
        )
        video = Qwen2VLVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2)
        return Qwen2_5_VLProcessor(
            image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=template
        )
    tokenizer = _qwen_tokenizer(qwen3=True)
    template = _chat_template("qwen3_vl")
    tokenizer.chat_template = template
    image = Qwen2VLImageProcessor(
        patch_size=16,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video3 = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2)
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video3, chat_template=template)


def _paligemma_processor() -> PaliGemmaProcessor:
    """SigLIP 224 image processor + Gemma tokenizer; the processor adds <image>, 1024 <loc>, 128 <seg>."""
    image = SiglipImageProcessor(
        size={"height": 224, "width": 224},
        resample=3,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_seq_length=IMAGE_TOKENS_224["paligemma"],
    )
    return PaliGemmaProcessor(image_processor=image, tokenizer=_gemma_tokenizer())


def _kosmos2_processor() -> Kosmos2Processor:
    """CLIP 224 image processor + XLM-R Unigram; the processor adds its 11 tag and 1024 patch-index tokens."""
    image = CLIPImageProcessor(
        size={"height": 224, "width": 224},
        do_center_crop=False,
        resample=3,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    return Kosmos2Processor(image_processor=image, tokenizer=_xlmr_tokenizer())


# ---------------------------------------------------------------------------------------------------------
# Tiny configs
# ---------------------------------------------------------------------------------------------------------

TINY_HIDDEN = 128
TINY_LAYERS = 2
TINY_VISION_WIDTH = 64


def _qwen_ids(processor: ProcessorMixin) -> dict[str, Any]:
    """The vision special-token ids of a built Qwen processor, for the model config."""
    ids = processor.tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _tiny_config(family: str, processor: ProcessorMixin, layout: RealLayout) -> PretrainedConfig:
    """A small config of `family` whose special ids match the built processor, laid out as `layout`: embedding rows
    padded past the tokenizer as the release pads them, the lm_head tied or not as there."""
    tok = processor.tokenizer
    vocab = layout.padded_rows(len(tok))
    tied = layout.tied
    if family == "qwen2_5_vl":
        return Qwen2_5_VLConfig(
            text_config={
                "vocab_size": vocab,
                "hidden_size": TINY_HIDDEN,
                "intermediate_size": 256,
                "num_hidden_layers": TINY_LAYERS,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 4096,
                "max_window_layers": TINY_LAYERS,
                "rms_norm_eps": 1e-6,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
                "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
                "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
                "pad_token_id": tok.pad_token_id,
            },
            vision_config={
                "depth": TINY_LAYERS,
                "hidden_size": TINY_VISION_WIDTH,
                "intermediate_size": 128,
                "num_heads": 4,
                "out_hidden_size": TINY_HIDDEN,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "window_size": 112,
                "fullatt_block_indexes": [1],
                "tokens_per_second": 2,
            },
            tie_word_embeddings=tied,
            **_qwen_ids(processor),
        )
    if family in ("qwen3_vl", "qwen3_vl_moe"):
        text: dict[str, Any] = {
            "vocab_size": vocab,
            "hidden_size": TINY_HIDDEN,
            "intermediate_size": 256,
            "num_hidden_layers": TINY_LAYERS,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 32,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [6, 5, 5],
                "mrope_interleaved": True,
            },
            "pad_token_id": tok.pad_token_id,
        }
        vision = {
            "depth": TINY_LAYERS,
            "hidden_size": TINY_VISION_WIDTH,
            "intermediate_size": 128,
            "num_heads": 4,
            "out_hidden_size": TINY_HIDDEN,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [0],
        }
        if family == "qwen3_vl":
            return Qwen3VLConfig(
                text_config=text, vision_config=vision, tie_word_embeddings=tied, **_qwen_ids(processor)
            )
        text.update(
            {
                "moe_intermediate_size": 64,
                "num_experts": 4,
                "num_experts_per_tok": 2,
                "decoder_sparse_step": 1,
                "norm_topk_prob": True,
                "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
                "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
            }
        )
        return Qwen3VLMoeConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=tied, **_qwen_ids(processor)
        )
    if family in ("paligemma", "paligemma2"):
        text = {
            "model_type": "gemma" if family == "paligemma" else "gemma2",
            "vocab_size": vocab,
            "hidden_size": TINY_HIDDEN,
            "intermediate_size": 256,
            "num_hidden_layers": TINY_LAYERS,
            "num_attention_heads": 4,
            "num_key_value_heads": 1 if family == "paligemma" else 2,
            "head_dim": 32,
            "max_position_embeddings": 8192,
            "hidden_activation": "gelu_pytorch_tanh",
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
        }
        if family == "paligemma2":
            text.update(
                {
                    "query_pre_attn_scalar": 32,
                    "sliding_window": 4096,
                    "final_logit_softcapping": 30.0,
                    "attn_logit_softcapping": 50.0,
                }
            )
        return PaliGemmaConfig(
            text_config=text,
            vision_config={
                "model_type": "siglip_vision_model",
                "hidden_size": TINY_VISION_WIDTH,
                "intermediate_size": 128,
                "num_hidden_layers": TINY_LAYERS,
                "num_attention_heads": 4,
                "image_size": 224,
                "patch_size": 14,
                "vision_use_head": False,
            },
            image_token_index=tok.convert_tokens_to_ids("<image>"),
            projection_dim=TINY_HIDDEN,
            hidden_size=TINY_HIDDEN,
            tie_word_embeddings=tied,
        )
    if family == "kosmos2":
        return Kosmos2Config(
            text_config={
                "vocab_size": vocab,
                "embed_dim": TINY_HIDDEN,
                "layers": TINY_LAYERS,
                "attention_heads": 4,
                "ffn_dim": 256,
                "max_position_embeddings": 2048,
                "scale_embedding": True,
                "bos_token_id": tok.bos_token_id,
                "eos_token_id": tok.eos_token_id,
                "pad_token_id": tok.pad_token_id,
            },
            vision_config={
                "hidden_size": TINY_VISION_WIDTH,
                "intermediate_size": 128,
                "num_hidden_layers": TINY_LAYERS,
                "num_attention_heads": 4,
                "image_size": 224,
                "patch_size": 14,
            },
            latent_query_num=IMAGE_TOKENS_224["kosmos2"],
            tie_word_embeddings=tied,
        )
    raise ConfigError(f"unknown VLM family {family!r}; choose one of {', '.join(FAMILIES)}")


_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "qwen3_vl_moe": Qwen3VLMoeForConditionalGeneration,
    "paligemma": PaliGemmaForConditionalGeneration,
    "paligemma2": PaliGemmaForConditionalGeneration,
    "kosmos2": Kosmos2ForConditionalGeneration,
}


def _processor(family: str) -> ProcessorMixin:
    """The family's processor (tokenizer trained here)."""
    if family in ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        return _qwen_processor("qwen2_5_vl" if family == "qwen2_5_vl" else "qwen3_vl")
    if family in ("paligemma", "paligemma2"):
        return _paligemma_processor()
    return _kosmos2_processor()


def _generation_config(family: str, processor: ProcessorMixin) -> GenerationConfig:
    """Greedy decoding that stops where the real checkpoints stop."""
    tok = processor.tokenizer
    if family.startswith("qwen"):
        eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
        return GenerationConfig(
            bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=eos, pad_token_id=tok.pad_token_id
        )
    return GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def tiny_marker(family: str, seed: int, repo_id: str) -> dict[str, Any]:
    """The build record written beside a tiny model: same record, same files."""
    return {"family": family, "seed": seed, "layout": repo_id, "transformers": transformers.__version__}


def build_tiny_model(family: str, out: str | Path, seed: int = 0, repo_id: str | None = None) -> Path:
    """Write a tiny random `family` VLM (model + processor) to `out`; returns the folder.

    Laid out like the release `repo_id` (default: the family's first paper id, `DEFAULT_ID`): its embedding
    padding ratio and multiple, its tied or untied lm_head, its safetensors dtype and `dtype` in config.json
    (`datasets_build.vlm_families.REAL_LAYOUTS`). The folder loads with plain `AutoProcessor.from_pretrained(out)`
    and `AutoModelForImageTextToText.from_pretrained(out)`. Same family, id and seed give the same files.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown VLM family {family!r}; choose one of {', '.join(FAMILIES)}")
    repo_id = repo_id or DEFAULT_ID[family]
    if PAPER_BACKBONES.get(repo_id) != family:
        raise ConfigError(f"{repo_id!r} is not a {family} paper backbone; choose one of {', '.join(PAPER_BACKBONES)}")
    layout = real_layout(repo_id)
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise OutputExistsError(f"{folder}: refusing to build a tiny model into a non-empty folder")
    processor = _processor(family)
    config = _tiny_config(family, processor, layout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _MODEL_CLASSES[family](config)
    model.to(getattr(torch, layout.dtype))  # stored as the release stores it; config.json records the dtype
    model.generation_config = _generation_config(family, processor)
    model.eval()
    with staged_output_folder(folder, "tiny-models", overwrite=False) as staging:  # complete, or not there
        processor.save_pretrained(staging)
        model.save_pretrained(staging, safe_serialization=True)
        marker = tiny_marker(family, seed, repo_id)
        (staging / TINY_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def real_size_folder(repo_id: str, out: str | Path) -> Path:
    """A model folder without weights: `repo_id`'s published config (`real_config`) and the tiny processor of its
    family, the config's special-token ids set to the tiny tokenizer's. Loaded `from_scratch` it gives a real-size
    model with random weights and inputs it can run on (benchmarks/gpu_check.py: no downloads)."""
    family = PAPER_BACKBONES.get(repo_id)
    if family is None:
        raise ConfigError(f"{repo_id!r} is not one of the paper backbones: {', '.join(PAPER_BACKBONES)}")
    folder = Path(out)
    if folder.exists() and any(folder.iterdir()):
        raise OutputExistsError(f"{folder}: refusing to write a model folder into a non-empty folder")
    processor = _processor(family)
    config = real_config(repo_id)
    tok = processor.tokenizer
    text = config.get_text_config()
    if family.startswith("qwen"):
        for key, value in _qwen_ids(processor).items():
            setattr(config, key, value)
        text.bos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
        text.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    elif family.startswith("paligemma"):
        config.image_token_index = tok.convert_tokens_to_ids("<image>")
        config.image_token_id = config.image_token_index
        text.bos_token_id, text.eos_token_id = tok.bos_token_id, tok.eos_token_id
    else:
        text.bos_token_id, text.eos_token_id = tok.bos_token_id, tok.eos_token_id
    text.pad_token_id = tok.pad_token_id
    if len(tok) > text.vocab_size:
        raise ConfigError(f"{repo_id}: the tiny tokenizer ({len(tok)} ids) exceeds the real vocabulary")
    folder.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(folder)
    config.save_pretrained(folder)
    _generation_config(family, processor).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------
# The Hugging Face cache layout
# ---------------------------------------------------------------------------------------------------------


def hub_cache_dir(hf_home: str | Path | None = None) -> Path:
    """The hub cache folder huggingface_hub reads: `hf_home`/hub if given, else $HF_HUB_CACHE, else
    $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub or ~/.cache/huggingface/hub (read at call time)."""
    if hf_home is not None:
        return Path(hf_home) / "hub"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "huggingface" / "hub"


def content_hash(folder: str | Path) -> str:
    """A 40-hex revision derived from the relative paths and bytes of every file under `folder`."""
    root = Path(folder)
    digest = hashlib.sha1()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _repo_dir(hub: Path, repo_id: str) -> Path:
    """`<hub cache>/models--ORG--NAME`."""
    if repo_id.count("/") != 1:
        raise ConfigError(f"expected a Hub model id ORG/NAME, got {repo_id!r}")
    return hub / ("models--" + repo_id.replace("/", "--"))


def cached_snapshot(repo_id: str, hf_home: str | Path | None = None) -> Path | None:
    """The snapshot folder `refs/main` points to for `repo_id` in the cache, or None."""
    repo = _repo_dir(hub_cache_dir(hf_home), repo_id)
    ref = repo / "refs" / "main"
    if not ref.is_file():
        return None
    snapshot = repo / "snapshots" / ref.read_text(encoding="utf-8").strip()
    return snapshot if snapshot.is_dir() else None


def install_in_hf_cache(
    folder: str | Path, repo_id: str, hf_home: str | Path | None = None, revision_hash: str | None = None
) -> Path:
    """Copy `folder` to `<hub cache>/models--ORG--NAME/snapshots/<hash>/` and point `refs/main` at it.

    With HF_HUB_OFFLINE=1, `from_pretrained(repo_id)` then resolves to the copy. The hash defaults to
    `content_hash(folder)`, so the same content always lands in the same snapshot. Returns the snapshot path.
    """
    source = Path(folder)
    if not (source / "config.json").is_file():
        raise ConfigError(f"{source}: not a model folder (no config.json)")
    revision = revision_hash or content_hash(source)
    if len(revision) != 40 or any(c not in "0123456789abcdef" for c in revision):
        raise ConfigError(f"revision hash must be 40 lowercase hex digits, got {revision!r}")
    repo = _repo_dir(hub_cache_dir(hf_home), repo_id)
    snapshot = repo / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=snapshot.parent))
    shutil.copytree(source, staging, dirs_exist_ok=True)
    staging.rename(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision, encoding="utf-8")
    return snapshot


def _tiny_marker(snapshot: Path) -> dict[str, Any] | None:
    """The build record of a tiny model folder, or None for any other model."""
    marker = snapshot / TINY_MARKER
    if not marker.is_file():
        return None
    info: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8"))
    return info


def install_tiny_backbones(
    hf_home: str | Path | None = None,
    families: list[str] | tuple[str, ...] | None = None,
    ids: list[str] | tuple[str, ...] | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Install tiny models under the paper's backbone ids (all nine by default); {Hub id: snapshot folder}.

    `hf_home` defaults to $HF_HUB_CACHE or $HF_HOME; with neither set it is required (never the default cache).
    `families` keeps only the ids of those families; `ids` picks some of the nine ids. Each id gets its own
    build, laid out like that release (Qwen2.5-VL-3B ties its lm_head, 7B does not). An id already holding the
    same tiny build is left as is, an older tiny build is replaced, and an id holding anything else (a real
    download) is an error, never overwritten.
    """
    if hf_home is None and not (os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME")):
        raise ConfigError(
            f"tiny-models: --hf-home (or HF_HOME) is required: random weights under the real Hub ids must never "
            f"land in the default cache {hub_cache_dir()}, where from_pretrained would later load them silently"
        )
    chosen = list(ids) if ids is not None else list(PAPER_BACKBONES)
    for repo_id in chosen:
        if repo_id not in PAPER_BACKBONES:
            raise ConfigError(f"{repo_id!r} is not one of the paper backbones: {', '.join(PAPER_BACKBONES)}")
    if families is not None:
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise ConfigError(f"unknown VLM families {unknown}; choose from {', '.join(FAMILIES)}")
        chosen = [i for i in chosen if PAPER_BACKBONES[i] in families]
    installed: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="vlm4vla-tiny-") as scratch:
        for repo_id in chosen:
            family = PAPER_BACKBONES[repo_id]
            existing = cached_snapshot(repo_id, hf_home)
            if existing is not None:
                marker = _tiny_marker(existing)
                if marker is None:
                    raise OutputExistsError(
                        f"{existing}: {repo_id} is already in this HF cache and is not a tiny build; "
                        "point HF_HOME at another folder"
                    )
                if marker == tiny_marker(family, seed, repo_id):
                    installed[repo_id] = existing
                    continue
                shutil.rmtree(existing)
            built = build_tiny_model(family, Path(scratch) / repo_id.replace("/", "--"), seed=seed, repo_id=repo_id)
            installed[repo_id] = install_in_hf_cache(built, repo_id, hf_home=hf_home)
    return installed
