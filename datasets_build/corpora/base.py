"""What every corpus builder offers, and the registry that picks one by name.

A builder turns one `Episode` (plus a generator seeded from (seed, episode_id) and the instructions
seen earlier in the stream) into `Sample`s and skip reasons; `verify` re-checks a built sample's
answer from its `meta` alone.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
from PIL import Image

from datasets_build.configs import build_config
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError
from datasets_build.sample import Sample, key_part

LETTERS = "ABCDEFGH"


@dataclass
class EpisodeContext:
    """What a builder may use besides the episode: its seeded generator and earlier instructions."""

    rng: np.random.Generator
    seen_instructions: tuple[str, ...] = ()


@dataclass
class EpisodeResult:
    """A builder's output for one episode: samples, and reasons for questions it could not ask."""

    samples: list[Sample] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def episode_rng(seed: int, episode_id: str, source: str = "") -> np.random.Generator:
    """A generator derived deterministically from (seed, source, episode_id), whatever the worker."""
    digest = hashlib.sha256(f"{seed}\0{source}\0{episode_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def sample_key(prefix: str, episode: Episode, index: int) -> str:
    """A shard-safe unique key: readable episode id, a hash of (source, id), and the sample index."""
    digest = hashlib.sha256(f"{episode.source}\0{episode.episode_id}".encode()).hexdigest()[:10]
    readable = key_part(episode.episode_id, 40, "ep")
    return f"{prefix}-{readable}-{digest}-{index:04d}"[:80]


def frame_image(frame: np.ndarray, size: int) -> Image.Image:
    """A uint8 (H, W, 3) frame as a PIL image whose longer side is `size` (aspect kept)."""
    image = Image.fromarray(np.ascontiguousarray(frame))
    w, h = image.size
    scale = size / max(w, h)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return image


def check_choices(corpus: str, key: str, chosen: list[str], known: tuple[str, ...], allow_empty: bool = False) -> None:
    """One-line ConfigError when `chosen` (a corpus option such as question_types) names something unknown."""
    unknown = [q for q in chosen if q not in known]
    if unknown or (not chosen and not allow_empty):
        found = f"unknown {unknown}" if unknown else "empty"
        raise ConfigError(f"corpus {corpus} options: {key}: {found}; choose from {', '.join(known)}")


def format_options(options: list[str]) -> str:
    """Lettered option lines ("A. first", "B. second", ...) for a multiple-choice question."""
    return "\n".join(f"{LETTERS[i]}. {text}" for i, text in enumerate(options))


def parse_options(text: str) -> list[str]:
    """Inverse of `format_options` on a question text: the option lines in letter order."""
    found: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^([A-H])\. (.*)$", line)
        if m and m.group(1) == LETTERS[len(found)]:
            found.append(m.group(2))
    return found


def message_text(sample: Sample, role: str) -> str:
    """The concatenated text parts of the first turn of `role`."""
    for message in sample.messages:
        if message.get("role") != role:
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        parts = content if isinstance(content, list) else []
        return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and p.get("type") == "text")
    return ""


class CorpusBuilder(ABC):
    """Builds one corpus from episodes; subclasses set `name` and `config_cls` and register themselves."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[Any]]

    def __init__(self, config: Any, image_size: int = 224) -> None:
        self.config = config
        self.image_size = image_size

    @abstractmethod
    def build(self, episode: Episode, context: EpisodeContext) -> EpisodeResult:
        """Samples (and skip reasons) of one episode; deterministic given `context.rng`."""

    @abstractmethod
    def verify(self, sample: Sample) -> bool:
        """Whether the sample's answer agrees with the facts recorded in its `meta`."""

    def card_inputs(self) -> list[dict[str, Any]]:
        """Inputs besides the source that the dataset card must fingerprint (e.g. a tokenizer folder)."""
        return []


_B = TypeVar("_B", bound=type[CorpusBuilder])
_REGISTRY: dict[str, type[CorpusBuilder]] = {}


def register_corpus(name: str) -> Callable[[_B], _B]:
    """Class decorator adding a corpus builder under `name`."""

    def wrap(cls: _B) -> _B:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_corpora() -> list[str]:
    """Registered corpus names."""
    import datasets_build.corpora  # noqa: F401  (registers the built-in corpora)

    return sorted(_REGISTRY)


def describe_corpus(name: str) -> str:
    """The first paragraph of the registered builder's module documentation: how the corpus is made."""
    available_corpora()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown corpus {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    doc = inspect.getdoc(sys.modules[_REGISTRY[name].__module__]) or ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def make_builder(name: str, options: Mapping[str, Any] | None = None, image_size: int = 224) -> CorpusBuilder:
    """The builder registered as `name`, its config built strictly from `options` (unknown key = ConfigError)."""
    names = available_corpora()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown corpus {name!r}; available: {', '.join(names)}")
    cls = _REGISTRY[name]
    config = build_config(cls.config_cls, dict(options or {}), where=f"corpus {name} options")
    return cls(config, image_size=image_size)
