"""mp4 videos of rollouts through PyAV (H.264, yuv420p)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def episode_video_path(out: str | Path, task: str, index: int) -> Path:
    """Where a run keeps the video of trial `index` of `task`: OUT/videos/TASK_INDEX.mp4."""
    return Path(out) / "videos" / f"{task}_{index:04d}.mp4"


def write_mp4(path: str | Path, frames: Sequence[np.ndarray], fps: float = 10.0) -> Path:
    """Encode uint8 (H, W, 3) frames into `path` (written under a temporary name, then renamed)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    height, width = frames[0].shape[:2]
    height, width = height - height % 2, width - width % 2  # yuv420p needs even sizes
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            image = np.ascontiguousarray(frame[:height, :width, :3])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    tmp.replace(path)
    return path
