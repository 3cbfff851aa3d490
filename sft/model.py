"""Load the base VLM and its processor by Hub id or folder with transformers' Auto classes.

Only the paper's Qwen-VL families are trained here (their chat templates carry the assistant turns TRL masks
on); the family comes from the loaded config through `datasets_build.vlm_families.family_of`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from datasets_build.errors import ConfigError
from datasets_build.vlm_families import DEFAULT_ATTENTION, family_of

SFT_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")


@dataclass
class LoadedModel:
    """A base model, its processor and its family."""

    model: PreTrainedModel
    processor: ProcessorMixin
    family: str


def load_processor(name_or_path: str, revision: str | None = None) -> ProcessorMixin:
    """The processor of `name_or_path`; ConfigError when it has no chat template (SFT needs one)."""
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load a processor from {name_or_path!r} ({_first_line(exc)})") from exc
    template = getattr(processor, "chat_template", None) or getattr(processor.tokenizer, "chat_template", None)
    if not template:
        raise ConfigError(f"model: {name_or_path!r} has no chat template; SFT needs the family's chat template")
    if not getattr(processor, "chat_template", None):
        processor.chat_template = template
    return processor


def load_model(name_or_path: str, revision: str | None = None, attn_implementation: str = "auto") -> LoadedModel:
    """Model + processor of `name_or_path` (Hub id or folder), weights as the checkpoint stores them (training then
    keeps fp32 masters of what it trains, `datasets_build.precision.cast_parameters`); ConfigError names what is
    wrong."""
    try:
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model: cannot load {name_or_path!r} ({_first_line(exc)})") from exc
    family = family_of(config)
    if family not in SFT_FAMILIES:
        raise ConfigError(f"model: SFT supports the families {', '.join(SFT_FAMILIES)}; {name_or_path!r} is {family}")
    processor = load_processor(name_or_path, revision)
    attention = DEFAULT_ATTENTION[family] if attn_implementation == "auto" else attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, revision=revision, attn_implementation=attention, trust_remote_code=False
    )
    return LoadedModel(model, processor, family)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text (library errors are often multi-line)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
