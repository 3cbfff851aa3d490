"""The paper's training recipes per benchmark, as VLM4VLA's released code trains them (`preset: NAME`).

The paper prints chunk, learning rate, batch and steps (A.2.1); its released code (CladernyJorn/VLM4VLA on
RoboVLMs, Open-X data through OpenVLA's pipeline) decides much more: augmentation, the gripper loss weight,
the +-0.65 clip-and-scale of actions with a tanh head, the head's layers, global shuffling, warm-up, which frames
of a CALVIN language window become samples. A `Preset` holds those values for one benchmark, read from the
files listed in its `references`, plus:

- `choices`: settings where the paper's text and the code disagree, each with both values; `preset_follow`
  (`code` by default, or `paper`) picks one side for all of them, and any single key can still be set
  explicitly;
- `source_options`: `data.options` per data source, so one preset serves the RLDS release and the hdf5 files;
- `deviations`: what this project does differently from the code on purpose.

Resolution (`preset_layers`, called by `build_config` through `VLATrainConfig.config_layers`): the preset
becomes a layer underneath the recipe / overrides, so every key set explicitly wins, even one equal to the
default. Setting `steps`, `warmup_steps` or `save_every` explicitly also drops the preset's epoch-based
counterpart (`epochs`, `warmup_epochs`, `save_every_epochs`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from datasets_build.errors import ConfigError

VLM4VLA_REPO = "CladernyJorn/VLM4VLA"
# dotted key set explicitly -> the preset keys it replaces
LINKED_KEYS: dict[str, tuple[str, ...]] = {
    "steps": ("epochs",),
    "warmup_steps": ("warmup_epochs",),
    "save_every": ("save_every_epochs",),
}


@dataclass(frozen=True)
class ByFamily:
    """A value that VLM4VLA's configs set per backbone family (`default` for the rest)."""

    default: Any
    families: Mapping[str, Any] = field(default_factory=dict)

    def pick(self, family: str) -> Any:
        """The value for a backbone family name (see `backbone_family_hint`)."""
        return self.families.get(family, self.default)


@dataclass(frozen=True)
class PresetChoice:
    """A setting the paper's text and its released code disagree on: both sides, and where each was read."""

    name: str
    code: Mapping[str, Any]  # dotted keys -> values (a ByFamily value is picked per backbone)
    paper: Mapping[str, Any]
    note: str


@dataclass(frozen=True)
class Preset:
    """One benchmark's training recipe as VLM4VLA's released code runs it."""

    name: str
    benchmark: str  # the simulator it is evaluated in (an evaluation adapter name)
    summary: str
    values: Mapping[str, Any]  # dotted VLATrainConfig keys -> values, taken under both `preset_follow` sides
    choices: tuple[PresetChoice, ...]
    source_options: Mapping[str, Mapping[str, Any]]  # data.source -> default data.options
    deviations: tuple[str, ...]
    references: tuple[str, ...]
    data_image_size: int = 0  # the training images' side in the paper's data (0: any); others are reported

    def resolve(self, follow: str = "code", backbone: str = "", source: str = "") -> dict[str, Any]:
        """Dotted keys -> values for `follow` ("code" or "paper"), the backbone's family and the data source."""
        if follow not in ("code", "paper"):
            raise ConfigError(f"preset_follow must be code or paper, got {follow!r}")
        family = backbone_family_hint(backbone or str(self.values.get("model.backbone", "")))
        out: dict[str, Any] = {}
        for key, value in self.values.items():
            out[key] = value.pick(family) if isinstance(value, ByFamily) else value
        for choice in self.choices:
            for key, value in getattr(choice, follow).items():
                out[key] = value.pick(family) if isinstance(value, ByFamily) else value
        chosen = source or str(out.get("data.source", ""))
        options = self.source_options.get(chosen)
        if options:
            out["data.options"] = dict(options)
        return out

    def describe(self, follow: str = "code", resolved: bool = False) -> dict[str, Any]:
        """A JSON-ready account of the preset (for checkpoints, cards and `python -m vla presets`); `resolved`
        adds the values it sets for the default backbone and source."""
        extra = {"resolved": self.resolve(follow)} if resolved else {}
        return {
            "name": self.name,
            "benchmark": self.benchmark,
            "summary": self.summary,
            "follow": follow,
            "choices": [
                {
                    "name": c.name,
                    "taken": follow,
                    "code": _plain(c.code),
                    "paper": _plain(c.paper),
                    "note": c.note,
                }
                for c in self.choices
            ],
            "source_options": {k: dict(v) for k, v in self.source_options.items()},
            "deviations": list(self.deviations),
            "references": [f"{VLM4VLA_REPO}:{r}" if ":" not in r else r for r in self.references],
            "data_image_size": self.data_image_size,
            **extra,
        }


