"""The omni_generation corpus: depth / segmentation / future-frame / image targets against the recorded episodes."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

import datasets_build.corpora.omni_generation  # noqa: F401  (registers the corpus)
from datasets_build.corpora import BuildConfig, EpisodeContext, build_corpus, episode_rng, make_builder, verify_corpus
from datasets_build.corpora.base import frame_image
from datasets_build.corpora.omni_generation import (
    CLASSES,
    MARKERS,
    PALETTE_VERSION,
    TEMPLATES,
    decode_depth_target,
    decode_segmentation_target,
    encode_depth_target,
    encode_segmentation_target,
    object_class,
    segmentation_palette,
)
from datasets_build.errors import ConfigError
from datasets_build.geometry.estimated import EstimatedOptions
from datasets_build.geometry.provider import GeometryConfig
from datasets_build.sample import Sample, assistant_turn, user_turn
from datasets_build.shards import ShardSet
from datasets_build.sim.scene import ROBOT_ID, TABLE_ID
from tests.calvin_fixtures import write_calvin
from tests.helpers import synthetic_episode


def samples_of(builder, episodes, seeds=(0,)):
    for seed in seeds:
        for ep in episodes:
            for sample in builder.build(ep, EpisodeContext(episode_rng(seed, ep.episode_id, ep.source))).samples:
                yield ep, sample


def nearest_indices(src: int, dst: int) -> np.ndarray:
    """The documented resize rule, written out independently: dst pixel i samples src floor((i + 1/2) src / dst)."""
    return np.array([min(src - 1, int(np.floor((i + 0.5) * src / dst))) for i in range(dst)])


def resized(array, size):
    h, w = array.shape[:2]
    width, height = size
    return array[nearest_indices(h, height)][:, nearest_indices(w, width)]


def roundtrip(sample):
    return Sample.decode(sample.encode())


@pytest.mark.parametrize("camera", ["static", "wrist"])
def test_depth_targets_decode_to_the_episode_depth(demo_episodes, camera):
    builder = make_builder("omni_generation", {"question_types": ["depth"], "camera": camera, "frames_per_episode": 3})
    checked = 0
    for ep, built in samples_of(builder, demo_episodes):
        sample = roundtrip(built)
        assert sample.target.mode == "I;16"
        assert sample.target.size == sample.images[0].size
        assert sample.meta["depth_origin"] == "ground_truth"
        got = decode_depth_target(sample.target, sample.meta)
        true = resized(ep.depth[camera][sample.meta["frame"]], sample.target.size).astype(np.float64)
        valid = np.isfinite(true) & (true > 0)
        assert np.array_equal(np.isfinite(got), valid)
        assert np.abs(got[valid] - true[valid]).max() <= 0.001
        stats = sample.meta["depth_stats"]
        assert stats["valid_pixels"] == int(valid.sum())
        assert abs(stats["mean_mm"] - 1000 * true[valid].mean()) <= 1.0
        assert abs(stats["min_mm"] - 1000 * true[valid].min()) <= 1.0
        checked += 1
    assert checked == 18
    if camera == "wrist":  # 128 px frames: the target is upsampled to the 224 px input
        assert sample.meta["frame_size"] == [128, 128]
        assert sample.target.size == (224, 224)


def test_colormap_depth_inverts_within_one_level(demo_episodes):
    near, far = 0.5, 2.5
    options = {"question_types": ["depth"], "depth_encoding": "colormap", "depth_near": near, "depth_far": far}
    builder = make_builder("omni_generation", options)
    step = (far - near) / 255
    for ep, built in samples_of(builder, demo_episodes[:3]):
        sample = roundtrip(built)
        assert sample.target.mode == "RGB"
        assert sample.meta["colormap"] == "turbo"
        got = decode_depth_target(sample.target, sample.meta)
        true = np.clip(resized(ep.depth["static"][sample.meta["frame"]], sample.target.size), near, far)
        assert np.abs(got - true).max() <= step / 2 + 1e-6
        assert builder.verify(sample)
    # invalid pixels are black and come back as NaN; off-map colours take the nearest level
    depth = np.array([[0.0, np.nan, 1.0, 9.0]])
    image = encode_depth_target(depth, "colormap", near, far)
    assert np.asarray(image)[0, 0].tolist() == [0, 0, 0]
    back = decode_depth_target(image, {"depth_encoding": "colormap", "depth_near_m": near, "depth_far_m": far})
    assert np.isnan(back[0, :2]).all()
    assert abs(back[0, 2] - 1.0) <= step / 2
    assert back[0, 3] == pytest.approx(far)
    noisy = Image.fromarray(np.clip(np.asarray(image).astype(int) + 2, 0, 255).astype(np.uint8))
    again = decode_depth_target(noisy, {"depth_encoding": "colormap", "depth_near_m": near, "depth_far_m": far})
    assert abs(again[0, 2] - 1.0) <= 3 * step


def test_png16_encoding_and_sample_roundtrip_are_bit_exact():
    depth = np.array([[0.0, -1.0, np.inf, 0.0004], [0.0006, 1.2345, 65.535, 65.536]])
    image = encode_depth_target(depth)
    assert image.mode == "I;16"
    assert np.asarray(image).tolist() == [[0, 0, 0, 0], [1, 1234, 65535, 0]]  # 1.2345 rounds half to even
    values = np.random.default_rng(0).integers(0, 65536, size=(17, 23), dtype=np.uint16)
    for target in (Image.fromarray(values), values):
        sample = Sample(
            "k", [user_turn("x"), assistant_turn("<depth_map>")], images=[Image.new("RGB", (23, 17))], target=target
        )
        back = roundtrip(sample).target
        assert back.mode == "I;16"
        assert np.array_equal(np.asarray(back), values)
    metres = decode_depth_target(Image.fromarray(values), {"depth_encoding": "png16_mm"})
    assert np.array_equal(np.isnan(metres), values == 0)
    with pytest.raises(ValueError, match="16-bit"):
        decode_depth_target(Image.new("RGB", (2, 2)), {"depth_encoding": "png16_mm"})


def test_segmentation_colours_map_back_to_the_episode_ids(demo_episodes):
    palette = segmentation_palette()
    assert list(palette) == list(CLASSES)
    assert len(set(palette.values())) == len(palette)
    for camera in ("static", "wrist"):
        options = {"question_types": ["segmentation"], "camera": camera, "frames_per_episode": 2}
        builder = make_builder("omni_generation", options)
        checked = 0
        for ep, built in samples_of(builder, demo_episodes):
            sample = roundtrip(built)
            classes = decode_segmentation_target(sample.target)
            assert (classes >= 0).all()
            ids = resized(ep.segmentation[camera][sample.meta["frame"]], sample.target.size)
            assert np.all(classes[ids == TABLE_ID] == CLASSES.index("table"))
            assert np.all(classes[ids == ROBOT_ID] == CLASSES.index("robot"))
            known = (ids == TABLE_ID) | (ids == ROBOT_ID)
            for name, obj in ep.objects.items():
                assert obj.segmentation_id is not None
                wanted = CLASSES.index(object_class(name, obj.category))
                assert np.all(classes[ids == obj.segmentation_id] == wanted)
                known |= ids == obj.segmentation_id
                assert name in CLASSES  # the demo sim's objects all have their own class
            assert np.all(classes[~known] == CLASSES.index("background"))
            counts = sample.meta["class_pixels"]
            assert sum(counts.values()) == classes.size
            question = sample.messages[0]["content"][1]["text"]
            for name in counts:  # the legend names every class present with its colour
                assert f"{name} {palette[name]}" in question
            assert sample.meta["palette_version"] == PALETTE_VERSION
            checked += 1
        assert checked == 12


def test_object_classes_and_segmentation_codec():
    assert object_class("Red Block", "block") == "red block"
    assert object_class("grey block", "block") == "other block"
    assert object_class("bowl", "container") == "other container"
    assert object_class("drawer handle") == "other object"
    classes = np.arange(len(CLASSES)).reshape(3, 5)
    assert np.array_equal(decode_segmentation_target(encode_segmentation_target(classes)), classes)
    off = Image.fromarray(np.full((1, 2, 3), [229, 26, 74], dtype=np.uint8))
    assert decode_segmentation_target(off).tolist() == [[-1, -1]]
    assert decode_segmentation_target(off, nearest=True).tolist() == [[CLASSES.index("red block")] * 2]
    with pytest.raises(ValueError, match="class indices"):
        encode_segmentation_target(np.array([[len(CLASSES)]]))


def test_future_frames_and_images_equal_the_recorded_frames(demo_episodes):
    builder = make_builder("omni_generation", {"question_types": ["future_frame", "image"], "future_offset": 5})
    seen = set()
    for ep, sample in samples_of(builder, demo_episodes):
        meta = sample.meta
        seen.add(meta["question_type"])
        expected = frame_image(ep.frames["static"][meta["target_frame"]], 224)
        back = roundtrip(sample)
        assert np.array_equal(np.asarray(back.target), np.asarray(expected))  # PNG: lossless
        if meta["question_type"] == "future_frame":
            assert meta["target_frame"] == meta["frame"] + 5 < len(ep)
            assert ep.instruction in sample.messages[0]["content"][1]["text"]
        else:
            assert meta["target_frame"] == meta["frame"]
        assert builder.verify(back)
    assert seen == {"future_frame", "image"}


def test_markers_templates_and_config_errors(demo_episodes):
    builder = make_builder("omni_generation", {"frames_per_episode": 4})
    wordings: dict[str, set[str]] = {}
    for _ep, sample in samples_of(builder, demo_episodes, seeds=range(3)):
        qtype = sample.meta["question_type"]
        assert sample.task == f"omni_generation/{qtype}"
        assert sample.messages[1]["content"][0]["text"] == MARKERS[qtype]
        wordings.setdefault(qtype, set()).add(sample.meta["template"])
    assert all(len(TEMPLATES[q]) >= 3 and len(wordings[q]) >= 3 for q in TEMPLATES)
    for bad in (
        {"question_types": ["normals"]},
        {"depth_encoding": "exr"},
        {"legend": "some"},
        {"future_offset": 0},
        {"depth_near": 2.0, "depth_far": 1.0},
    ):
        with pytest.raises(ConfigError):
            make_builder("omni_generation", bad)


def tampered(sample, qtype):
    """Copies of a sample with one thing changed each; verify must reject every one."""
    out = []
    target = np.asarray(sample.target).copy()
    if qtype == "depth":
        target[0, 0] = target[0, 0] + 7 if target[0, 0] else 500
    elif qtype == "segmentation":
        target[:4, :4] = [1, 2, 3]  # off the palette
    else:
        target[:20] = 255 - target[:20]
    out.append(replace(sample, target=Image.fromarray(target)))
    out.append(replace(sample, target=None))
    out.append(replace(sample, messages=[sample.messages[0], assistant_turn("<wrong>")]))
    out.append(replace(sample, target=sample.target.resize((100, 100))))
    return out


def test_verify_accepts_built_samples_and_rejects_tampered_ones(demo_episodes):
    builder = make_builder("omni_generation")
    counts: dict[str, int] = {}
    for _ep, sample in samples_of(builder, demo_episodes):
        qtype = sample.meta["question_type"]
        counts[qtype] = counts.get(qtype, 0) + 1
        assert builder.verify(sample)
        assert builder.verify(roundtrip(sample))
        for bad in tampered(sample, qtype):
            assert not builder.verify(bad), qtype
    assert set(counts) == set(MARKERS)
    # a segmentation whose counts were recomputed consistently but whose meta counts lie is still rejected
    seg = next(s for _e, s in samples_of(builder, demo_episodes[:2]) if s.meta["question_type"] == "segmentation")
    lie = replace(seg, meta={**seg.meta, "class_pixels": {**seg.meta["class_pixels"], "table": 1}})
    assert not builder.verify(lie)
    depth = next(s for _e, s in samples_of(builder, demo_episodes[:2]) if s.meta["question_type"] == "depth")
    stats = {**depth.meta["depth_stats"], "mean_mm": depth.meta["depth_stats"]["mean_mm"] + 2.5}
    assert not builder.verify(replace(depth, meta={**depth.meta, "depth_stats": stats}))


def test_build_is_deterministic_and_verifies(demo_dir, tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    summaries = []
    for out in outs:
        cfg = BuildConfig(name="omni_generation", source="demo", input=str(demo_dir), out=str(out), seed=4)
        summaries.append(build_corpus(cfg))
    assert summaries[0]["samples"] == summaries[1]["samples"] >= 40
    assert set(summaries[0]["per_task"]) == {f"omni_generation/{q}" for q in MARKERS}
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    report = verify_corpus(outs[0])
    assert report["errors"] == 0
    assert report["samples"] == summaries[0]["samples"]
    assert any(s.target is not None and s.target.mode == "I;16" for s in ShardSet(outs[0]))


def test_skips_are_counted_with_reasons():
    bare = replace(synthetic_episode(length=6), depth={}, segmentation={}, language=[], instruction="")
    gt = {"geometry": GeometryConfig(mode="ground_truth"), "future_offset": 3}
    builder = make_builder("omni_generation", gt)
    result = builder.build(bare, EpisodeContext(np.random.default_rng(0)))
    assert sorted(result.skipped) == sorted(
        ["depth:no_depth"] * 2 + ["segmentation:no_segmentation"] * 2 + ["future_frame:no_instruction"] * 2
    )
    assert [s.meta["question_type"] for s in result.samples] == ["image", "image"]
    short = make_builder("omni_generation", {**gt, "future_offset": 6})
    assert "future_frame:beyond_end" in short.build(bare, EpisodeContext(np.random.default_rng(0))).skipped
    assert builder.build(bare, EpisodeContext(np.random.default_rng(0))).skipped == result.skipped  # deterministic
    no_camera = make_builder("omni_generation", {"camera": "left"})
    assert no_camera.build(bare, EpisodeContext(np.random.default_rng(0))).skipped == ["no_camera"]
    # a segmentation map whose frame shows no object is not a target
    empty = replace(synthetic_episode(length=4), segmentation={"static": np.zeros((4, 32, 32), dtype=np.int32)})
    result = make_builder("omni_generation", {"question_types": ["segmentation"]}).build(
        empty, EpisodeContext(np.random.default_rng(0))
    )
    assert result.skipped == ["segmentation:no_objects"] * 2


def test_calvin_depth_from_depth_static_and_box_segmentation(tmp_path):
    fixture = write_calvin(tmp_path / "task_ABC_D")
    out = tmp_path / "corpus"
    options = {"question_types": ["depth", "segmentation"], "frames_per_episode": 2}
    summary = build_corpus(
        BuildConfig(name="omni_generation", source="calvin", input=str(fixture.root), out=str(out), options=options)
    )
    assert verify_corpus(out)["errors"] == 0
    # only scene A matches the config's table, so only its episodes have block sizes (box masks)
    assert summary["skipped"] == {"segmentation:no_masks": 4}
    assert summary["episodes"] == 4
    assert summary["per_task"] == {"omni_generation/depth": 8, "omni_generation/segmentation": 4}
    from datasets_build.sources import open_source

    episodes = {ep.episode_id: ep for ep in open_source("calvin", fixture.root).episodes()}
    blocks_seen = 0
    for sample in ShardSet(out):
        ep = episodes[sample.meta["episode_id"]]
        step = sample.meta["frame"]
        if sample.meta["question_type"] == "depth":
            assert sample.target.size == (224, 224)  # 200 px frames upsampled like the input image
            true = resized(ep.depth["static"][step], sample.target.size)
            got = decode_depth_target(sample.target, sample.meta)
            assert np.abs(got - true).max() <= 0.0005 + 1e-6
            continue
        assert sample.meta["segmentation_origin"] == "geometry"
        classes = decode_segmentation_target(sample.target)
        rgb = resized(ep.frames["static"][step], sample.target.size)
        for name in ("red block", "blue block", "pink block"):
            mask = classes == CLASSES.index(name)
            if mask.any():  # box masks land on the block's rendered disc
                colour = {"red block": (255, 0, 0), "blue block": (0, 0, 255), "pink block": (255, 0, 255)}[name]
                assert (np.all(rgb[mask] == colour, axis=1)).mean() > 0.9
                blocks_seen += 1
    assert blocks_seen >= 4


@pytest.fixture(scope="module")
def tiny_models():
    from tests.geometry_models import install_tiny_geometry_models

    return install_tiny_geometry_models()


def test_estimated_depth_for_sources_without_depth(tiny_models):
    bare = replace(synthetic_episode(length=4), depth={}, segmentation={})
    geometry = GeometryConfig(mode="auto", estimated=EstimatedOptions(**tiny_models))
    builder = make_builder("omni_generation", {"question_types": ["depth"], "geometry": geometry}, image_size=64)
    result = builder.build(bare, EpisodeContext(np.random.default_rng(0)))
    assert len(result.samples) == 2
    assert not result.skipped
    for sample in result.samples:
        assert sample.meta["depth_origin"] == "estimated"
        assert sample.target.size == sample.images[0].size == (64, 64)
        depth = decode_depth_target(sample.target, sample.meta)
        assert np.nanmax(depth) <= 3.0  # the tiny metric head's range
        assert builder.verify(roundtrip(sample))


def test_targets_read_back_as_mode_i_still_verify(demo_episodes):
    """Older Pillow opens 16-bit PNGs as mode "I" (int32): decoding and verify accept it."""
    builder = make_builder("omni_generation", {"question_types": ["depth"]})
    _ep, sample = next(samples_of(builder, demo_episodes[:1]))
    as_i = sample.target.convert("I")
    assert as_i.mode == "I"
    assert np.array_equal(
        decode_depth_target(as_i, sample.meta), decode_depth_target(sample.target, sample.meta), equal_nan=True
    )
    assert builder.verify(replace(sample, target=as_i))
