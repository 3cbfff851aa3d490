"""Typed configs of the VLA stage: the policy (`VLAConfig`), its data (`VLADataConfig`), a run (`VLATrainConfig`).

A recipe's `vla_train` stage maps onto `VLATrainConfig` one to one (unknown keys are errors). Defaults follow the
paper's CALVIN setup (paper-notes.md, "Training setups"): chunk 10, lr 2e-5, batch 128, 30k steps.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets_build.errors import ConfigError, DataError
from datasets_build.precision_options import check_attn_implementation, check_dtype_name
from vla.normalization import MODES
from vla.sampling import WINDOW_RULES

if TYPE_CHECKING:
    from vla.backbones.base import BackboneOptions

VLA_CONFIG_FILE = "vla_config.json"
TRAINING_KEY = "training"  # the record `vla train` adds to vla_config.json
# The option vocabularies live with the configs (the modules that use them import torch; configs must not).
BASE_IMAGE_SIZE = 224  # paper A.2: every image is first made 224x224
PROMPT_SCHEMES = ("full", "short")  # Qwen: Scheme 1 (chat format) and Scheme 2 (short), paper A.2.3
HEAD_TYPES = ("mlp", "fc_decoder")
ARM_ACTIVATIONS = ("linear", "tanh")
HEAD_INPUT_NORMS = ("none", "batch")


@dataclass
class VLAConfig:
    """The policy: which VLM, how it is prompted, the head, the loss, the normalisation and what is frozen."""

    backbone: str = "Qwen/Qwen2.5-VL-3B-Instruct"  # Hub id or folder (an SFT checkpoint is a folder or id)
    revision: str | None = None
    chunk_size: int = 10  # CALVIN 10, Bridge/LIBERO 4
    head_width: int = 0  # 0 = Table 9 rule max(1024, hidden / 2)
    prompt_scheme: str = "full"  # Qwen: "full" (Scheme 1, chat format) or "short" (Scheme 2)
    image_size: int = BASE_IMAGE_SIZE  # first resize (A.2.4 ablation); the processor then uses its own size
    normalization: str = "q01_q99"  # or "mean_std", or "none" (raw actions; only action_clip applies)
    action_clip: float = 0.0  # > 0: clip the normalised arm dims to +-action_clip, then divide by it (VLM4VLA 0.65)
    head_type: str = "mlp"  # "mlp" (Table 9 layers + a final Linear) or "fc_decoder" (VLM4VLA's released head)
    arm_activation: str = "linear"  # or "tanh": arm outputs bounded to +-arm_scale
    arm_scale: float = 1.0  # the tanh bound, in normalised units
    # "batch": the head's input is standardised per feature (BatchNorm, no affine; running statistics at inference,
    # refreshed before each checkpoint). Not in the paper: for backbones whose query state barely varies with the
    # input (tiny random ones: the demo), where a plain head learns too slowly. "none" = the paper's head.
    head_input_norm: str = "none"
    huber_delta: float = 1.0
    arm_loss_weight: float = 1.0
    gripper_loss_weight: float = 1.0  # VLM4VLA's arm_gripper_loss_ratio is 0.01
    freeze_vision_tower: bool = False  # Table 3
    freeze_word_embeddings: bool = False  # the <ActionQuery> embedding stays trainable
    freeze_llm: bool = False
    from_scratch: bool = False  # Table 8: same architecture, random weights
    # simulator -> adapter options the evaluation side uses as defaults (e.g. {"libero": {"center_crop": 0.9}})
    eval_sim_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    gradient_checkpointing: bool = False  # recompute decoder layers / vision blocks in backward (less memory)
    # auto (sdpa; eager for PaliGemma 2, whose soft-capping has no sdpa path), sdpa, eager, flash_attention_2 (GPU,
    # needs the flash-attn extra)
    attn_implementation: str = "auto"

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.normalization not in MODES:
            raise ConfigError(f"normalization must be one of {MODES}, got {self.normalization!r}")
        if self.action_clip < 0:
            raise ConfigError(f"action_clip must be >= 0 (0 = the mode's own clipping), got {self.action_clip}")
        if self.head_type not in HEAD_TYPES:
            raise ConfigError(f"head_type must be one of {HEAD_TYPES}, got {self.head_type!r}")
        if self.head_input_norm not in HEAD_INPUT_NORMS:
            raise ConfigError(f"head_input_norm must be one of {HEAD_INPUT_NORMS}, got {self.head_input_norm!r}")
        if self.arm_activation not in ARM_ACTIVATIONS:
            raise ConfigError(f"arm_activation must be one of {ARM_ACTIVATIONS}, got {self.arm_activation!r}")
        if self.arm_scale <= 0:
            raise ConfigError(f"arm_scale must be > 0, got {self.arm_scale}")
        if not all(isinstance(v, dict) for v in self.eval_sim_options.values()):
            raise ConfigError("eval_sim_options must map a simulator name to a mapping of adapter options")
        if self.prompt_scheme not in PROMPT_SCHEMES:
            raise ConfigError(f"prompt_scheme must be one of {PROMPT_SCHEMES}, got {self.prompt_scheme!r}")
        check_attn_implementation(self.attn_implementation)

    def backbone_options(self) -> BackboneOptions:
        """The options the backbone adapter needs."""
        from vla.backbones.base import BackboneOptions  # the backbones import torch: only when a model is built

        return BackboneOptions(prompt_scheme=self.prompt_scheme, image_size=self.image_size)

    def save(self, folder: str | Path, training: dict[str, Any] | None = None) -> Path:
        """Write `vla_config.json` into a checkpoint folder; `training` (what `vla train` did: preset, data,
        schedule, deviations from the paper's code) is stored beside the fields under "training"."""
        path = Path(folder) / VLA_CONFIG_FILE
        record = asdict(self)
        if training:
            record[TRAINING_KEY] = training
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> VLAConfig:
        """Read `vla_config.json` from a checkpoint folder (one-line DataError if absent or malformed)."""
        data = cls._read(folder)
        data.pop(TRAINING_KEY, None)
        try:
            return cls(**data)
        except (TypeError, ConfigError) as exc:
            raise DataError(f"malformed VLA config ({exc})", Path(folder) / VLA_CONFIG_FILE) from exc

    @staticmethod
    def load_training(folder: str | Path) -> dict[str, Any]:
        """The "training" record of a checkpoint's `vla_config.json` ({} for checkpoints written without one)."""
        record = VLAConfig._read(folder).get(TRAINING_KEY, {})
        return record if isinstance(record, dict) else {}

    @staticmethod
    def _read(folder: str | Path) -> dict[str, Any]:
        path = Path(folder) / VLA_CONFIG_FILE
        if not path.is_file():
            raise DataError("not a VLA checkpoint (no VLA config)", folder, VLA_CONFIG_FILE)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed VLA config ({exc})", path) from exc
        if not isinstance(data, dict):
            raise DataError("malformed VLA config (not a JSON object)", path)
        return data


@dataclass
class AugmentConfig:
    """Training-only image augmentation, applied in this order on the uint8 image after the first resize to
    `model.image_size` (so sizes are in model pixels), never at evaluation. Every op is off at its default.

    VLM4VLA's CALVIN configs: `shift_pad: 10` (RoboVLMs' random shift, offsets -9..+10 px). Its Open-X configs
    (Bridge, LIBERO; OpenVLA's pipeline): `crop_area: 0.9`, `brightness: 0.2`, `contrast: 0.2`, `saturation: 0.2`,
    `hue: 0.05`.
    """

    shift_pad: int = 0  # replicate-pad by this many px, take a random same-size window
    crop_area: float = 1.0  # random square crop of this fraction of the area, resized back (1 = off)
    brightness: float = 0.0  # add U(-b, b) to [0, 1] intensities
    contrast: float = 0.0  # scale each channel's deviation from its mean by U(1 - c, 1 + c)
    saturation: float = 0.0  # scale HSV saturation by U(1 - s, 1 + s)
    hue: float = 0.0  # rotate hue by U(-h, h) turns

    def __post_init__(self) -> None:
        if self.shift_pad < 0:
            raise ConfigError(f"augment.shift_pad must be >= 0, got {self.shift_pad}")
        if not 0.0 < self.crop_area <= 1.0:
            raise ConfigError(f"augment.crop_area must be in (0, 1], got {self.crop_area}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"augment.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"augment.hue must be in [0, 0.5], got {self.hue}")

    @property
    def enabled(self) -> bool:
        """Whether any op is on."""
        return self != AugmentConfig()


SAMPLERS = ("auto", "global", "stream")


@dataclass
class VLADataConfig:
    """Robot data: any `datasets_build` source, one camera of the current frame, no proprioception.

    `sampler`: "global" draws samples by index from one permutation of every sample per epoch, split over ranks
    and workers without overlap (sources with cheap random access: calvin, libero, lerobot, demo); "stream" reads
    whole episodes, `interleave` at a time, through a `shuffle_buffer` of samples (rlds, where a record is read
    whole; its images wait in the buffer still encoded, other sources' decoded); "auto" picks by the source.
    `window_rule`: "full" starts a sample at every step of a language window and lets its chunk run to the
    window's end; "drop_last" is VLM4VLA's CALVIN rule (the window's last frame neither starts a sample nor
    enters a chunk).
    """

    source: str = "demo"  # calvin, rlds, libero, lerobot, demo
    path: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of the source
    camera: str = ""  # "" = the episode's first camera
    stats: str = ""  # stats.json of `python -m datasets_build stats`; "" = compute it from the source
    sampler: str = "auto"
    shuffle_buffer: int = 20000  # stream sampler: samples held for shuffling per process (split over its workers)
    interleave: int = 64  # stream sampler: episodes read at once per process (split over its workers)
    window_rule: str = "full"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 2

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"data.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.window_rule not in WINDOW_RULES:
            raise ConfigError(f"data.window_rule must be one of {WINDOW_RULES}, got {self.window_rule!r}")
        if self.shuffle_buffer < 1 or self.interleave < 1:
            raise ConfigError("data.shuffle_buffer and data.interleave must be >= 1")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


PRESET_FOLLOW = ("code", "paper")


@dataclass
class VLATrainConfig:
    """One training run (`python -m vla train`, recipe stage `vla_train`).

    `preset` (a name in `vla.presets`, e.g. `calvin_abc_d`) supplies every field the YAML / overrides do not set
    explicitly: explicit keys win, even when they equal the default; setting `steps` (or `warmup_steps`,
    `save_every`) also drops the preset's epoch-based counterpart, and `data.options` merge key by key. Where the
    paper's text and its released code disagree, `preset_follow` picks which one the preset takes.
    A schedule in epochs (`epochs`, `warmup_epochs`, `save_every_epochs` > 0) is turned into steps at start from
    the number of training samples.
    """

    out: str = ""
    preset: str = ""  # "" or a name of vla.presets.PRESETS
    preset_follow: str = "code"  # "code" (VLM4VLA's released configs) or "paper" (the paper's text)
    model: VLAConfig = field(default_factory=VLAConfig)
    data: VLADataConfig = field(default_factory=VLADataConfig)
    steps: int = 30000
    epochs: float = 0.0  # > 0: steps = ceil(epochs * training samples / batch_size), replacing `steps`
    batch_size: int = 128  # global batch = batch_size; each process takes batch_size / world_size
    lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # > 0: replaces warmup_steps (VLM4VLA warms up for 0.25 epochs)
    lr_scheduler: str = "constant"  # any transformers scheduler name (constant, cosine, linear, ...)
    grad_clip: float = 1.0  # 0 = no clipping
    gradient_accumulation_steps: int = 1
    save_every: int = 5000  # every saved checkpoint is kept (the checkpoint sweep evaluates them all)
    save_every_epochs: float = 0.0  # > 0: replaces save_every
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
        if min(self.epochs, self.warmup_epochs, self.save_every_epochs, self.grad_clip, self.warmup_steps) < 0:
            raise ConfigError("epochs, warmup_epochs, save_every_epochs, warmup_steps and grad_clip must be >= 0")
        if self.report_to not in ("none", "tensorboard", "wandb"):
            raise ConfigError(f"report_to must be none, tensorboard or wandb, got {self.report_to!r}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.frozen_dtype != "auto":
            check_dtype_name(self.frozen_dtype, "frozen_dtype")
        check_dtype_name(self.save_dtype, "save_dtype")
        if self.preset_follow not in PRESET_FOLLOW:
            raise ConfigError(f"preset_follow must be one of {PRESET_FOLLOW}, got {self.preset_follow!r}")
        if self.preset:
            from vla.presets import get_preset

            get_preset(self.preset)  # one-line ConfigError naming the known presets

    @classmethod
    def config_layers(cls, layers: list[Any]) -> list[Any]:
        """`build_config` hook: put the preset named in `layers` underneath them (explicit keys win)."""
        from vla.presets import preset_layers

        return preset_layers(layers)
