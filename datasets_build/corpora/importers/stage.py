"""Recipe stage `import_corpus`: a published corpus (or general VQA) into shards, by format.

The same importers as `python -m datasets_build import FORMAT`, as one typed config a recipe maps onto: a
paper recipe can import the published RoboPoint / ViCA-332k / Robo2VLM / ShareRobot release where it would
otherwise build the corpus from robot data, and a mix can take general VQA from LLaVA json or a Hub dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datasets_build.errors import ConfigError

IMPORT_FORMATS = ("robopoint-json", "vica-json", "robo2vlm-parquet", "sharerobot-json", "llava-json", "hf-dataset")
_NEEDS_IMAGE_ROOT = ("robopoint-json", "sharerobot-json", "llava-json")
EMBODIED_IMAGE_SIZE = 224  # embodied corpora are stored at the VLA's input size unless asked otherwise


@dataclass
class ImportConfig:
    """Which published corpus, from where, into which folder (fields unused by a format are left empty)."""

    format: str = "robopoint-json"
    input: str = ""  # json / parquet file or folder; for hf-dataset a Hub id or local dataset folder
    out: str = ""
    image_root: str | None = None  # robopoint-json, sharerobot-json, llava-json
    video_root: str | None = None  # vica-json
    num_frames: int = 8  # vica-json: frames sampled per clip
    kind: str = "auto"  # sharerobot-json: auto, affordance, trajectory, planning
    split: str = "train"  # hf-dataset
    messages_column: str = "messages"  # hf-dataset
    images_column: str | None = "images"  # hf-dataset
    dataset: str | None = None  # llava-json / hf-dataset: the source name recorded per sample
    image_size: int | None = None  # None: 224 for embodied corpora, full size for general VQA
    max_samples: int | None = None
    skip_bad: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.format not in IMPORT_FORMATS:
            raise ConfigError(f"format: must be one of {list(IMPORT_FORMATS)}, got {self.format!r}")
        if not self.input or not self.out:
            raise ConfigError("input and out are required")
        if self.format in _NEEDS_IMAGE_ROOT and not self.image_root:
            raise ConfigError(f"image_root: required for format {self.format}")
        if self.format == "vica-json" and not self.video_root:
            raise ConfigError("video_root: required for format vica-json")


def import_corpus(cfg: ImportConfig) -> dict[str, Any]:
    """Run the importer of `cfg.format`; returns its summary (samples, shards, ...)."""
    general = cfg.format in ("llava-json", "hf-dataset")
    size = cfg.image_size if general or cfg.image_size is not None else EMBODIED_IMAGE_SIZE
    common: dict[str, Any] = {"image_size": size, "max_samples": cfg.max_samples, "overwrite": cfg.overwrite}
    if cfg.format == "robo2vlm-parquet":
        from datasets_build.corpora.importers.robo2vlm_parquet import import_robo2vlm_parquet

        return import_robo2vlm_parquet(cfg.input, cfg.out, **common)
    if cfg.format == "robopoint-json":
        from datasets_build.corpora.importers.robopoint_json import import_robopoint_json

        return import_robopoint_json(cfg.input, str(cfg.image_root), cfg.out, **common)
    if cfg.format == "vica-json":
        from datasets_build.corpora.importers.vica_json import import_vica_json

        return import_vica_json(
            cfg.input, str(cfg.video_root), cfg.out, num_frames=cfg.num_frames, skip_bad=cfg.skip_bad, **common
        )
    if cfg.format == "sharerobot-json":
        from datasets_build.corpora.importers.sharerobot_json import import_sharerobot_json

        return import_sharerobot_json(
            cfg.input, str(cfg.image_root), cfg.out, kind=cfg.kind, skip_bad=cfg.skip_bad, **common
        )
    if cfg.format == "llava-json":
        from datasets_build.corpora.importers.llava_json import import_llava_json

        return import_llava_json(
            cfg.input, str(cfg.image_root), cfg.out, dataset=cfg.dataset, skip_bad=cfg.skip_bad, **common
        )
    from datasets_build.corpora.importers.hf_dataset import import_hf_dataset

    return import_hf_dataset(
        cfg.input, cfg.split, cfg.out, cfg.messages_column, cfg.images_column or None,
        dataset=cfg.dataset, skip_bad=cfg.skip_bad, progress=False, **common,
    )  # fmt: skip
