"""Tiny VLMs of every paper family: build, save, reload (folder and real Hub id, offline), forward, generate.

Also pins the real backbones' published hyper-parameters (`real_config`) against the paper's Table 9 counts,
and the module paths the VLA/SFT stages freeze.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from datasets_build.errors import ConfigError, OutputExistsError
from datasets_build.tiny_models import (
    QWEN_BASE_VOCAB,
    TINY_LAYERS,
    TINY_MARKER,
    build_tiny_model,
    cached_snapshot,
    content_hash,
    install_in_hf_cache,
    install_tiny_backbones,
)
from datasets_build.vlm_families import (
    FAMILIES,
    IMAGE_TOKENS_224,
    LAYER_CLASSES,
    MODULE_PATHS,
    PAPER_BACKBONES,
    PAPER_PARAMS_M,
    REAL_LAYOUTS,
    family_of,
    real_config,
)

INSTRUCTION = "pick up the red block"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    """Each family built once (seed 0): {family: (folder, seconds the build took)}."""
    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for family in FAMILIES:
        start = time.perf_counter()
        folder = build_tiny_model(family, root / family, seed=0)
        out[family] = (folder, time.perf_counter() - start)
    return out


@pytest.fixture(scope="module")
def hub_ids() -> dict[str, Path]:
    """The nine paper backbone ids installed in the session's temporary HF cache (tests/conftest.py)."""
    return install_tiny_backbones()


def _image() -> Image.Image:
    """A 224x224 RGB test image with some structure."""
    pixels = torch.arange(224 * 224 * 3, dtype=torch.int64).reshape(224, 224, 3) % 251
    return Image.fromarray(pixels.to(torch.uint8).numpy(), mode="RGB")


def _inputs(family: str, processor: Any) -> Any:
    """Processor inputs for one image and a short prompt, the way each family is prompted."""
    image = _image()
    if family.startswith("qwen"):
        messages = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": f"What action should the robotic arm take to {INSTRUCTION}?"},
                ],
            }
        ]
        return processor.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt"
        )
    if family.startswith("paligemma"):
        return processor(text="<image>" + INSTRUCTION, images=image, return_tensors="pt")
    return processor(text=INSTRUCTION, images=image, return_tensors="pt")


def _image_token_count(family: str, processor: Any, inputs: Any) -> int:
    """How many positions of the sequence the image fills."""
    if family == "kosmos2":
        return int(inputs["image_embeds_position_mask"].sum())
    token = "<|image_pad|>" if family.startswith("qwen") else "<image>"
    return int((inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids(token)).sum())


def _forward_and_generate(family: str, processor: Any, model: Any) -> None:
    """One forward pass (logits (1, seq, vocab)) and a greedy generate of 3 new tokens."""
    inputs = _inputs(family, processor)
    assert _image_token_count(family, processor, inputs) == IMAGE_TOKENS_224[family]
    with torch.no_grad():
        logits = model(**inputs).logits
    seq = inputs["input_ids"].shape[1]
    assert logits.shape == (1, seq, model.config.get_text_config().vocab_size)
    assert torch.isfinite(logits).all()
    generated = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert generated.shape == (1, seq + 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_build_reload_forward_generate(built: dict[str, tuple[Path, float]], family: str) -> None:
    folder, seconds = built[family]
    assert seconds < 10.0, f"{family} took {seconds:.2f} s to build"  # a sanity bound (shared 2-core machines)
    assert (folder / "model.safetensors").is_file()
    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    # Small as promised: well under 2M parameters; the vocabulary covers the tokenizer (padded as the release pads).
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert model.config.get_text_config().vocab_size >= len(processor.tokenizer)
    assert family_of(model.config) == family
    _forward_and_generate(family, processor, model)


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizers_split_instructions_into_words(built: dict[str, tuple[Path, float]], family: str) -> None:
    tokenizer = AutoProcessor.from_pretrained(built[family][0]).tokenizer
    pieces = tokenizer.tokenize("put the carrot on the plate")
    assert len(pieces) == 6, pieces
    assert tokenizer.decode(
        tokenizer("put the carrot on the plate", add_special_tokens=False)["input_ids"]
    ).strip() == ("put the carrot on the plate")


def test_family_special_tokens(built: dict[str, tuple[Path, float]]) -> None:
    qwen = AutoProcessor.from_pretrained(built["qwen2_5_vl"][0]).tokenizer
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|endoftext|>"):
        assert qwen.tokenize(token) == [token]
        assert qwen.decode([qwen.convert_tokens_to_ids(token)]) == token
    assert qwen.eos_token == "<|im_end|>"
    assert qwen.pad_token == "<|endoftext|>"

    gemma = AutoProcessor.from_pretrained(built["paligemma"][0]).tokenizer
    assert [gemma.pad_token_id, gemma.eos_token_id, gemma.bos_token_id] == [0, 1, 2]
    assert gemma.tokenize("<loc0512><seg127>") == ["<loc0512>", "<seg127>"]
    assert gemma.tokenize("日") == ["<0xE6>", "<0x97>", "<0xA5>"]  # byte fallback, never <unk>

    kosmos = AutoProcessor.from_pretrained(built["kosmos2"][0]).tokenizer
    assert [kosmos.bos_token_id, kosmos.pad_token_id, kosmos.eos_token_id, kosmos.unk_token_id] == [0, 1, 2, 3]
    assert kosmos.tokenize("<phrase><patch_index_0042>") == ["<phrase>", "<patch_index_0042>"]


def test_paligemma_prompt_layout(built: dict[str, tuple[Path, float]]) -> None:
    """Image tokens, then <bos>, the text and a trailing newline (the prefix the real processor builds)."""
    processor = AutoProcessor.from_pretrained(built["paligemma"][0])
    ids = processor(text="<image>" + INSTRUCTION, images=_image(), return_tensors="pt")["input_ids"][0].tolist()
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:256] == ["<image>"] * 256
    assert tokens[256] == "<bos>"
    assert processor.tokenizer.decode(ids[257:]) == INSTRUCTION + "\n"


