"""Patch augmentation on NumPy arrays: flips, 90° rotations, brightness/contrast, elastic.

Every function takes an image ``(C, H, W)`` float32 (already normalised) and a mask ``(H, W)``
and draws its randomness from the `rng` it is given, so a patch is reproducible from its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.filters import gaussian
from skimage.transform import warp


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations to apply. `elastic` is a training setting (``TrainConfig.elastic``);
    the other fields are fixed choices, cheap and safe for most data."""

    elastic: bool  # the U-Net paper's smooth random deformations (costly on CPU)
    flips: bool = True
    rot90: bool = True
    brightness: float = 0.1  # additive shift, in units of the normalised intensity
    contrast: float = 0.1  # multiplicative factor drawn from [1 - c, 1 + c]
    elastic_alpha: float = 10.0  # displacement magnitude in pixels
    elastic_sigma: float = 8.0  # smoothness of the displacement field in pixels


def flip_rotate(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, flips: bool, rot90: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal/vertical flips and a random multiple of 90° rotation."""
    if flips:
        if rng.random() < 0.5:
            image, mask = image[:, :, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[:, ::-1, :], mask[::-1, :]
    if rot90 and image.shape[1] == image.shape[2]:
        k = int(rng.integers(4))
        image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)
    return image, mask


def brightness_contrast(
    image: np.ndarray, rng: np.random.Generator, *, brightness: float, contrast: float
) -> np.ndarray:
    """``image * c + b``, ``c`` drawn from ``1 ± contrast`` and ``b`` from ``±brightness``."""
    c = rng.uniform(1.0 - contrast, 1.0 + contrast)
    b = rng.uniform(-brightness, brightness)
    return image * np.float32(c) + np.float32(b)


def elastic(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, *, alpha: float, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random deformation: linear interpolation for the image, nearest for the mask."""
    height, width = mask.shape
    shift = []
    for _ in range(2):
        field = gaussian(rng.uniform(-1, 1, (height, width)), sigma=sigma)
        shift.append(field * (alpha / max(np.abs(field).max(), 1e-12)))  # peak shift = alpha
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([rows + shift[0], cols + shift[1]])
    warped = np.stack(
        [warp(channel, coords, order=1, mode="reflect", preserve_range=True) for channel in image]
    ).astype(np.float32)
    warped_mask = warp(mask, coords, order=0, mode="reflect", preserve_range=True)
    return warped, warped_mask.astype(mask.dtype)


def augment(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, options: Augmentation
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the enabled augmentations; returns contiguous arrays."""
    if options.elastic:
        image, mask = elastic(
            image, mask, rng, alpha=options.elastic_alpha, sigma=options.elastic_sigma
        )
    image, mask = flip_rotate(image, mask, rng, flips=options.flips, rot90=options.rot90)
    if options.brightness or options.contrast:
        image = brightness_contrast(
            image, rng, brightness=options.brightness, contrast=options.contrast
        )
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)
