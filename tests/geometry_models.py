"""Tiny, randomly initialised OWLv2, SAM and Depth Anything models installed under their real Hub ids.

The estimated-geometry path (`datasets_build.geometry.estimated`) loads its models by Hub id through the
Hugging Face cache. Tests cannot download the real checkpoints, so this module builds the same model
classes from small configs (+ processors and a locally trained CLIP BPE tokenizer), saves them in the
cache layout `$HF_HOME/hub/models--ORG--NAME/snapshots/<hex>/` with `refs/main`, and then
`from_pretrained("google/owlv2-base-patch16-ensemble")` resolves offline. Weights are random: outputs
have the right shapes and types, not meaning.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import (
    CLIPTokenizer,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTImageProcessor,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    Owlv2Processor,
    SamConfig,
    SamImageProcessor,
    SamMaskDecoderConfig,
    SamModel,
    SamProcessor,
    SamPromptEncoderConfig,
    SamVisionConfig,
)

DETECTOR_ID = "google/owlv2-base-patch16-ensemble"
SEGMENTER_ID = "facebook/sam-vit-base"
DEPTH_ID = "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf"
DEPTH_INIT_RANGE = 0.14
TINY_MAX_DEPTH = 3  # metres: the tiny metric head outputs sigmoid(x) * max_depth

# Words the tiny BPE is trained on, so that object phrases take a few tokens each (16 at most in OWL).
_TOKENIZER_TEXT = [
    "a photo of a red green blue yellow pink purple orange white black block cube",
    "spoon towel carrot pot pan bowl plate tray cup mug drawer cabinet door handle lid",
    "sponge cloth fork knife bottle can box basket sink stove microwave ketchup butter",
    "the top of left right front back middle table counter shelf light switch button",
]
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"


def _clip_tokenizer(max_length: int) -> CLIPTokenizer:
    """A CLIP tokenizer with a tiny trained byte-level BPE; BOS/EOS get the two HIGHEST ids.

    OWL pools the text at `input_ids.argmax()` (the EOS position) and masks a query whose first id is
    0, as in the real vocabulary where "!" (the pad) is 0 and the specials come last.
    """
    backend = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = BpeTrainer(vocab_size=700, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False)
    backend.train_from_iterator(_TOKENIZER_TEXT, trainer)
    state = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    # CLIP's order: the 256 bytes, the same as word ends, the merged tokens, then BOS and EOS
    ordered = alphabet + [c + "</w>" for c in alphabet]
    known = set(ordered)
    ordered += [t for t, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1]) if t not in known]
    vocab = {token: i for i, token in enumerate(ordered)}
    vocab[_BOS] = len(vocab)
    vocab[_EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=max_length)


def build_owlv2(folder: Path, seed: int = 0) -> None:
    """Save a tiny Owlv2ForObjectDetection + Owlv2Processor (64 px images, 16 px patches) into `folder`."""
    torch.manual_seed(seed)
    tokenizer = _clip_tokenizer(max_length=16)
    image_size = 64
    config = Owlv2Config(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "pad_token_id": 0,
            "bos_token_id": tokenizer.convert_tokens_to_ids(_BOS),
            "eos_token_id": tokenizer.convert_tokens_to_ids(_EOS),
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 16,
        },
        projection_dim=32,
    )
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        # random heads saturate: boxes collapse to zero width and every score to 1. Damp the last
        # layers so boxes stay near OWL's per-patch prior (box_bias) and scores spread out.
        model.box_head.dense2.weight.mul_(0.005)
        model.box_head.dense2.bias.zero_()
        for layer in (model.class_head.logit_scale, model.class_head.logit_shift):
            layer.weight.mul_(0.05)
            layer.bias.zero_()
    image_processor = Owlv2ImageProcessor(size={"height": image_size, "width": image_size})
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_sam(folder: Path, seed: int = 0) -> None:
    """Save a tiny SamModel + SamProcessor (64 px input, 8 px patches) into `folder`."""
    torch.manual_seed(seed)
    image_size, patch, channels = 64, 8, 32
    vision = SamVisionConfig(
        hidden_size=32,
        output_channels=channels,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        window_size=4,
        global_attn_indexes=[1],
        num_pos_feats=channels // 2,  # the prompt encoder's positional features must match the neck width
        mlp_dim=64,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=channels, image_size=image_size, patch_size=patch, mask_input_channels=4, num_point_embeddings=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=channels, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32
    )
    config = SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    model = SamModel(config).eval()
    image_processor = SamImageProcessor(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": image_size // 4},
        mask_pad_size={"height": image_size // 4, "width": image_size // 4},
    )
    processor = SamProcessor(image_processor=image_processor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_depth_anything(folder: Path, seed: int = 0) -> None:
    """Save a tiny metric DepthAnythingForDepthEstimation + DPT image processor (56 px) into `folder`.

    With the default init (0.02) the metric head outputs a constant (max_depth / 2); with 0.5 (this
    config, 4 layers) the sigmoid saturates and ~80 % of pixels come out at 0 m. 0.14 gives depths spread
    over roughly 0.1-2.6 m on demo frames, none at 0.
    """
    torch.manual_seed(seed)
    image_size = 56
    backbone = Dinov2Config(
        image_size=image_size,
        patch_size=14,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
        initializer_range=DEPTH_INIT_RANGE,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        depth_estimation_type="metric",
        max_depth=TINY_MAX_DEPTH,
        initializer_range=DEPTH_INIT_RANGE,
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    image_processor = DPTImageProcessor(
        size={"height": image_size, "width": image_size},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)


def install_in_cache(repo_id: str, hf_home: Path) -> Path:
    """The snapshot folder of `repo_id` in the hub cache under `hf_home`, with `refs/main` pointing to it."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(f"tiny:{repo_id}".encode()).hexdigest()
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


BUILDERS = {DETECTOR_ID: build_owlv2, SEGMENTER_ID: build_sam, DEPTH_ID: build_depth_anything}
ROLES = {"detector": DETECTOR_ID, "segmenter": SEGMENTER_ID, "depth": DEPTH_ID}


def install_tiny_geometry_models(hf_home: Path | None = None) -> dict[str, str]:
    """Build the three tiny models into the HF cache (`$HF_HOME` by default); {role: Hub id} (EstimatedOptions fields).

    Idempotent: a snapshot that already holds a config is kept.
    """
    home = Path(hf_home) if hf_home is not None else Path(os.environ["HF_HOME"])
    for repo_id, build in BUILDERS.items():
        snapshot = install_in_cache(repo_id, home)
        if not (snapshot / "config.json").is_file():
            build(snapshot)
    return dict(ROLES)