def test_same_seed_same_bytes_other_seed_other_weights(built: dict[str, tuple[Path, float]], tmp_path: Path) -> None:
    for family in FAMILIES:
        again = build_tiny_model(family, tmp_path / family, seed=0)
        assert content_hash(again) == content_hash(built[family][0]), family
    other = build_tiny_model("qwen3_vl_moe", tmp_path / "seed1", seed=1)
    first = load_file(built["qwen3_vl_moe"][0] / "model.safetensors")
    second = load_file(other / "model.safetensors")
    assert first.keys() == second.keys()
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_build_refuses_unknown_family_and_non_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown VLM family"):
        build_tiny_model("llava", tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        build_tiny_model("kosmos2", tmp_path / "busy")


@pytest.mark.parametrize("family", FAMILIES)
def test_module_paths(built: dict[str, tuple[Path, float]], family: str) -> None:
    model = AutoModelForImageTextToText.from_pretrained(built[family][0])
    paths = MODULE_PATHS[family]
    parts = {name: model.get_submodule(path) for name, path in asdict(paths).items()}
    assert parts["word_embeddings"] is model.get_input_embeddings()
    assert parts["lm_head"] is model.get_output_embeddings()
    # The vision tower and the language model are disjoint and together with the projector and the head
    # hold every parameter of the model.
    groups = [paths.vision_tower, paths.language_model, paths.lm_head]
    if not paths.projector.startswith(paths.vision_tower + "."):
        groups.append(paths.projector)
    covered = {id(p) for g in groups for p in model.get_submodule(g).parameters()}
    assert covered == {id(p) for p in model.parameters()}
    vision = {id(p) for p in parts["vision_tower"].parameters()}
    assert vision.isdisjoint(id(p) for p in parts["language_model"].parameters())


def test_hub_ids_resolve_offline(hub_ids: dict[str, Path]) -> None:
    assert set(hub_ids) == set(PAPER_BACKBONES)
    for repo_id, snapshot in hub_ids.items():
        assert cached_snapshot(repo_id) == snapshot
        assert AutoConfig.from_pretrained(repo_id).model_type == real_config(repo_id).model_type
    # Each id has its own build in its own release's layout (Qwen3-VL-2B ties its lm_head, 8B does not).
    assert len({snapshot.name for snapshot in hub_ids.values()}) == len(hub_ids)
    for repo_id, snapshot in hub_ids.items():
        assert json.loads((snapshot / TINY_MARKER).read_text())["layout"] == repo_id
    with pytest.raises(OSError):
        AutoConfig.from_pretrained("Qwen/Qwen2.5-VL-72B-Instruct")


@pytest.mark.parametrize(
    "repo_id",
    [
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen3-VL-30B-A3B-Instruct",
        "google/paligemma2-3b-pt-224",
        "microsoft/kosmos-2-patch14-224",
    ],
)
def test_load_by_hub_id_and_run(hub_ids: dict[str, Path], repo_id: str) -> None:
    processor = AutoProcessor.from_pretrained(repo_id)
    model = AutoModelForImageTextToText.from_pretrained(repo_id).eval()
    _forward_and_generate(PAPER_BACKBONES[repo_id], processor, model)


def test_install_is_idempotent_and_never_overwrites_real_models(hub_ids: dict[str, Path], tmp_path: Path) -> None:
    again = install_tiny_backbones(ids=["Qwen/Qwen2.5-VL-3B-Instruct"])
    assert again == {"Qwen/Qwen2.5-VL-3B-Instruct": hub_ids["Qwen/Qwen2.5-VL-3B-Instruct"]}
    # A "real" model already in the cache (no tiny marker) is left alone.
    real = tmp_path / "real"
    real.mkdir()
    (real / "config.json").write_text('{"model_type": "paligemma"}')
    home = tmp_path / "hf"
    snapshot = install_in_hf_cache(real, "google/paligemma-3b-pt-224", hf_home=home)
    assert snapshot.name == content_hash(real)
    assert (snapshot / "config.json").is_file()
    with pytest.raises(OutputExistsError, match="not a tiny build"):
        install_tiny_backbones(hf_home=home, families=["paligemma"])
    with pytest.raises(ConfigError, match="not one of the paper backbones"):
        install_tiny_backbones(hf_home=home, ids=["org/unknown"])
    # An older tiny build (here: another seed) is replaced, and its snapshot removed.
    kosmos = "microsoft/kosmos-2-patch14-224"
    first = install_tiny_backbones(hf_home=home, ids=[kosmos])[kosmos]
    second = install_tiny_backbones(hf_home=home, ids=[kosmos], seed=1)[kosmos]
    assert second != first
    assert not first.exists()
    assert cached_snapshot(kosmos, home) == second


def test_qwen_chat_templates_take_trls_generation_path(built: dict[str, tuple[Path, float]]) -> None:
    """The tiny Qwen processors carry the real templates, which TRL swaps for its `{% generation %}` ones."""
    from trl.chat_template_utils import get_training_chat_template, is_chat_template_stop_token_trained

    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Is the drawer open?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "yes"}]},
    ]
    for family in ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe"):
        processor = AutoProcessor.from_pretrained(built[family][0])
        training = get_training_chat_template(processor)
        assert "{% generation %}" in training
        assert is_chat_template_stop_token_trained(processor, chat_template=training)
        out = processor.apply_chat_template(
            messages, chat_template=training, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = out["input_ids"][0] if isinstance(out["input_ids"][0], list) else out["input_ids"]
        mask = out["assistant_masks"][0] if isinstance(out["assistant_masks"][0], list) else out["assistant_masks"]
        answer = processor.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
        assert answer.startswith("yes<|im_end|>"), answer


def test_paligemma_and_kosmos_have_no_chat_template(built: dict[str, tuple[Path, float]]) -> None:
    for family in ("paligemma", "paligemma2", "kosmos2"):
        assert AutoProcessor.from_pretrained(built[family][0]).chat_template is None


PUBLISHED_HIDDEN = {
    "Qwen/Qwen2.5-VL-3B-Instruct": 2048,
    "Qwen/Qwen2.5-VL-7B-Instruct": 3584,
    "Qwen/Qwen3-VL-2B-Instruct": 2048,
    "Qwen/Qwen3-VL-4B-Instruct": 2560,
    "Qwen/Qwen3-VL-8B-Instruct": 4096,
    "Qwen/Qwen3-VL-30B-A3B-Instruct": 2048,
    "google/paligemma-3b-pt-224": 2048,
    "google/paligemma2-3b-pt-224": 2304,
    "microsoft/kosmos-2-patch14-224": 2048,
}


@pytest.mark.parametrize("repo_id", list(PAPER_BACKBONES))
def test_real_config_matches_published_sizes(repo_id: str) -> None:
    config = real_config(repo_id)
    assert config.get_text_config().hidden_size == PUBLISHED_HIDDEN[repo_id]
    assert family_of(config) == PAPER_BACKBONES[repo_id]
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    # The configs reproduce the paper's Table 9 parameter counts (to the million), far inside the 15 % budget.
    assert abs(millions - PAPER_PARAMS_M[repo_id]) / PAPER_PARAMS_M[repo_id] < 0.01, millions
    assert len(model.get_submodule(MODULE_PATHS[family_of(config)].language_model).layers) > 2


def test_real_config_unknown_id() -> None:
    with pytest.raises(ConfigError, match="no stored config"):
        real_config("Qwen/Qwen2-VL-2B-Instruct")


# ---------------------------------------------------------------------------------------------------------
# Real layouts: what the tiny models copy from each release
# ---------------------------------------------------------------------------------------------------------

_DTYPES = {"bfloat16": ("BF16", torch.bfloat16), "float32": ("F32", torch.float32)}


def _tied(model: Any) -> bool:
    return model.get_output_embeddings().weight is model.get_input_embeddings().weight


@pytest.mark.parametrize("repo_id", list(PAPER_BACKBONES))
def test_tiny_model_has_its_releases_layout(hub_ids: dict[str, Path], repo_id: str) -> None:
    """Stored dtype, config dtype, padded embedding rows and tied/untied head, per Hub id."""
    layout = REAL_LAYOUTS[repo_id]
    snapshot = hub_ids[repo_id]
    config = json.loads((snapshot / "config.json").read_text())
    stored, torch_dtype = _DTYPES[layout.dtype]
    assert config["dtype"] == layout.dtype
    with safe_open(str(snapshot / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {stored}  # noqa: SIM118
    tokenizer = AutoProcessor.from_pretrained(repo_id).tokenizer
    model = AutoModelForImageTextToText.from_pretrained(repo_id)  # transformers' default dtype="auto"
    assert model.dtype == torch_dtype  # what a user gets from the real checkpoint too
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows == model.config.get_text_config().vocab_size == layout.padded_rows(len(tokenizer))
    assert rows % layout.pad_multiple == 0
    assert rows / len(tokenizer) >= layout.padding_ratio
    assert (rows > len(tokenizer)) == (layout.embedding_rows > layout.tokenizer_len)
    assert _tied(model) == layout.tied
    assert model.get_output_embeddings().weight.shape[0] == rows
    if repo_id.startswith("Qwen/"):
        # Special and added tokens follow the ordinary vocabulary, as from 151643 on in the real tokenizer, and the
        # rows past the ordinary vocabulary outnumber the 128 ids FAST's vocab_tail reserves (151936 - 151643 =
        # 293): counting the tail from the rows lands on special tokens here as it does on the real models.
        assert tokenizer.vocab_size == QWEN_BASE_VOCAB
        real_ids = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|image_pad|>": 151655}
        for token, real_id in real_ids.items():
            assert tokenizer.convert_tokens_to_ids(token) - QWEN_BASE_VOCAB == real_id - layout.base_vocab
        assert len(tokenizer) - tokenizer.vocab_size == layout.tokenizer_len - layout.base_vocab
        assert rows - tokenizer.vocab_size > 128


@pytest.mark.parametrize("repo_id", list(PAPER_BACKBONES))
def test_real_layouts_match_real_configs(repo_id: str) -> None:
    """REAL_LAYOUTS and real_config agree: rows, tying and dtype of the published configs."""
    layout = REAL_LAYOUTS[repo_id]
    config = real_config(repo_id)
    assert config.get_text_config().vocab_size == layout.embedding_rows
    assert layout.embedding_rows % layout.pad_multiple == 0
    assert layout.base_vocab <= layout.tokenizer_len <= layout.embedding_rows
    assert config.dtype == _DTYPES[layout.dtype][1]
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert _tied(model) == layout.tied
    untied = {"Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-VL-30B-A3B-Instruct"}
    assert (not layout.tied) == (repo_id in untied)


def test_build_refuses_an_id_of_another_family(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a qwen3_vl paper backbone"):
        build_tiny_model("qwen3_vl", tmp_path / "x", repo_id="Qwen/Qwen2.5-VL-3B-Instruct")


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_classes_are_the_repeated_blocks(built: dict[str, tuple[Path, float]], family: str) -> None:
    """LAYER_CLASSES (the FSDP units) name classes of this model, covering every decoder layer and vision block."""
    model = AutoModelForImageTextToText.from_pretrained(built[family][0])
    classes = {type(m).__name__ for m in model.modules()}
    assert set(LAYER_CLASSES[family]) <= classes
    paths = MODULE_PATHS[family]
    decoder = model.get_submodule(paths.language_model).layers
    assert all(type(layer).__name__ in LAYER_CLASSES[family] for layer in decoder)
    units = [m for m in model.get_submodule(paths.vision_tower).modules() if type(m).__name__ in LAYER_CLASSES[family]]
    assert len(units) == TINY_LAYERS
    # transformers' own "never split" classes of the loaded model agree (they also list embeddings and pooling heads)
    assert set(LAYER_CLASSES[family]) <= set(model._no_split_modules)


def test_cli_builds_an_id_in_its_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datasets_build.cli import main

    assert main(["tiny-models", "--out", str(tmp_path), "--ids", "Qwen/Qwen2.5-VL-7B-Instruct"]) == 0
    folder = tmp_path / "Qwen--Qwen2.5-VL-7B-Instruct"
    assert capsys.readouterr().out.strip() == str(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is False
    assert json.loads((folder / TINY_MARKER).read_text())["layout"] == "Qwen/Qwen2.5-VL-7B-Instruct"
