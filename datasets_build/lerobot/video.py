"""Encode and decode the mp4 streams of LeRobot video features with PyAV (many episodes per file)."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from datasets_build.errors import DataError


class VideoStreamWriter:
    """One open mp4 file that episodes are appended to; timestamps continue across episodes."""

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str = "libsvtav1") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.codec = codec
        self.fps = fps
        self._container = av.open(str(path), mode="w")
        self._stream: av.VideoStream = self._container.add_stream(codec, rate=fps)  # type: ignore[assignment]
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, fps)
        if codec == "libsvtav1":
            self._stream.options = {"preset": "12", "crf": "30", "g": "2"}
        self.frames_written = 0

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 (T, H, W, 3) frames."""
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = self.frames_written
            self._container.mux(self._stream.encode(video_frame))
            self.frames_written += 1

    def bytes_written(self) -> int:
        """Size of the file so far (encoder buffers not included)."""
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> dict[str, Any]:
        """Flush and close; return LeRobot's `info` entry for the feature."""
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return {
            "video.height": self._stream.height,
            "video.width": self._stream.width,
            "video.codec": self._stream.codec_context.name,
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": self.fps,
            "video.channels": 3,
            "has_audio": False,
        }

    def abort(self) -> None:
        """Close without caring about the file's state."""
        with contextlib.suppress(OSError, ValueError, av.error.FFmpegError):
            self._container.close()


def decode_video(path: Path, from_timestamp: float, to_timestamp: float, fps: float) -> np.ndarray:
    """Frames with from_timestamp <= t < to_timestamp as uint8 (T, H, W, 3)."""
    if not path.is_file():
        raise DataError("video file missing", path)
    frames = []
    first = round(from_timestamp * fps)
    last = round(to_timestamp * fps)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if first > 0 and stream.time_base is not None:
                container.seek(int(from_timestamp / stream.time_base), stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                index = round(frame.time * fps)
                if index >= last:
                    break
                if index >= first:
                    frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise DataError(f"cannot decode video ({exc})", path) from exc
    if len(frames) != last - first:
        raise DataError(
            f"expected {last - first} frames in [{from_timestamp}, {to_timestamp}), decoded {len(frames)}", path
        )
    return np.stack(frames)