def format_preset(preset: Preset, follow: str = "code") -> str:
    """Human-readable account of a preset: the values it sets, its code-vs-paper choices, its deviations."""
    lines = [f"{preset.name}  ({preset.benchmark}): {preset.summary}", f"  values (preset_follow={follow}):"]
    values = preset.resolve(follow)
    lines += [f"    {k} = {v!r}" for k, v in sorted(values.items())]
    for name, options in preset.source_options.items():
        if name != values.get("data.source"):
            lines.append(f"    data.options with data.source={name}: {dict(options)!r}")
    lines.append("  where the paper's text and its code disagree:")
    for c in preset.choices:
        lines.append(f"    {c.name}: code {_plain(c.code)} | paper {_plain(c.paper)}")
        lines.append(f"      {c.note}")
    lines.append("  deliberate deviations from the code:")
    lines += [f"    - {d}" for d in preset.deviations]
    return "\n".join(lines)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: ({"default": v.default, **dict(v.families)} if isinstance(v, ByFamily) else v) for k, v in values.items()
    }


def backbone_family_hint(backbone: str) -> str:
    """A backbone's family for per-family preset values, without loading it: a folder's config.json
    `model_type`, else its name ("paligemma", "kosmos2" or "qwen" for everything else)."""
    config = Path(backbone) / "config.json" if backbone else None
    name = backbone.lower()
    if config is not None and config.is_file():
        with contextlib.suppress(OSError, ValueError):
            name = str(json.loads(config.read_text()).get("model_type", name)).lower()
    if "paligemma" in name:
        return "paligemma"
    if "kosmos" in name:
        return "kosmos2"
    return "qwen"


# ------------------------------------------------------------------------------------------------ shared

# VLM4VLA's action head and loss, identical in every config: FCDecoder (shared Linear(h, h/2) ReLU Linear(., 1024),
# then a tanh arm tower and a gripper-logit tower), Huber (delta 1) + 0.01 x BCE, actions clipped to +-0.65 and
# divided by 0.65 (`norm_action`, `norm_min`/`norm_max`; Open-X data after OpenVLA's q01/q99 scaling).
_HEAD_AND_LOSS: dict[str, Any] = {
    "model.image_size": 224,
    "model.head_type": "fc_decoder",
    "model.arm_activation": "tanh",
    "model.arm_scale": 1.0,
    "model.action_clip": 0.65,
    "model.huber_delta": 1.0,
    "model.arm_loss_weight": 1.0,
    "model.gripper_loss_weight": 0.01,
    "model.freeze_vision_tower": False,
    "model.freeze_word_embeddings": False,
    "model.freeze_llm": False,
    "weight_decay": 0.0,
    "lr_scheduler": "constant",
    "seed": 123,
}

# main.py sets trainer gradient_clip_val from a top-level key no config has (default 0.0), overwriting the
# configs' trainer.gradient_clip_val 1.0 (a RoboVLMs inheritance): VLM4VLA trains without clipping.
_GRAD_CLIP = PresetChoice(
    "grad_clip",
    code={"grad_clip": 0.0},
    paper={"grad_clip": 1.0},
    note="The configs write trainer.gradient_clip_val 1.0, but main.py overwrites it with the missing top-level "
    "key gradient_clip_val (default 0.0), so the released code never clips; the paper does not say. "
    "`paper` takes the configs' written 1.0.",
)

