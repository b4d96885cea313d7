"""The appearance of one synthetic image: levels, colours, illumination and noise, drawn once."""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

# Class intensity relative to the image contrast: 1 bright blobs, 2 dark curves, 3 bright dots.
_CLASS_SIGN = (1.0, -0.9, 1.5)


@dataclass(frozen=True)
class Look:
    """Appearance parameters drawn once per image."""

    bg_level: float
    texture_amp: float
    grad_amp: float
    grad_angle: float
    vignette: float
    noise_sigma: float
    shot_noise: float
    bg_colour: np.ndarray  # (C,) float32, colour channels only
    class_colour: np.ndarray  # (K, C) float32, signed intensity added by each class
    black: float
    white: float


def _class_sign(label: int) -> float:
    base = _CLASS_SIGN[(label - 1) % 3]
    # Later classes reuse the three kinds at other intensities so they stay separable.
    return base * (1.0 + 0.35 * ((label - 1) // 3))


def _colours(rng: np.random.Generator, channels: int, num_classes: int):
    """Background colour ``(C,)`` and class tints ``(K, C)``; C is 1 for grey, else 3."""
    if channels == 1:
        return np.ones(1), np.ones((num_classes, 1))
    # Pinkish stained-tissue background; classes get well separated hues.
    bg_colour = np.array([0.95, 0.72, 0.85]) + rng.uniform(-0.05, 0.05, 3)
    hue0 = rng.uniform(0, 1)
    tints = np.array(
        [colorsys.hsv_to_rgb((hue0 + 0.381966 * k) % 1, 0.75, 1.0) for k in range(num_classes)]
    )
    return bg_colour, tints


def draw_look(rng: np.random.Generator, channels: int, num_classes: int, dtype: str) -> Look:
    """Draw the appearance of one image with `channels` (1, 3 or 4) of `dtype`.

    The white level is 255 for ``uint8`` and drawn from 4000..60000 for ``uint16``.
    """
    contrast = rng.uniform(0.16, 0.26)
    bg_colour, tints = _colours(rng, channels, num_classes)
    signs = np.array([0.0] + [_class_sign(k) for k in range(1, num_classes)])
    white = float(rng.uniform(4000, 60000)) if dtype == "uint16" else 255.0
    return Look(
        bg_level=rng.uniform(0.25, 0.4),
        texture_amp=rng.uniform(0.04, 0.08),
        grad_amp=rng.uniform(0.05, 0.18),
        grad_angle=rng.uniform(0, 2 * math.pi),
        vignette=rng.uniform(0.0, 0.15),
        noise_sigma=rng.uniform(0.02, 0.04),
        shot_noise=rng.uniform(0.02, 0.05),
        bg_colour=bg_colour.astype(np.float32),
        class_colour=(contrast * signs[:, None] * tints).astype(np.float32),
        # uint16 cameras rarely reach zero: a small dark offset keeps that realistic.
        black=white * rng.uniform(0.0, 0.02) if dtype == "uint16" else 0.0,
        white=white,
    )
