"""Training image augmentation (`data.augment`): RoboVLMs' random shift and OpenVLA's crop + colour jitter.

Applied in the data workers on the uint8 image after its first resize to `model.image_size`, before the
backbone's processor; never at evaluation (the policy has no augmentation). Every draw comes from the
`numpy.random.Generator` passed in, which the data path derives from (seed, epoch, sample), so a sample is
augmented identically whatever the number of ranks and workers.

- `shift_pad` p: the image edge-replicated by p pixels, then the window at offsets (dy, dx) drawn from 1..2p in
  the padded image, i.e. the content moves by -9..+10 px for p = 10 (RoboVLMs' `RandomShiftsAug.forward_traj`,
  which VLM4VLA applies to CALVIN's static image).
- `crop_area` a: a square box of area a (side sqrt(a)) at a uniform position, resized back bilinearly; then
  brightness (+ U(-b, b)), contrast (deviation from the channel mean x U(1 - c, 1 + c)), saturation
  (x U(1 - s, 1 + s)) and hue (+ U(-h, h) turns), clipped to [0, 1] after each op and truncated to uint8 at the
  end: the order and semantics of OpenVLA's `image_augment_kwargs` through dlimp.
"""

from __future__ import annotations

import numpy as np

from datasets_build.image_ops import crop_and_resize, hsv_to_rgb, rgb_to_hsv, to_float, to_uint8
from vla.configuration_vla import AugmentConfig


def random_shift(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, C): the same-size window of the edge-padded image at a random offset (see the module doc)."""
    if pad <= 0:
        return image
    height, width = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = (int(v) for v in rng.integers(1, 2 * pad + 1, size=2))
    return np.ascontiguousarray(padded[dy : dy + height, dx : dx + width])


def colour_and_crop(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) -> OpenVLA's random crop then brightness, contrast, saturation and hue (uint8)."""
    x = to_float(image)
    if config.crop_area < 1.0:
        side = float(np.sqrt(config.crop_area))
        top, left = (float(v) for v in rng.uniform(0.0, 1.0 - side, size=2))
        x = np.clip(crop_and_resize(x, (top, left, top + side, left + side), x.shape[:2]), 0.0, 1.0)
    if config.brightness > 0:
        x = np.clip(x + rng.uniform(-config.brightness, config.brightness), 0.0, 1.0)
    if config.contrast > 0:
        factor = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = np.clip((x - mean) * factor + mean, 0.0, 1.0)
    if config.saturation > 0 or config.hue > 0:
        hsv = rgb_to_hsv(x)
        if config.saturation > 0:
            factor = rng.uniform(1.0 - config.saturation, 1.0 + config.saturation)
            hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0.0, 1.0)
        if config.hue > 0:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-config.hue, config.hue)) % 1.0
        x = np.clip(hsv_to_rgb(hsv), 0.0, 1.0)
    return to_uint8(x)


def augment_image(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) -> the augmented uint8 image of the same size (the input itself when every op is off)."""
    if config.shift_pad:
        image = random_shift(image, config.shift_pad, rng)
    if config.crop_area < 1.0 or config.brightness or config.contrast or config.saturation or config.hue:
        image = colour_and_crop(image, config, rng)
    return image