# OpenVLA's Open-X image augmentation as VLM4VLA's OpenVLADataset enables it (image_aug: true).
_OPENX_AUGMENT: dict[str, Any] = {
    "data.augment.crop_area": 0.9,
    "data.augment.brightness": 0.2,
    "data.augment.contrast": 0.2,
    "data.augment.saturation": 0.2,
    "data.augment.hue": 0.05,
}

_SHARED_DEVIATIONS = (
    (
        "Trainable parameters stay in fp32 with bf16 autocast; VLM4VLA casts the whole model to bf16 "
        "(Lightning precision bf16 and model.to(torch.bfloat16) in main.py)."
    ),
    (
        "batch_size is the global batch split over the processes (and gradient_accumulation_steps); VLM4VLA sets a "
        "per-GPU batch and accumulation for 8 GPUs (e.g. 8 x 8 GPUs x 2 for Qwen2.5-VL on CALVIN): same effective "
        "batch."
    ),
    (
        "One seed derives the sample order and every augmentation draw per sample; VLM4VLA seeds each rank with "
        "seed + rank and its DistributedSampler with 1126, so the exact draws differ."
    ),
    (
        "Frames are first resized to 224 with PIL bicubic (the project's one first resize); VLM4VLA's CALVIN path "
        "uses torchvision bicubic, its Open-X path OpenVLA's TF resize."
    ),
)


CALVIN_ABC_D = Preset(
    name="calvin_abc_d",
    benchmark="calvin",
    summary="CALVIN ABC->D: train on the language windows of scenes A, B, C (static camera), test on D.",
    values={
        **_HEAD_AND_LOSS,
        "model.chunk_size": 10,
        "model.normalization": "none",  # CALVIN's rel_actions are clipped to +-0.65 and divided by 0.65, no stats
        "data.source": "calvin",
        "data.camera": "static",
        "data.sampler": "global",  # DistributedSampler(shuffle=True) over every window start, each epoch
        "data.window_rule": "drop_last",  # starts start..end-1 of a window, chunks padded with frame `end`, masked
        "data.augment.shift_pad": 10,  # rgb_pad 10: RandomShiftsAug.forward_traj, offsets -9..+10 px
        "batch_size": 128,
        "lr": 2e-5,
        "warmup_epochs": 0.25,  # warmup_epochs 0.25 of constant_schedule_with_warmup
        "warmup_steps": 0,
    },
    choices=(
        PresetChoice(
            "schedule",
            code={"epochs": 5.0},
            paper={"epochs": 0.0, "steps": 30000},
            note="trainer.max_epochs 5 (max_steps -1): eval/calvin/eval_ckpts.py names epoch=3-step=32932 and "
            "epoch=4-step=41165 at batch 128, i.e. ~8.2k steps per epoch and ~41k in all; the paper says 30k steps.",
        ),
        PresetChoice(
            "checkpoints",
            code={"save_every_epochs": 1.0},
            paper={"save_every_epochs": 0.0, "save_every": 5000},
            note="ModelCheckpoint(every_n_epochs=1, save_top_k=-1) in main.py; the paper's Figure 4 evaluates "
            "10k, 15k, 20k, 25k and 30k steps.",
        ),
        _GRAD_CLIP,
    ),
    source_options={"calvin": {"mode": "language", "cameras": ["static"], "load_depth": False}},
    deviations=(
        *_SHARED_DEVIATIONS,
        (
            "The random shift is drawn per sample as integer offsets of an edge-replicated image, which is what "
            "RoboVLMs' grid_sample at pixel centres computes; VLM4VLA also shifts the wrist image, which it never "
            "feeds the model (not read here)."
        ),
    ),
    references=(
        "configs/calvin_finetune/finetune_qwen25vl-3b_calvin.json",
        "vlm4vla/data/calvin_dataset.py",
        "vlm4vla/data/data_utils.py",
        "vlm4vla/data/datamodule/gr_datamodule.py",
        "vlm4vla/train/base_trainer.py",
        "vlm4vla/model/policy_head/base_policy.py",
        "main.py",
        "eval/calvin/eval_ckpts.py",
    ),
)

