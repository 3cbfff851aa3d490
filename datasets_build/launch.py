"""What the launcher asked a training stage for, read the same way by `sft train` and `vla train`.

`accelerate launch --config_file recipes/accelerate/{ddp,zero2,zero3,fsdp}.yaml` (or torchrun with the same
variables) tells the process which engine to run through environment variables; optional engines and kernels
live in extras of this package. Both are checked here, before any model is loaded, with one-line errors.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

from datasets_build.errors import ConfigError

ENGINES = ("single", "ddp", "fsdp", "deepspeed")

# feature -> (module imported, PyPI package, this project's extra that installs it)
OPTIONAL_PACKAGES: dict[str, tuple[str, str, str]] = {
    "deepspeed": ("deepspeed", "deepspeed", "deepspeed"),
    "flash_attention_2": ("flash_attn", "flash-attn", "flash-attn"),
}


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "false").lower() in ("1", "true", "yes")


def launched_engine(env: Mapping[str, str] | None = None) -> str:
    """The engine the launcher asked for (one of ENGINES), from accelerate's environment variables."""
    env = os.environ if env is None else env
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed"
    if _flag(env, "ACCELERATE_USE_FSDP"):
        return "fsdp"
    return "ddp" if int(env.get("WORLD_SIZE", "1")) > 1 else "single"


def require(feature: str, where: str) -> None:
    """One-line ConfigError naming the missing package and the extra that installs it."""
    module, package, extra = OPTIONAL_PACKAGES[feature]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"{where} needs the `{package}` package, which is not installed: pip install 'vlm4vla-toolkit[{extra}]'"
        )


def check_launch(engine: str, attn_implementation: str, env: Mapping[str, str] | None = None) -> None:
    """The packages and settings `engine` and the attention kernel need (call before loading any model)."""
    env = os.environ if env is None else env
    if attn_implementation == "flash_attention_2":
        require("flash_attention_2", "attn_implementation=flash_attention_2")
    if engine == "deepspeed":
        require("deepspeed", "the accelerate config's DeepSpeed engine")
    if engine == "fsdp" and env.get("FSDP_VERSION", "2") != "2":
        raise ConfigError(f"FSDP: fsdp_version {env.get('FSDP_VERSION')} is not supported; use fsdp_version: 2")


def frozen_dtype_name(choice: str, engine: str, bf16: bool) -> str:
    """`frozen_dtype: auto` resolved: bf16 under bf16 compute on one process or DDP; fp32 where FSDP or DeepSpeed
    need one dtype per unit, or where no autocast runs."""
    if choice != "auto":
        return choice
    return "bf16" if bf16 and engine in ("single", "ddp") else "fp32"
