"""Training samples from robot data: one camera image of the current frame, the instruction, the next `chunk`
actions (normalised) and a mask for chunk steps past the end of the episode or language window.

`VLASampleStream` is an IterableDataset: each DataLoader worker (and each distributed rank) reads its own
episodes, decodes them, and yields samples through a shuffle buffer; `VLACollator` runs the backbone's processor
in the workers too, so the training loop only moves ready tensors to the device.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from datasets_build.actions import ACTION_DIM
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError, DataError
from datasets_build.sources import Source, open_source
from vla.backbones.base import Backbone
from vla.normalization import ActionNormalizer


@dataclass
class VLASample:
    """One training example before tokenisation."""

    image: np.ndarray  # uint8 (H, W, 3)
    instruction: str
    actions: np.ndarray  # float32 (chunk, 7), arm dims normalised, gripper in {0, 1}
    mask: np.ndarray  # bool (chunk,): False past the episode / window end


def episode_samples(
    episode: Episode, chunk: int, normalizer: ActionNormalizer, camera: str = ""
) -> Iterator[VLASample]:
    """Every step of `episode` that carries an instruction, as a sample (CALVIN: only language-window steps)."""
    name = camera or (episode.cameras[0] if episode.cameras else "")
    if name not in episode.frames:
        raise DataError(f"no camera {name!r} (has {episode.cameras})", f"{episode.source}:{episode.episode_id}")
    frames = episode.frames[name]
    actions = normalizer.normalize(episode.actions)
    if episode.language:
        windows = [(w.start, w.end, w.instruction) for w in episode.language]
    else:
        windows = [(0, len(episode), episode.instruction)]
    for start, end, instruction in windows:
        if not instruction.strip():
            continue
        for t in range(start, end):
            stop = min(t + chunk, end)
            target = np.zeros((chunk, ACTION_DIM), dtype=np.float32)
            target[: stop - t] = actions[t:stop]
            target[stop - t :, -1] = actions[stop - 1, -1]  # masked; keeps the gripper target a valid 0/1
            mask = np.zeros(chunk, dtype=bool)
            mask[: stop - t] = True
            yield VLASample(frames[t], instruction, target, mask)


class VLASampleStream(IterableDataset):
    """An endless, shuffled stream of `VLASample`s from a `datasets_build` source, split over ranks and workers."""

    def __init__(
        self,
        source: str,
        path: str,
        chunk: int,
        normalizer: ActionNormalizer,
        camera: str = "",
        options: dict[str, Any] | None = None,
        shuffle_buffer: int = 2000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.source_name, self.path, self.options = source, path, dict(options or {})
        self.chunk, self.normalizer, self.camera = chunk, normalizer, camera
        self.shuffle_buffer, self.seed, self.rank, self.world_size = max(1, shuffle_buffer), seed, rank, world_size
        self.keys = self._open().episode_keys()
        if not self.keys:
            raise DataError("no episodes", path)

    def _open(self) -> Source:
        try:
            return open_source(self.source_name, self.path, **self.options)
        except TypeError as exc:
            raise ConfigError(f"data.options: bad option for source {self.source_name!r} ({exc})") from exc

    def _my_keys(self) -> tuple[list[Any], int]:
        """This (rank, worker)'s episode keys and stream seed; everyone reads all keys when there are too few."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        slot, slots = self.rank * workers + worker, self.world_size * workers
        keys = self.keys[slot::slots] if len(self.keys) >= slots else list(self.keys)
        return keys, self.seed * 100_003 + slot

    def __iter__(self) -> Iterator[VLASample]:
        keys, seed = self._my_keys()
        rng = random.Random(seed)
        source = self._open()
        buffer: list[VLASample] = []
        while True:
            order = list(keys)
            rng.shuffle(order)
            for key in order:
                for sample in episode_samples(source.load_episode(key), self.chunk, self.normalizer, self.camera):
                    if len(buffer) < self.shuffle_buffer:
                        buffer.append(sample)
                        continue
                    index = rng.randrange(len(buffer))
                    yield buffer[index]
                    buffer[index] = sample
            rng.shuffle(buffer)
            while len(buffer) > self.shuffle_buffer // 2:  # keep half of the buffer for mixing across epochs
                yield buffer.pop()


class VLACollator:
    """Samples -> the backbone's model inputs + `actions` (B, chunk, 7) + `action_mask` (B, chunk)."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone.without_model()

    def __call__(self, samples: list[VLASample]) -> dict[str, torch.Tensor]:
        """Tokenise and stack one batch (runs in DataLoader workers)."""
        batch = self.backbone.encode([s.image for s in samples], [s.instruction for s in samples])
        batch["actions"] = torch.from_numpy(np.stack([s.actions for s in samples]))
        batch["action_mask"] = torch.from_numpy(np.stack([s.mask for s in samples]))
        return batch
