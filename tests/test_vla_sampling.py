"""Window rules, the global permutation over ranks x workers, exact resume, and the RLDS stream's interleaving."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch.utils.data import DataLoader

from datasets_build.episode import LanguageWindow
from datasets_build.sources import open_source
from datasets_build.sources.base import EpisodeLayout
from tests import rlds_fixtures as fx
from tests.calvin_fixtures import write_calvin
from vla.data import VLAGlobalDataset, VLASampleStream
from vla.episode_index import fingerprint, layout_stats, load_layouts, read_layouts, save_layouts
from vla.normalization import ActionNormalizer
from vla.sampling import ResumeState, SampleIndex, resume_plan, slot_stream, window_spans


def _layout(length: int, windows: list[tuple[int, int, str]] | None = None, name: str = "e") -> EpisodeLayout:
    actions = np.zeros((length, 7), np.float32)
    actions[:, :6] = np.arange(length)[:, None] / 100
    language = [LanguageWindow(a, b, t) for a, b, t in windows or []]
    return EpisodeLayout(name, actions, "" if windows else "pick", language, ("static",))


def test_window_rules_match_vlm4vla_calvin() -> None:
    # an annotation window with inclusive end e: VLM4VLA starts samples at start..e-1 and no chunk holds frame e
    assert window_spans(8, "open", [], "full") == [(0, 8, "open")]
    assert window_spans(8, "open", [], "drop_last") == [(0, 7, "open")]
    windows = [LanguageWindow(1, 5, "a"), LanguageWindow(5, 6, "b"), LanguageWindow(6, 9, "")]
    assert window_spans(9, "", windows, "full") == [(1, 5, "a"), (5, 6, "b")]
    assert window_spans(9, "", windows, "drop_last") == [(1, 4, "a")]  # a 1-frame window yields nothing
    index = SampleIndex.from_layouts([_layout(8), _layout(5, [(0, 3, "x"), (3, 5, "y")])], "drop_last")
    assert index.step.tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 3]
    assert index.end.tolist() == [7] * 7 + [2, 2, 4]
    assert [index.texts[i] for i in index.text] == ["pick"] * 7 + ["x", "x", "y"]


def test_calvin_fixture_windows_under_both_rules(tmp_path: Path) -> None:
    calvin = write_calvin(tmp_path / "task", annotations=[(2, 9, "push the block", "push"), (12, 13, "turn", "t")])
    source = open_source("calvin", calvin.root, cameras=["static"], load_depth=False)
    layouts = read_layouts(source, progress=False)
    assert [len(layout) for layout in layouts] == [8, 2]  # inclusive annotation ends
    full = SampleIndex.from_layouts(layouts, "full")
    paper = SampleIndex.from_layouts(layouts, "drop_last")
    assert len(full) == 10
    assert len(paper) == 8  # 2..8 of the first window, 12 of the second: end - start samples each
    frame = source.read_image(source.episode_keys()[0], "static", 3)
    assert np.array_equal(frame, source.load_episode(source.episode_keys()[0]).frames["static"][3])


def test_global_permutation_covers_every_sample_once_per_epoch_over_2_ranks_x_2_workers() -> None:
    size, seed = 103, 7
    seen: list[tuple[int, int]] = []
    for rank in range(2):
        for worker in range(2):
            slot, slots, start = resume_plan(rank, 2, worker, 2, batch_size=4, resume=None)
            share = len(range(slot, size, slots))
            seen += list(itertools.islice(slot_stream(size, seed, slot, slots, start), 2 * share))
    for epoch in (0, 1):
        indices = sorted(i for e, i in seen if e == epoch)
        assert indices == list(range(size))  # each sample exactly once, across ranks and workers
    first = [i for e, i in seen if e == 0]
    second = [i for e, i in seen if e == 1]
    assert first != second  # a new permutation each epoch


def _demo_dataset(demo_dir: Path, normalizer: ActionNormalizer, **kwargs: Any) -> VLAGlobalDataset:
    layouts = read_layouts(open_source("demo", demo_dir), progress=False)
    return VLAGlobalDataset("demo", str(demo_dir), 2, normalizer, layouts=layouts, seed=3, **kwargs)


@pytest.fixture(scope="module")
def normalizer(demo_dir: Path) -> ActionNormalizer:
    layouts = read_layouts(open_source("demo", demo_dir), progress=False)
    return ActionNormalizer.from_stats(layout_stats(layouts))


def _ids(batches: list[list[Any]]) -> list[tuple[str, int]]:
    return [(s.episode, s.step) for batch in batches for s in batch]


def test_dataloader_workers_and_ranks_read_disjoint_parts(demo_dir: Path, normalizer: ActionNormalizer) -> None:
    """The real DataLoader path: 2 ranks x 2 worker processes read one epoch's samples once each."""
    epoch = len(_demo_dataset(demo_dir, normalizer))
    per_slot = -(-epoch // 4)
    seen: list[tuple[str, int]] = []
    for rank in range(2):
        dataset = _demo_dataset(demo_dir, normalizer, rank=rank, world_size=2, batch_size=1)
        loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=list)
        # slots whose share is one short start the next epoch at their last batch: take whole shares only
        batches = list(itertools.islice(loader, 2 * per_slot))
        shares = [len(range(rank * 2 + w, epoch, 4)) for w in range(2)]
        kept = [b for i, b in enumerate(batches) if i // 2 < shares[i % 2]]
        seen += _ids(kept)
    assert len(seen) == epoch
    assert len(set(seen)) == epoch


def test_resume_continues_every_worker_where_it_stopped(demo_dir: Path, normalizer: ActionNormalizer) -> None:
    kwargs: dict[str, Any] = {"rank": 0, "world_size": 1, "batch_size": 2}
    whole = list(
        itertools.islice(
            DataLoader(_demo_dataset(demo_dir, normalizer, **kwargs), 2, num_workers=2, collate_fn=list), 7
        )
    )
    resume = ResumeState(batches=3, world_size=1, num_workers=2, batch_size=2)
    resumed_set = _demo_dataset(demo_dir, normalizer, resume=resume, **kwargs)
    resumed = list(itertools.islice(DataLoader(resumed_set, 2, num_workers=2, collate_fn=list), 4))
    assert _ids(resumed) == _ids(whole[3:])
    # another layout (1 worker instead of 2): restarts at the same share of the epoch, nothing repeated twice
    slot, slots, start = resume_plan(0, 1, 0, 1, 2, resume)
    assert (slot, slots, start) == (0, 1, 6)


def test_stream_interleaves_episodes_and_keeps_rlds_images_encoded(tmp_path: Path) -> None:
    root = fx.write_rlds(
        tmp_path, "bridge_dataset", "1.0.0", fx.bridge_v2_spec(8, 8), fx.many_bridge_episodes(40, length=6), [20, 20]
    )
    norm = ActionNormalizer.from_stats(None, "none")
    stream = VLASampleStream("rlds", str(root), 2, norm, shuffle_buffer=60, interleave=16, seed=1)
    encoded = stream.source.load_encoded(stream.keys[0])
    assert encoded is not None
    assert isinstance(encoded[1][0], bytes)
    samples = list(itertools.islice(iter(stream), 32))
    assert all(s.image.dtype == np.uint8 and s.image.shape == (8, 8, 3) for s in samples)
    assert len({s.episode for s in samples}) >= 16  # a batch of 32 from many episodes
    again = list(itertools.islice(iter(stream), 32))
    assert [(s.episode, s.step) for s in samples] == [(s.episode, s.step) for s in again]  # seeded


def test_episode_index_cache_round_trip(tmp_path: Path, demo_dir: Path) -> None:
    source = open_source("demo", demo_dir)
    layouts = read_layouts(source, progress=False)
    key = fingerprint("demo", str(demo_dir), {})
    save_layouts(tmp_path, layouts, key)
    loaded = load_layouts(tmp_path, key)
    assert loaded is not None
    assert [(x.episode_id, x.instruction, x.cameras) for x in loaded] == [
        (x.episode_id, x.instruction, x.cameras) for x in layouts
    ]
    assert all(np.array_equal(a.actions, b.actions) for a, b in zip(loaded, layouts, strict=True))
    assert load_layouts(tmp_path, {**key, "options": {"other": 1}}) is None  # another source: not reused
    episode = source.load_episode(source.episode_keys()[1])
    assert np.array_equal(layouts[1].actions, episode.actions)
    assert np.array_equal(source.read_image(source.episode_keys()[1], "static", 4), episode.frames["static"][4])
