"""What every robot-data source offers, and the registry that picks one by name.

A source lists its episodes cheaply (`episode_keys`: file names, index ranges, record offsets), then
loads one at a time (`load_episode`), so memory stays bounded by one episode whatever the dataset
size. Partitioning for job arrays takes every `num_shards`-th key; with `skip_bad`, a bad episode is
counted under a reason instead of raising.

For training samplers a source also gives an episode's `episode_layout` (actions and language without
images) and one frame by index (`read_image`); sources whose storage allows it (`random_access`: one
file or row per frame) read only that frame, the others fall back to loading the episode. Sources that
store encoded frames (RLDS) hand them out undecoded (`load_encoded`) so a shuffle buffer can hold them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from datasets_build.episode import Episode, LanguageWindow
from datasets_build.errors import ConfigError, DataError


@dataclass
class EpisodeSummary:
    """What `inspect` and `stats` need of an episode, cheaper than a full Episode when a source can skip images."""

    episode_id: str
    length: int
    actions: np.ndarray  # float32 (T, 7), action convention
    state: np.ndarray | None = None
    instructions: list[str] = field(default_factory=list)
    cameras: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (H, W, C)
    geometry: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, episode: Episode) -> EpisodeSummary:
        """Summary of a loaded episode."""
        instructions = [episode.instruction] if episode.instruction else []
        instructions += [w.instruction for w in episode.language if w.instruction not in instructions]
        return cls(
            episode_id=episode.episode_id,
            length=len(episode),
            actions=episode.actions,
            state=episode.state,
            instructions=instructions,
            cameras={name: tuple(int(d) for d in f.shape[1:]) for name, f in episode.frames.items()},  # type: ignore[misc]
            geometry=episode.geometry(),
        )


@dataclass
class EpisodeLayout:
    """An episode as a training sampler needs it, read without images: actions, language and camera names."""

    episode_id: str
    actions: np.ndarray  # float32 (T, 7), action convention
    instruction: str = ""
    language: list[LanguageWindow] = field(default_factory=list)  # per-step windows, when the language changes
    cameras: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def of(cls, episode: Episode) -> EpisodeLayout:
        """Layout of a loaded episode."""
        return cls(
            episode.episode_id, episode.actions, episode.instruction, list(episode.language), tuple(episode.cameras)
        )


def check_partition(num_shards: int, shard_index: int) -> None:
    """Validate --num-shards/--shard-index."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"shard_index must be in [0, num_shards), got {shard_index} of {num_shards}")


_T = TypeVar("_T")


class Source(ABC):
    """A dataset on disk read as a stream of Episodes."""

    name: ClassVar[str] = ""
    random_access: bool = False  # read_image reads one frame (or a small group), not the whole episode

    def __init__(self, path: str | Path, skip_bad: bool = False) -> None:
        self.path = Path(path)
        self.skip_bad = skip_bad
        self.skipped: Counter[str] = Counter()  # reason -> episodes skipped (with skip_bad)

    @abstractmethod
    def episode_keys(self) -> list[Any]:
        """A cheap, deterministic list identifying every episode (before partitioning)."""

    @abstractmethod
    def load_episode(self, key: Any) -> Episode:
        """Read one episode fully (DataError naming file and field when it is bad)."""

    def summarize_episode(self, key: Any) -> EpisodeSummary:
        """Read what inspect/stats need of one episode; sources override this to skip image decoding."""
        return EpisodeSummary.of(self.load_episode(key))

    def episode_layout(self, key: Any) -> EpisodeLayout:
        """Actions, language and cameras of one episode; sources override this to skip images."""
        return EpisodeLayout.of(self.load_episode(key))

    def read_image(self, key: Any, camera: str, step: int) -> np.ndarray:
        """Frame `step` of `camera` as uint8 (H, W, 3); random-access sources read only that frame."""
        episode = self.load_episode(key)
        if camera not in episode.frames:
            raise DataError(f"no camera {camera!r} (has {episode.cameras})", f"{self.name}:{episode.episode_id}")
        return episode.frames[camera][step]

    def load_encoded(self, key: Any, camera: str = "") -> tuple[EpisodeLayout, list[bytes]] | None:
        """The layout and `camera`'s frames ("" = the first camera) still encoded (JPEG/PNG bytes), from sources
        that store them so; None from the others (callers then decode episodes with `load_episode`)."""
        return None

    def __len__(self) -> int:
        return len(self.episode_keys())

    def _stream(self, read: Callable[[Any], _T], num_shards: int, shard_index: int) -> Iterator[_T]:
        check_partition(num_shards, shard_index)
        for i, key in enumerate(self.episode_keys()):
            if i % num_shards != shard_index:
                continue
            try:
                item = read(key)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                self.skipped[exc.field or type(exc).__name__] += 1
                continue
            yield item

    def episodes(self, num_shards: int = 1, shard_index: int = 0) -> Iterator[Episode]:
        """Episodes of this partition (index i with i % num_shards == shard_index), in order."""
        return self._stream(self.load_episode, num_shards, shard_index)

    def summaries(self, num_shards: int = 1, shard_index: int = 0) -> Iterator[EpisodeSummary]:
        """Episode summaries of this partition, in order."""
        return self._stream(self.summarize_episode, num_shards, shard_index)


SourceFactory = Callable[..., Source]
_REGISTRY: dict[str, SourceFactory] = {}


def register_source(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator adding a source class under `name`."""

    def wrap(cls: type[Source]) -> type[Source]:
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_sources() -> list[str]:
    """Registered source names."""
    import datasets_build.sources  # noqa: F401  (registers the built-in sources)

    return sorted(_REGISTRY)


def open_source(name: str, path: str | Path, **options: Any) -> Source:
    """Open the dataset at `path` with the source registered as `name`."""
    names = available_sources()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown source {name!r}; available: {', '.join(names)}")
    if not Path(path).exists():
        raise DataError("no such file or folder", path)
    return _REGISTRY[name](Path(path), **options)
