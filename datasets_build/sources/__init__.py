"""Robot-data sources: each reads one on-disk format and yields `Episode`s; chosen by name."""

from datasets_build.sources.base import Source, available_sources, open_source, register_source
from datasets_build.sources.demo import DemoSource
from datasets_build.sources.lerobot import LeRobotMapping, LeRobotSource

__all__ = [
    "DemoSource",
    "LeRobotMapping",
    "LeRobotSource",
    "Source",
    "available_sources",
    "open_source",
    "register_source",
]
