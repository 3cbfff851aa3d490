"""`SFTTrainConfig`: one post-training run (base model, shard sets, freezing, LoRA, FAST tokens, omni head, trainer).

A recipe YAML maps onto it one to one (unknown keys are errors); the `trainer` fields map onto TRL's
`SFTConfig` in `sft.train`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets_build.errors import ConfigError
from datasets_build.precision_options import check_attn_implementation, check_dtype_name

LORA_PRESETS = ("llm", "llm_vision")
REPORT_TO = ("none", "tensorboard", "wandb")


@dataclass
class ShardSource:
    """One shard set (folder, glob or Hub dataset id) and its sampling weight in the mix."""

    path: str = ""
    weight: float = 1.0


@dataclass
class FreezeConfig:
    """Parameter groups kept fixed during training (paths from `datasets_build.vlm_families.MODULE_PATHS`).

    In Qwen-VL the projector sits inside the vision tower: freezing `vision_tower` freezes it too.
    `modules` freezes extra dotted module paths; a path the model lacks is an error.
    """

    vision_tower: bool = False
    projector: bool = False
    word_embeddings: bool = False
    llm: bool = False
    lm_head: bool = False
    modules: list[str] = field(default_factory=list)


@dataclass
class LoraSettings:
    """PEFT LoRA: `preset` picks the target Linear layers (`llm` or `llm_vision`); merged into the saved model."""

    enabled: bool = False
    preset: str = "llm"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


@dataclass
class FastSettings:
    """FAST action tokens: `tokenizer` is a `fit-fast` folder; `mapping` is `new_tokens` or `vocab_tail`."""

    tokenizer: str = ""
    mapping: str = "new_tokens"


@dataclass
class TrainerSettings:
    """The fields passed on to TRL's `SFTConfig` (see `sft.train.sft_arguments`)."""

    max_steps: int = 100
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "cosine"
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 10
    report_to: str = "none"
    seed: int = 0
    bf16: bool = False
    activation_checkpointing: bool = False
    dataloader_num_workers: int = 0


@dataclass
class OmniHeadConfig:
    """Size of the head and its diffusion schedule (the `omni` section of an SFT recipe)."""

    enabled: bool = False
    num_queries: int = 16
    image_size: int = 64  # targets are resized to this square size
    cond_dim: int = 256  # denoiser cross-attention width
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    attention_head_dim: int = 8
    train_timesteps: int = 1000
    sample_steps: int = 25
    weight: float = 1.0  # diffusion loss weight relative to the text loss
    depth_far: float = 5.0  # metres mapped to 1.0 when depth targets become denoiser images

    def check(self) -> None:
        """One-line ConfigError on impossible sizes."""
        if self.num_queries < 1 or self.image_size < 8 or self.cond_dim < 8:
            raise ConfigError("omni: num_queries >= 1, image_size >= 8 and cond_dim >= 8 are required")
        if self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ConfigError("omni: image_size must be divisible by 2^(len(block_out_channels) - 1)")
        if any(c % self.attention_head_dim for c in self.block_out_channels):
            raise ConfigError("omni: every block_out_channels entry must be a multiple of attention_head_dim")


@dataclass
class SFTTrainConfig:
    """One SFT run: `model` (Hub id or folder) trained on `data` into `output_dir`.

    `output_dir/checkpoints/checkpoint-N` hold the trainer state (resume); `output_dir/final` is the
    checkpoint folder the VLA stage loads. `resume` continues from the last checkpoint; `overwrite`
    clears an existing `output_dir`.
    """

    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    revision: str | None = None
    data: list[ShardSource] = field(default_factory=list)
    output_dir: str = "runs/sft"
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    fast: FastSettings = field(default_factory=FastSettings)
    trainer: TrainerSettings = field(default_factory=TrainerSettings)
    omni: OmniHeadConfig = field(default_factory=OmniHeadConfig)  # the omni-generation head (off by default)
    shuffle_buffer: int = 256
    verify_shards: bool = True
    resume: bool = False
    overwrite: bool = False
    # Precision: trainable parameters are fp32 masters whatever the checkpoint stores (compute: `trainer.bf16`).
    # Frozen ones: auto = bf16 under bf16 compute on one process or DDP (FSDP / DeepSpeed need one dtype), else
    # fp32; or fp32 / bf16. `save_dtype`: weights of the final from_pretrained folder (periodic checkpoints, the
    # resume state, keep fp32).
    frozen_dtype: str = "auto"
    save_dtype: str = "bf16"
    attn_implementation: str = "auto"  # auto (the family's default: sdpa), sdpa, eager, flash_attention_2 (GPU)

    def __post_init__(self) -> None:
        if self.frozen_dtype != "auto":
            check_dtype_name(self.frozen_dtype, "frozen_dtype")
        check_dtype_name(self.save_dtype, "save_dtype")
        check_attn_implementation(self.attn_implementation)


@dataclass
class EvaluateConfig:
    """Which checkpoint to score on which shard sets; `out` is a folder for eval.json / eval.md (optional)."""

    checkpoint: str = ""
    data: list[str] = field(default_factory=list)
    max_samples: int | None = None
    max_new_tokens: int = 64
    out: str | None = None
    verify_shards: bool = True
    fast_tokenizer: str | None = None  # FAST tokenizer folder or Hub id; None = the checkpoint's or the corpus's