# Lightning's estimated_stepping_batches is min(max_steps, ...) = 50000 for both Open-X runs, and
# configure_optimizers divides it by max_epochs: warm-up = 0.25 x 50000 / max_epochs steps.
_OPENX_LR = PresetChoice(
    "lr",
    code={"lr": ByFamily(2e-5, {"paligemma": 5e-5, "kosmos2": 5e-5})},
    paper={"lr": 5e-5},
    note="The Bridge and LIBERO configs use 2e-5 for Qwen2.5-VL, Qwen3-VL and InternVL and 5e-5 for PaliGemma and "
    "Kosmos-2; the paper says a uniform 5e-5.",
)

_OPENX_VALUES: dict[str, Any] = {
    **_HEAD_AND_LOSS,
    **_OPENX_AUGMENT,
    "model.chunk_size": 4,
    "model.normalization": "q01_q99",  # OpenVLA's BOUNDS_Q99, then VLM4VLA's +-0.65 clip and scale
    "data.source": "rlds",
    "data.sampler": "stream",
    "data.shuffle_buffer": 51200,  # shuffle_buffer_size of the configs (frames, per process)
    "data.window_rule": "full",  # every step starts a sample; chunks past the episode end are masked
    "batch_size": 512,
    "steps": 50000,
    "epochs": 0.0,
}

_OPENX_DEVIATIONS = (
    *_SHARED_DEVIATIONS,
    (
        "The stream reads `data.interleave` episodes at once per worker into the shuffle buffer; OpenVLA's pipeline "
        "reads one TFRecord file at a time (traj_read_threads 1) and shuffles 51200 frames per process."
    ),
    (
        "Each rank reads its own share of the episodes; VLM4VLA's RLDS loader gives every rank the whole stream "
        "(its split by rank is commented out) with unseeded TF shuffling."
    ),
    "Images in the shuffle buffer stay JPEG-encoded and are decoded when drawn, as in OpenVLA's pipeline.",
)

SIMPLER_BRIDGE = Preset(
    name="simpler_bridge",
    benchmark="simpler",
    summary="SimplerEnv-Bridge (WidowX): train on Bridge V2 with OpenVLA's labels, 4 tasks x 24 trials.",
    values={
        **_OPENX_VALUES,
        "warmup_steps": 2500,  # 0.25 x 50000 / max_epochs 5
        "warmup_epochs": 0.0,
        "model.eval_sim_options": {"simpler": {"late_close_gripper": 2}},
    },
    choices=(
        _OPENX_LR,
        PresetChoice(
            "checkpoints",
            code={"save_every": 2500},
            paper={"save_every": 5000},
            note="eval/simpler/eval_ckpts_bridge.py evaluates checkpoints named step=2500; the paper validates every "
            "5k steps (10 checkpoints).",
        ),
        _GRAD_CLIP,
    ),
    source_options={"rlds": {"bridge_labels": "paper"}},
    deviations=_OPENX_DEVIATIONS,
    references=(
        "configs/oxe_training/bridge/finetune_qwen25vl-3b_bridge.json",
        "vlm4vla/data/base_openvla_dataset.py",
        "vlm4vla/data/base_action_prediction_dataset.py",
        "openvla/prismatic/vla/datasets/rlds/oxe/mixtures.py",
        "openvla/prismatic/vla/datasets/rlds/oxe/transforms.py",
        "openvla/prismatic/vla/datasets/rlds/utils/data_utils.py",
        "eval/simpler/model_wrapper.py",
        "eval/simpler/eval_ckpts_bridge.py",
    ),
)

