"""The precision and attention choices a training config accepts, without importing torch (configs must not).

`datasets_build.precision` maps the dtype names onto torch dtypes; the configs of both training stages only
validate the names here, so planning a recipe (`--dry-run`) stays free of torch.
"""

from __future__ import annotations

from datasets_build.errors import ConfigError

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # stored / frozen / saved weights
# transformers' attn_implementation values a run may ask for; auto = the family's default (sdpa, eager for Gemma-2)
ATTN_IMPLEMENTATIONS = ("auto", "sdpa", "eager", "flash_attention_2")


def check_dtype_name(name: str, field: str) -> str:
    """`name` if it is one of DTYPE_NAMES; one-line ConfigError naming `field` otherwise."""
    if name not in DTYPE_NAMES:
        raise ConfigError(f"{field}: {name!r} is not one of {', '.join(DTYPE_NAMES)}")
    return name


def check_attn_implementation(name: str, field: str = "attn_implementation") -> str:
    """`name` if transformers' attention choice is one this toolkit runs; one-line ConfigError otherwise."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"{field}: {name!r} is not one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    return name
