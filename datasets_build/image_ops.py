"""Image operations on float RGB arrays in [0, 1] shared by training augmentation and evaluation pre-processing.

`crop_and_resize` samples like `tf.image.crop_and_resize` (bilinear, the box's first and last rows / columns land
on the output's first and last pixels), which is what OpenVLA's random crop and its LIBERO evaluation centre crop
use; `centre_crop` is that evaluation crop (a square box of `area` of the image, resized back). The HSV
conversions follow the usual hexcone model, as `tf.image.rgb_to_hsv` does.
"""

from __future__ import annotations

import numpy as np


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 in [0, 1]."""
    return np.asarray(image, dtype=np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, truncating like `tf.cast(image * 255, tf.uint8)` (OpenVLA's augmentation)."""
    return (np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _axis_samples(start: float, stop: float, size: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source rows for `out` samples from `start` to `stop` (fractions of the axis), as (lower, upper, weight)."""
    if out > 1:
        positions = (start + (stop - start) * np.arange(out) / (out - 1)) * (size - 1)
    else:
        positions = np.array([0.5 * (start + stop) * (size - 1)])
    positions = np.clip(positions, 0.0, size - 1)
    lower = np.floor(positions).astype(np.int64)
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, (positions - lower).astype(np.float32)


def crop_and_resize(image: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """float (H, W, C), box (top, left, bottom, right) as fractions of the image -> bilinear (size[0], size[1], C)."""
    height, width = image.shape[:2]
    top, left, bottom, right = box
    y0, y1, wy = _axis_samples(top, bottom, height, size[0])
    x0, x1, wx = _axis_samples(left, right, width, size[1])
    rows = image[y0] * (1.0 - wy)[:, None, None] + image[y1] * wy[:, None, None]
    return rows[:, x0] * (1.0 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def centre_crop(image: np.ndarray, area: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The centred square box covering `area` of the image (side sqrt(area)), resized to `size` (default: back to
    the image's own size): OpenVLA's evaluation counterpart of its training random crop."""
    side = float(np.sqrt(np.clip(area, 0.0, 1.0)))
    margin = (1.0 - side) / 2.0
    return crop_and_resize(image, (margin, margin, margin + side, margin + side), size or image.shape[:2])


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """float RGB in [0, 1] (..., 3) -> HSV, every channel in [0, 1] (hue in turns)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    safe = np.where(chroma > 0, chroma, 1.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    hue = np.where(
        value == r,
        ((g - b) / safe) % 6.0,
        np.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = np.where(chroma > 0, hue / 6.0, 0.0)
    return np.stack([hue, saturation, value], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv` (hue taken modulo 1)."""
    hue, saturation, value = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    sector = hue * 6.0
    chroma = value * saturation
    x = chroma * (1.0 - np.abs(sector % 2.0 - 1.0))
    zeros = np.zeros_like(chroma)
    index = np.floor(sector).astype(np.int64) % 6
    table = [
        (chroma, x, zeros),
        (x, chroma, zeros),
        (zeros, chroma, x),
        (zeros, x, chroma),
        (x, zeros, chroma),
        (chroma, zeros, x),
    ]
    channels = [np.choose(index, [row[c] for row in table]) for c in range(3)]
    base = value - chroma
    return np.stack([c + base for c in channels], axis=-1).astype(np.float32)
