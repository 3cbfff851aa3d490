"""Training augmentation (RoboVLMs' shift, OpenVLA's crop + jitter), the tanh-bounded and fc_decoder heads, and
the +-0.65 clip-and-scale normalisation."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from datasets_build.image_ops import centre_crop, crop_and_resize, hsv_to_rgb, rgb_to_hsv, to_float
from vla.augment import augment_image, random_shift
from vla.configuration_vla import AugmentConfig
from vla.data import prepare_image
from vla.head import ActionHead, FCDecoderHead, bound_arm
from vla.info import TABLE9
from vla.normalization import ActionNormalizer

OPENX = AugmentConfig(crop_area=0.9, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)


def _image(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _grid_sample_shift(image: np.ndarray, pad: int, shift_x: int, shift_y: int) -> np.ndarray:
    """The random shift as RoboVLMs computes it (replicate pad, a pixel-centre grid moved by whole pixels,
    grid_sample), written from its description to pin our integer crop to it."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    h = x.shape[-1]
    x = F.pad(x, (pad,) * 4, mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    axis = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad)[:h]
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)[None]
    grid = grid + torch.tensor([shift_x, shift_y]) * 2.0 / (h + 2 * pad)
    out = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    return out[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def test_random_shift_is_robovlms_shift_with_offsets_minus_9_to_10() -> None:
    image = _image(1)
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(120):
        state = rng.bit_generator.state
        shifted = random_shift(image, 10, rng)
        rng2 = np.random.default_rng()
        rng2.bit_generator.state = state
        dy, dx = (int(v) for v in rng2.integers(1, 21, size=2))
        assert np.array_equal(shifted, _grid_sample_shift(image, 10, dx, dy))
        offsets.add(dy - 10)
        offsets.add(dx - 10)
    assert offsets == set(range(-9, 11))


def test_augmentation_is_deterministic_per_seed_and_off_by_default() -> None:
    image = _image(2, 48)
    for config in (AugmentConfig(shift_pad=10), OPENX):
        a = prepare_image(image, config, 32, np.random.default_rng([5, 0, 17]))
        b = prepare_image(image, config, 32, np.random.default_rng([5, 0, 17]))
        c = prepare_image(image, config, 32, np.random.default_rng([6, 0, 17]))
        assert a.shape == (32, 32, 3)
        assert a.dtype == np.uint8
        assert np.array_equal(a, b)
        assert not np.array_equal(a, c)
    assert not AugmentConfig().enabled
    assert prepare_image(image, AugmentConfig(), 32, np.random.default_rng(0)) is image  # nothing applied
    assert prepare_image(image, None, 32, None) is image
    assert augment_image(image, AugmentConfig(), np.random.default_rng(0)) is image


def test_openx_ops_follow_tensorflow_semantics() -> None:
    x = to_float(_image(3))
    assert np.allclose(crop_and_resize(x, (0.0, 0.0, 1.0, 1.0), (32, 32)), x)
    assert np.allclose(centre_crop(x, 1.0), x)
    # tf.image.crop_and_resize: output row i samples y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (out - 1)
    assert np.allclose(crop_and_resize(x, (0.0, 15 / 31, 16 / 31, 1.0), (17, 17)), x[:17, 15:])
    doubled = crop_and_resize(x, (0.0, 0.0, 1.0, 1.0), (63, 63))
    assert np.allclose(doubled[::2, ::2], x)
    assert np.allclose(doubled[1, 0], (x[0, 0] + x[1, 0]) / 2)
    pixels = np.random.default_rng(4).random((50, 3)).astype(np.float32)
    hsv = rgb_to_hsv(pixels)
    assert np.allclose(hsv, [colorsys.rgb_to_hsv(*p) for p in pixels], atol=1e-5)
    assert np.allclose(hsv_to_rgb(hsv), pixels, atol=1e-5)
    # brightness alone shifts every pixel by the same delta (before clipping)
    grey = np.full((8, 8, 3), 128, np.uint8)
    out = augment_image(grey, AugmentConfig(brightness=0.2), np.random.default_rng(1))
    assert len(np.unique(out)) == 1
    assert abs(int(out[0, 0, 0]) - 128) <= 52
    # a square crop of 0.9 of the area, resized back: a zoom of 1 / sqrt(0.9)
    stripes = np.zeros((100, 100, 3), np.uint8)
    stripes[:, ::10] = 255
    zoomed = augment_image(stripes, AugmentConfig(crop_area=0.9), np.random.default_rng(2))
    assert zoomed.shape == stripes.shape
    assert 9 <= np.count_nonzero(zoomed[50, :, 0] > 128) <= 10


def test_tanh_head_output_stays_within_its_bound() -> None:
    torch.manual_seed(0)
    for head in (ActionHead(64, 4), FCDecoderHead(64, 4)):
        state = torch.randn(16, 64) * 1e4  # saturating inputs
        chunk = bound_arm(head(state).view(-1, 4, 7), "tanh", 0.8)
        assert chunk.shape == (16, 4, 7)
        assert chunk[..., :6].abs().max() <= 0.8
        assert chunk[..., 6].abs().max() > 0.8  # gripper logits are not bounded
        linear = bound_arm(head(state).view(-1, 4, 7), "linear")
        assert linear[..., :6].abs().max() > 1.0
    with pytest.raises(ValueError):
        bound_arm(torch.zeros(1, 1, 7), "sigmoid")


def test_fc_decoder_matches_table9_head_sizes() -> None:
    """VLM4VLA's head (shared 2 layers + arm and gripper towers) at chunk 10 is Table 9's head size, every row."""
    for repo_id, row in TABLE9.items():
        with torch.device("meta"):
            head = FCDecoderHead(row.hidden, chunk_size=10)
        params = sum(p.numel() for p in head.parameters())
        tolerance = 0.1 if row.head_size_m == 11.6 else 0.005  # Table 9 prints 11.69M as 11.6
        assert abs(params / 1e6 - row.head_size_m) < tolerance, repo_id
    head = FCDecoderHead(64, 3)
    assert all(not m.bias.detach().any() for m in head.modules() if isinstance(m, torch.nn.Linear))
    assert head(torch.zeros(2, 64)).shape == (2, 21)


def test_clip_and_scale_normalisation() -> None:
    raw = np.array([[0.65, -1.0, 0.325, 0.0, 0.9, -0.65, 1.0]], np.float32)
    calvin = ActionNormalizer.from_stats(None, "none", action_clip=0.65)
    assert np.allclose(calvin.normalize(raw), [[1.0, -1.0, 0.5, 0.0, 1.0, -1.0, 1.0]])
    assert np.allclose(calvin.denormalize(np.array([[1.0, -1.0, 0.5, 0, 0, 0, 0]])), [[0.65, -0.65, 0.325, 0, 0, 0, 0]])
    assert not ActionNormalizer.from_stats(None, "none").clip  # raw values, no bound
    stats = {"action": {"q01": [-2.0] * 6 + [0.0], "q99": [2.0] * 6 + [1.0]}}
    openx = ActionNormalizer.from_stats(stats, "q01_q99", action_clip=0.65)
    x = np.array([[1.3, -1.0, 2.0, 0.0, 0.5, -3.0, 0.0]], np.float32)
    q = x[:, :6] / 2.0  # OpenVLA's q01/q99 scaling (clipped to +-1), then VLM4VLA's +-0.65 clip and scale
    expected = np.clip(np.clip(q, -1, 1), -0.65, 0.65) / 0.65
    assert np.allclose(openx.normalize(x)[:, :6], expected, atol=1e-6)
    restored = ActionNormalizer.from_dict(openx.to_dict())
    assert restored.clip
    assert restored.action_clip == pytest.approx(0.65)
    old = ActionNormalizer.from_dict({"mode": "q01_q99", "offset": [0] * 7, "scale": [1] * 7})
    assert old.clip  # files written before the clip flag keep q01_q99's clipping
    assert not ActionNormalizer.from_dict({"mode": "mean_std", "offset": [0] * 7, "scale": [1] * 7}).clip
