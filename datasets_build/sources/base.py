"""What every robot-data source offers, and the registry that picks one by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from datasets_build.episode import Episode
from datasets_build.errors import ConfigError


class Source(Protocol):
    """A dataset on disk read as a stream of Episodes (memory bounded by one episode)."""

    name: str
    path: Path

    def __len__(self) -> int:
        """Number of episodes (before partitioning)."""

    def episodes(self, num_shards: int = 1, shard_index: int = 0) -> Iterator[Episode]:
        """Episodes whose index i satisfies i % num_shards == shard_index, in order."""


SourceFactory = Callable[..., Source]
_REGISTRY: dict[str, SourceFactory] = {}


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Class decorator adding a source under `name`."""

    def wrap(factory: SourceFactory) -> SourceFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def check_partition(num_shards: int, shard_index: int) -> None:
    """Validate --num-shards/--shard-index."""
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ConfigError(f"shard_index must be in [0, num_shards), got {shard_index} of {num_shards}")


def available_sources() -> list[str]:
    """Registered source names."""
    import datasets_build.sources  # noqa: F401  (registers the built-in sources)

    return sorted(_REGISTRY)


def open_source(name: str, path: str | Path, **options: Any) -> Source:
    """Open the dataset at `path` with the source registered as `name`."""
    names = available_sources()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown source {name!r}; available: {', '.join(names)}")
    return _REGISTRY[name](Path(path), **options)