LIBERO_10 = Preset(
    name="libero_10",
    benchmark="libero",
    summary="LIBERO-Long (libero_10): train on the 379 no-noop demos (256x256), 10 tasks x 50 trials.",
    values={
        **_OPENX_VALUES,
        "warmup_steps": 250,  # 0.25 x 50000 / max_epochs 50
        "warmup_epochs": 0.0,
        "save_every": 5000,
        "model.eval_sim_options": {"libero": {"render_size": 256, "center_crop": 0.9}},
    },
    choices=(_OPENX_LR, _GRAD_CLIP),
    source_options={
        "rlds": {},  # libero_10_no_noops: the mapping is chosen from dataset_info.json
        "libero": {"filter_noops": True, "cameras": ["agentview"]},  # the regenerated *_no_noops hdf5 files
    },
    deviations=(
        *_OPENX_DEVIATIONS,
        "The paper's code keeps no checkpoint cadence for LIBERO (one per Lightning epoch); every 5000 steps here.",
    ),
    references=(
        "configs/oxe_training/libero10/finetune_qwen25vl-3b_libero10.json",
        "configs/data/oxe_dataset_stats/dataset_statistics_libero_10.json",
        "openvla/prismatic/vla/datasets/rlds/oxe/configs.py",
        "openvla/prismatic/vla/datasets/rlds/oxe/transforms.py",
        "openvla/experiments/robot/libero/regenerate_libero_dataset.py",
        "eval/libero/run_libero_eval.py",
        "eval/libero/model_wrapper.py",
        "eval/libero/libero_evaluator.py",
    ),
    data_image_size=256,
)

PRESETS: dict[str, Preset] = {p.name: p for p in (CALVIN_ABC_D, SIMPLER_BRIDGE, LIBERO_10)}


def get_preset(name: str) -> Preset:
    """The preset called `name` (one-line ConfigError listing the known ones)."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and dotted not in ("data.options", "model.eval_sim_options"):
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _as_dict(layer: Any) -> dict[str, Any]:
    if isinstance(layer, DictConfig):
        container = OmegaConf.to_container(layer, resolve=True)
        return {str(k): v for k, v in container.items()} if isinstance(container, dict) else {}
    return dict(layer)


def explicit_keys(layers: list[Any]) -> dict[str, Any]:
    """Every dotted key the layers set (nested mappings flattened; `data.options` and `eval_sim_options` whole)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(_flatten(_as_dict(layer)))
    return merged


def preset_layers(layers: list[Any]) -> list[Any]:
    """`layers` with the preset they name (if any) inserted underneath; see the module docstring for the rule."""
    explicit = explicit_keys(layers)
    name = explicit.get("preset") or ""
    if not name:
        return layers
    preset = get_preset(str(name))
    follow = str(explicit.get("preset_follow", "code"))
    values = preset.resolve(follow, str(explicit.get("model.backbone", "")), str(explicit.get("data.source", "")))
    for key, replaced in LINKED_KEYS.items():
        if key in explicit:
            for other in replaced:
                values.pop(other, None)
    return [_nest(values), *layers]


def preset_record(config: Any) -> dict[str, Any]:
    """What a checkpoint records of a run's preset: its account, the resolved values, and every key where the
    run's config differs from them (explicit overrides of the preset). {} when the run uses no preset."""
    name = getattr(config, "preset", "")
    if not name:
        return {}
    from dataclasses import asdict

    preset = get_preset(name)
    resolved = preset.resolve(config.preset_follow, config.model.backbone, config.data.source)
    actual = _flatten(asdict(config))
    overridden = {
        key: {"preset": value, "run": actual.get(key)}
        for key, value in resolved.items()
        if key in actual and actual[key] != value
    }
    return {**preset.describe(config.preset_follow), "resolved": resolved, "overridden": overridden}
