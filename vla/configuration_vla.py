"""Typed configs of the VLA stage: the policy (`VLAConfig`), its data (`VLADataConfig`), a run (`VLATrainConfig`).

A recipe's `vla_train` stage maps onto `VLATrainConfig` one to one (unknown keys are errors). Defaults follow the
paper's CALVIN setup (paper-notes.md, "Training setups"): chunk 10, lr 2e-5, batch 128, 30k steps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.precision import parse_dtype
from vla.backbones.base import ATTN_IMPLEMENTATIONS, BASE_IMAGE_SIZE, PROMPT_SCHEMES, BackboneOptions
from vla.normalization import MODES

VLA_CONFIG_FILE = "vla_config.json"


@dataclass
class VLAConfig:
    """The policy: which VLM, how it is prompted, the head, the loss, the normalisation and what is frozen."""

    backbone: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # Hub id or folder (an SFT checkpoint is a folder or id)
    revision: str | None = None
    chunk_size: int = 10  # CALVIN 10, Bridge/LIBERO 4
    head_width: int = 0  # 0 = Table 9 rule max(1024, hidden / 2)
    prompt_scheme: str = "full"  # Qwen: "full" (Scheme 1, chat format) or "short" (Scheme 2)
    image_size: int = BASE_IMAGE_SIZE  # first resize (A.2.4 ablation); the processor then uses its own size
    normalization: str = "q01_q99"  # or "mean_std"
    huber_delta: float = 1.0
    arm_loss_weight: float = 1.0
    gripper_loss_weight: float = 1.0
    freeze_vision_tower: bool = False  # Table 3
    freeze_word_embeddings: bool = False  # the <ActionQuery> embedding stays trainable
    freeze_llm: bool = False
    from_scratch: bool = False  # Table 8: same architecture, random weights
    gradient_checkpointing: bool = False  # recompute decoder layers / vision blocks in backward (less memory)
    # auto (sdpa; eager for PaliGemma 2, whose soft-capping has no sdpa path), sdpa, eager, flash_attention_2 (GPU,
    # needs the flash-attn extra)
    attn_implementation: str = "auto"

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.normalization not in MODES:
            raise ConfigError(f"normalization must be one of {MODES}, got {self.normalization!r}")
        if self.prompt_scheme not in PROMPT_SCHEMES:
            raise ConfigError(f"prompt_scheme must be one of {PROMPT_SCHEMES}, got {self.prompt_scheme!r}")
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ConfigError(
                f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {self.attn_implementation!r}"
            )

    def backbone_options(self) -> BackboneOptions:
        """The options the backbone adapter needs."""
        return BackboneOptions(prompt_scheme=self.prompt_scheme, image_size=self.image_size)

    def save(self, folder: str | Path) -> Path:
        """Write `vla_config.json` into a checkpoint folder."""
        path = Path(folder) / VLA_CONFIG_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> VLAConfig:
        """Read `vla_config.json` from a checkpoint folder (one-line DataError if absent or malformed)."""
        path = Path(folder) / VLA_CONFIG_FILE
        if not path.is_file():
            raise DataError("not a VLA checkpoint (no VLA config)", folder, VLA_CONFIG_FILE)
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"malformed VLA config ({exc})", path) from exc


@dataclass
class VLADataConfig:
    """Robot data: any `datasets_build` source, one camera of the current frame, no proprioception."""

    source: str = "demo"  # calvin, rlds, libero, lerobot, demo
    path: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the source
    camera: str = ""  # "" = the episode's first camera
    stats: str = ""  # stats.json of `python -m datasets_build stats`; "" = compute it from the source
    shuffle_buffer: int = 2000
    num_workers: int = 2


@dataclass
class VLATrainConfig:
    """One training run (`python -m vla train`, recipe stage `vla_train`)."""

    out: str = ""
    model: VLAConfig = field(default_factory=VLAConfig)
    data: VLADataConfig = field(default_factory=VLADataConfig)
    steps: int = 30000
    batch_size: int = 128  # global batch = batch_size; each process takes batch_size / world_size
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler: str = "constant"  # any transformers scheduler name (constant, cosine, linear, ...)
    grad_clip: float = 1.0
    gradient_accumulation_steps: int = 1
    save_every: int = 5000  # every saved checkpoint is kept (the checkpoint sweep evaluates them all)
    log_every: int = 10
    seed: int = 0
    mixed_precision: str = "auto"  # compute dtype: auto (bf16 on GPU, no on CPU), no, bf16, fp16
    # Trainable parameters are always fp32 masters. Frozen ones: auto = bf16 under bf16 compute with one process
    # or DDP (FSDP and DeepSpeed need one dtype), fp32 otherwise; or fp32 / bf16.
    frozen_dtype: str = "auto"
    save_dtype: str = "bf16"  # weights of each checkpoint's from_pretrained folder (train_state keeps fp32)
    report_to: str = "none"  # none, tensorboard, wandb
    resume: bool = False  # continue from the newest checkpoint in `out`
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("out: the output folder is required")
        if self.steps < 1 or self.batch_size < 1 or self.save_every < 1:
            raise ConfigError("steps, batch_size and save_every must be >= 1")
        if self.report_to not in ("none", "tensorboard", "wandb"):
            raise ConfigError(f"report_to must be none, tensorboard or wandb, got {self.report_to!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.frozen_dtype != "auto":
            parse_dtype(self.frozen_dtype, "frozen_dtype")
        parse_dtype(self.save_dtype, "save_dtype")
