"""Robot-data sources: each reads one on-disk format and yields `Episode`s; chosen by name."""

from datasets_build.sources.base import EpisodeLayout, Source, available_sources, open_source, register_source
from datasets_build.sources.calvin import CalvinSource
from datasets_build.sources.demo import DemoSource
from datasets_build.sources.lerobot import LeRobotMapping, LeRobotSource
from datasets_build.sources.libero import LiberoSource
from datasets_build.sources.rlds import RLDSMapping, RLDSSource

__all__ = [
    "CalvinSource",
    "DemoSource",
    "EpisodeLayout",
    "LeRobotMapping",
    "LeRobotSource",
    "LiberoSource",
    "RLDSMapping",
    "RLDSSource",
    "Source",
    "available_sources",
    "open_source",
    "register_source",
]
