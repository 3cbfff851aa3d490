"""LeRobot dataset format (v3.0, and v2.1 for reading): layout constants, a writer and video IO."""

from datasets_build.lerobot.layout import CODEBASE_VERSION, SUPPORTED_VERSIONS, LeRobotInfo
from datasets_build.lerobot.writer import LeRobotWriter

__all__ = ["CODEBASE_VERSION", "SUPPORTED_VERSIONS", "LeRobotInfo", "LeRobotWriter"]
