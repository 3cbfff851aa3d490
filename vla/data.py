"""Training samples from robot data: one camera image of the current frame, the instruction, the next `chunk`
actions (normalised) and a mask for chunk steps past the end of the episode or language window.

Two iterable datasets feed the DataLoader, each split over distributed ranks and DataLoader workers:

- `VLAGlobalDataset` (sources with random access: calvin, libero, lerobot, demo): samples drawn by index from one
  permutation of every sample per epoch (`vla.sampling`), reading only the frame each sample needs;
- `VLASampleStream` (rlds, or `data.sampler: stream`): whole episodes, `interleave` at a time, through a shuffle
  buffer of samples whose images stay encoded until drawn (as OpenVLA's pipeline keeps them).

Images are augmented (training only, `data.augment`) after their first resize to the model's image size;
`VLACollator` then runs the backbone's processor in the workers too, so the training loop only moves ready
tensors to the device.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from datasets_build.actions import ACTION_DIM
from datasets_build.episode import Episode
from datasets_build.errors import ConfigError, DataError
from datasets_build.sources import Source, open_source
from datasets_build.sources.base import EpisodeLayout
from vla.augment import augment_image
from vla.backbones.base import Backbone
from vla.configuration_vla import AugmentConfig
from vla.normalization import ActionNormalizer
from vla.sampling import ResumeState, SampleIndex, resume_plan, slot_stream, window_spans


@dataclass
class VLASample:
    """One training example before tokenisation."""

    image: np.ndarray  # uint8 (H, W, 3)
    instruction: str
    actions: np.ndarray  # float32 (chunk, 7), arm dims normalised, gripper in {0, 1}
    mask: np.ndarray  # bool (chunk,): False past the episode / window end
    episode: str = ""  # episode id (for inspection and the shuffling benchmark)
    step: int = 0


def chunk_target(actions: np.ndarray, step: int, end: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """(target (chunk, 7), mask (chunk,)) of the actions [step, min(step + chunk, end)); padded steps repeat the
    last valid gripper (a valid 0/1 BCE target) and are masked out of the loss."""
    stop = min(step + chunk, end)
    target = np.zeros((chunk, ACTION_DIM), dtype=np.float32)
    target[: stop - step] = actions[step:stop]
    target[stop - step :, -1] = actions[stop - 1, -1]
    mask = np.zeros(chunk, dtype=bool)
    mask[: stop - step] = True
    return target, mask


def episode_samples(
    episode: Episode, chunk: int, normalizer: ActionNormalizer, camera: str = "", window_rule: str = "full"
) -> Iterator[VLASample]:
    """Every sample of `episode` under `window_rule`, in step order (CALVIN: only language-window steps)."""
    name = camera or (episode.cameras[0] if episode.cameras else "")
    if name not in episode.frames:
        raise DataError(f"no camera {name!r} (has {episode.cameras})", f"{episode.source}:{episode.episode_id}")
    frames = episode.frames[name]
    actions = normalizer.normalize(episode.actions)
    for start, end, instruction in window_spans(len(episode), episode.instruction, episode.language, window_rule):
        for t in range(start, end):
            target, mask = chunk_target(actions, t, end, chunk)
            yield VLASample(frames[t], instruction, target, mask, episode.episode_id, t)


def prepare_image(
    image: np.ndarray | bytes, augment: AugmentConfig | None, image_size: int, rng: np.random.Generator | None
) -> np.ndarray:
    """Decode stored bytes; with augmentation on, first resize to `image_size` (bicubic, as the backbone's first
    resize does) and augment; otherwise the image as stored (the collator resizes it)."""
    if isinstance(image, bytes):
        try:
            with Image.open(io.BytesIO(image)) as pil:
                image = np.asarray(pil.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot decode image ({exc})") from exc
    if augment is None or not augment.enabled or rng is None:
        return image
    if image.shape[:2] != (image_size, image_size):
        resized = Image.fromarray(np.ascontiguousarray(image)).resize(
            (image_size, image_size), Image.Resampling.BICUBIC
        )
        image = np.asarray(resized)
    return augment_image(image, augment, rng)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _SourceDataset(IterableDataset):
    """What both datasets share: the source (opened once per worker), normalisation, camera and augmentation."""

    def __init__(
        self,
        source: str,
        path: str,
        chunk: int,
        normalizer: ActionNormalizer,
        camera: str = "",
        options: dict[str, Any] | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        window_rule: str = "full",
        augment: AugmentConfig | None = None,
        image_size: int = 224,
    ) -> None:
        super().__init__()
        self.source_name, self.path, self.options = source, path, dict(options or {})
        self.chunk, self.normalizer, self.camera = chunk, normalizer, camera
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.window_rule, self.augment, self.image_size = window_rule, augment, image_size
        self._source: Source | None = None

    def _open(self) -> Source:
        try:
            return open_source(self.source_name, self.path, **self.options)
        except TypeError as exc:
            raise ConfigError(f"data.options: bad option for source {self.source_name!r} ({exc})") from exc

    @property
    def source(self) -> Source:
        """This process's (or worker's) own opened source."""
        if self._source is None:
            self._source = self._open()
        return self._source

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_source"] = None  # every worker opens its own
        return state

    def _camera(self, layout: EpisodeLayout) -> str:
        name = self.camera or (layout.cameras[0] if layout.cameras else "")
        if layout.cameras and name not in layout.cameras:
            raise DataError(
                f"no camera {name!r} (has {list(layout.cameras)})", f"{self.source_name}:{layout.episode_id}"
            )
        return name


class VLAGlobalDataset(_SourceDataset):
    """Samples by index from one permutation of every sample per epoch, split over ranks x workers (no overlap).

    `layouts` are the source's episode layouts in `episode_keys()` order (`vla.episode_index`); `resume` says
    how many batches each rank already took, so a resumed run continues every worker's stream where it was.
    """

    def __init__(
        self,
        *args: Any,
        layouts: Sequence[EpisodeLayout],
        batch_size: int = 1,
        resume: ResumeState | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.layouts = list(layouts)
        self.index = SampleIndex.from_layouts(self.layouts, self.window_rule)
        if len(self.index) == 0:
            raise DataError("no training samples (no episode step carries an instruction)", self.path)
        self.batch_size, self.resume = batch_size, resume
        self._keys: list[Any] | None = None
        self._normalized: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_keys"], state["_normalized"] = None, {}
        return state

    def sample(self, index: int, rng: np.random.Generator | None = None) -> VLASample:
        """Sample `index` of the index (image read, augmented with `rng` when augmentation is on)."""
        if self._keys is None:
            self._keys = self.source.episode_keys()
            if len(self._keys) != len(self.layouts):
                raise DataError(f"{len(self._keys)} episodes, the index has {len(self.layouts)}", self.path)
        position = int(self.index.episode[index])
        layout = self.layouts[position]
        step, end = int(self.index.step[index]), int(self.index.end[index])
        actions = self._normalized.get(position)
        if actions is None:
            if len(self._normalized) > 4096:
                self._normalized.clear()
            actions = self._normalized[position] = self.normalizer.normalize(layout.actions)
        target, mask = chunk_target(actions, step, end, self.chunk)
        image = self.source.read_image(self._keys[position], self._camera(layout), step)
        image = prepare_image(image, self.augment, self.image_size, rng)
        return VLASample(image, self.index.texts[int(self.index.text[index])], target, mask, layout.episode_id, step)

    def __iter__(self) -> Iterator[VLASample]:
        worker, workers = _worker()
        slot, slots, start = resume_plan(self.rank, self.world_size, worker, workers, self.batch_size, self.resume)
        for epoch, index in slot_stream(len(self.index), self.seed, slot, slots, start):
            rng = np.random.default_rng([self.seed, epoch, index]) if self.augment and self.augment.enabled else None
            yield self.sample(index, rng)


@dataclass
class _Pending:
    """A sample waiting in the shuffle buffer, its image still as stored (encoded bytes or an array)."""

    image: np.ndarray | bytes
    instruction: str
    actions: np.ndarray
    mask: np.ndarray
    episode: str
    step: int


class VLASampleStream(_SourceDataset):
    """An endless stream of `VLASample`s: each (rank, worker) reads its own episodes in a shuffled order,
    `interleave` of them at once, into a `shuffle_buffer` of samples drawn at random (both per process, split
    over its workers)."""

    def __init__(self, *args: Any, shuffle_buffer: int = 20000, interleave: int = 64, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shuffle_buffer, self.interleave = max(1, shuffle_buffer), max(1, interleave)
        self.keys = self._open().episode_keys()
        if not self.keys:
            raise DataError("no episodes", self.path)

    def _my_keys(self) -> tuple[list[Any], int]:
        """This (rank, worker)'s episode keys and stream seed; everyone reads all keys when there are too few."""
        worker, workers = _worker()
        slot, slots = self.rank * workers + worker, self.world_size * workers
        keys = self.keys[slot::slots] if len(self.keys) >= slots else list(self.keys)
        return keys, self.seed * 100_003 + slot

    def _episode(self, key: Any) -> Iterator[_Pending]:
        """One episode's samples in step order, images as stored."""
        encoded = self.source.load_encoded(key, self.camera)
        frames: Sequence[Any] | np.ndarray
        if encoded is not None:
            layout, frames = encoded
        else:
            episode = self.source.load_episode(key)
            layout = EpisodeLayout.of(episode)
            name = self._camera(layout)
            if name not in episode.frames:
                raise DataError(f"no camera {name!r} (has {episode.cameras})", f"{episode.source}:{episode.episode_id}")
            frames = episode.frames[name]
        actions = self.normalizer.normalize(layout.actions)
        for start, end, text in window_spans(len(layout), layout.instruction, layout.language, self.window_rule):
            for t in range(start, end):
                target, mask = chunk_target(actions, t, end, self.chunk)
                image = (
                    frames[t] if isinstance(frames[t], bytes) else np.array(frames[t])
                )  # not a view: frees the episode
                yield _Pending(image, text, target, mask, layout.episode_id, t)

    def __iter__(self) -> Iterator[VLASample]:
        keys, seed = self._my_keys()
        _, workers = _worker()
        rng = random.Random(seed)
        augment_rng = np.random.default_rng([self.seed, seed])
        capacity = math.ceil(self.shuffle_buffer / workers)
        width = min(math.ceil(self.interleave / workers), max(1, len(keys)))  # never one episode twice at once
        buffer: list[_Pending] = []
        order: list[Any] = []
        open_episodes: list[Iterator[_Pending]] = []
        passes = 0
        while True:
            while len(open_episodes) < width:
                if not order:
                    if passes and len(buffer) < capacity:  # every episode opened once: a bigger buffer would only
                        capacity = max(1, len(buffer))  # hold repeats of a small dataset (and delay the first sample)
                    passes += 1
                    order = list(keys)
                    rng.shuffle(order)
                open_episodes.append(self._episode(order.pop()))
            pick = rng.randrange(len(open_episodes))
            pending = next(open_episodes[pick], None)
            if pending is None:
                open_episodes.pop(pick)
                continue
            if len(buffer) < capacity:
                buffer.append(pending)
                continue
            index = rng.randrange(len(buffer))
            drawn, buffer[index] = buffer[index], pending
            yield self._finish(drawn, augment_rng)

    def _finish(self, pending: _Pending, rng: np.random.Generator) -> VLASample:
        image = prepare_image(pending.image, self.augment, self.image_size, rng)
        return VLASample(image, pending.instruction, pending.actions, pending.mask, pending.episode, pending.step)


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
