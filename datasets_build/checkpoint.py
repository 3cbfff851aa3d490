"""The checkpoint-folder contract between `sft` (writes) and `vla` (reads), which never import each other.

A checkpoint folder holds a `save_pretrained` model (safetensors), its processor, the resolved
recipe that produced it and a README model card; `from_pretrained` loads it with no project code. A model
trained on FAST action tokens also holds the FAST tokenizer it used, in `fast_tokenizer/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datasets_build.errors import DataError

RECIPE_FILE = "recipe.yaml"
FAST_TOKENIZER_DIR = "fast_tokenizer"  # the FAST tokenizer a checkpoint was trained with (its answers decode by it)
CARD_FILE = "README.md"
CONFIG_FILE = "config.json"
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


@dataclass(frozen=True)
class CheckpointFolder:
    """A validated checkpoint folder: where its parts are."""

    root: Path
    weights: list[Path] = field(default_factory=list)
    has_processor: bool = False
    recipe: Path | None = None
    card: Path | None = None

    @classmethod
    def inspect(cls, root: str | Path, require_recipe: bool = True) -> CheckpointFolder:
        """Check `root` follows the contract; DataError names the missing part."""
        root = Path(root)
        if not root.is_dir():
            raise DataError("checkpoint folder does not exist", root)
        if not (root / CONFIG_FILE).is_file():
            raise DataError("missing model config", root, CONFIG_FILE)
        weights = sorted(p for pattern in WEIGHT_PATTERNS for p in root.glob(pattern))
        if not weights:
            raise DataError("no safetensors weights (model.safetensors or sharded)", root, "weights")
        has_processor = any((root / name).is_file() for name in PROCESSOR_FILES)
        if not has_processor:
            raise DataError(f"no processor files (one of {PROCESSOR_FILES})", root, "processor")
        recipe = root / RECIPE_FILE
        if require_recipe and not recipe.is_file():
            raise DataError("missing the resolved recipe", root, RECIPE_FILE)
        card = root / CARD_FILE
        return cls(
            root=root,
            weights=weights,
            has_processor=has_processor,
            recipe=recipe if recipe.is_file() else None,
            card=card if card.is_file() else None,
        )
